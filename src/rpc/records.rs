//! Records, versions and anti-entropy steps on the wire: converted to and
//! from protobuf, and every record that arrives validated (key and value
//! bounds, batch length, a clock not far ahead) before the data layer
//! sees it.

use super::{member_from_pb, member_to_pb, pb, validate_key};
use crate::clock::wall_ms;
use crate::data::{BatchStream, Entry, NotOwner, ReadAnswer, BATCH_RECORDS};
use crate::id::Id;
use crate::store::digest::{NodePath, Summary};
use crate::store::{Record, Version};
use crate::sync::{self, ArcRange, KeyDigest, SyncReply, SyncRequest};
use tonic::Status;

/// How far ahead of this node's clock a received record's version may be.
const MAX_CLOCK_AHEAD_MS: u64 = 3_600_000;

pub(super) fn version_to_pb(version: Version) -> pb::Version {
    pb::Version {
        clock: version.clock,
        writer: version.writer,
    }
}

pub(super) fn version_from_pb(version: Option<pb::Version>) -> Result<Version, Status> {
    let version = version.ok_or_else(|| Status::invalid_argument("version is missing"))?;
    Ok(Version {
        clock: version.clock,
        writer: version.writer,
    })
}

pub(super) fn entry_to_pb(entry: &Entry) -> pb::StoredRecord {
    pb::StoredRecord {
        key: entry.key.clone(),
        version: Some(version_to_pb(entry.record.version)),
        tombstone: entry.record.tombstone,
        expires_at_ms: entry.record.expires_at,
        value: entry.record.value.clone(),
    }
}

pub(super) fn entry_from_pb(record: pb::StoredRecord, max_value: usize) -> Result<Entry, Status> {
    validate_key(&record.key)?;
    if record.value.len() > max_value {
        return Err(Status::invalid_argument(format!(
            "a record's value is {} bytes; the limit here is {max_value}",
            record.value.len()
        )));
    }
    if record.tombstone && !record.value.is_empty() {
        return Err(Status::invalid_argument("a tombstone carries a value"));
    }
    let version = version_from_pb(record.version)?;
    // A version from far in the future would win every later write: refuse
    // it rather than let one broken clock freeze a key.
    if version.clock > (wall_ms() + MAX_CLOCK_AHEAD_MS) << 16 {
        return Err(Status::invalid_argument(
            "a record's clock is more than an hour ahead of this node's",
        ));
    }
    Ok(Entry {
        key: record.key,
        record: Record {
            version,
            tombstone: record.tombstone,
            expires_at: record.expires_at_ms,
            value: record.value,
        },
    })
}

pub(super) fn batch_from_pb(
    batch: pb::RecordBatch,
    max_value: usize,
) -> Result<Vec<Entry>, Status> {
    if batch.records.len() > 2 * BATCH_RECORDS {
        return Err(Status::invalid_argument(format!(
            "a batch holds more than {} records",
            2 * BATCH_RECORDS
        )));
    }
    batch
        .records
        .into_iter()
        .map(|r| entry_from_pb(r, max_value))
        .collect()
}

/// A stream of record batches from the wire, each validated as it
/// arrives; a transport error ends it as an error.
pub(super) fn batches_from_pb(
    stream: tonic::Streaming<pb::RecordBatch>,
    max_value: usize,
) -> BatchStream {
    Box::pin(futures::stream::unfold(
        stream,
        move |mut stream| async move {
            match stream.message().await {
                Ok(Some(batch)) => Some((
                    batch_from_pb(batch, max_value).map_err(crate::Error::from),
                    stream,
                )),
                Ok(None) => None,
                Err(status) => Some((Err(crate::Error::from(status)), stream)),
            }
        },
    ))
}

pub(super) fn batch_to_pb(batch: &[Entry]) -> pb::RecordBatch {
    pb::RecordBatch {
        records: batch.iter().map(entry_to_pb).collect(),
    }
}

pub(super) fn not_owner_to_pb(not_owner: NotOwner) -> pb::NotOwner {
    pb::NotOwner {
        hint: not_owner.hint.as_ref().map(member_to_pb),
        reason: not_owner.reason,
    }
}

pub(super) fn not_owner_from_pb(not_owner: pb::NotOwner) -> Result<NotOwner, Status> {
    Ok(NotOwner {
        hint: not_owner
            .hint
            .map(|h| member_from_pb(Some(h), "hint"))
            .transpose()?,
        reason: not_owner.reason.chars().take(512).collect(),
    })
}

pub(super) fn read_reply(answer: ReadAnswer) -> pb::ReadReply {
    use pb::read_reply::Answer;
    let answer = match answer {
        ReadAnswer::Found(record) => Answer::Record(entry_to_pb(&Entry {
            key: Vec::new(),
            record,
        })),
        ReadAnswer::Missing => Answer::Missing(pb::Missing {}),
        ReadAnswer::NotOwner(not_owner) => Answer::NotOwner(not_owner_to_pb(not_owner)),
    };
    pb::ReadReply {
        answer: Some(answer),
    }
}

pub(super) fn quorum_failed(message: String) -> pb::QuorumFailed {
    pb::QuorumFailed {
        answered: 0,
        needed: 0,
        reason: message,
    }
}

pub(super) fn nodes_to_pb(nodes: &[NodePath]) -> pb::Nodes {
    pb::Nodes {
        nodes: nodes
            .iter()
            .map(|n| pb::TreeNode {
                depth: n.depth.into(),
                prefix: n.prefix,
            })
            .collect(),
    }
}

pub(super) fn nodes_from_pb(nodes: pb::Nodes, limit: usize) -> Result<Vec<NodePath>, Status> {
    if nodes.nodes.len() > limit {
        return Err(Status::invalid_argument(format!(
            "more than {limit} tree nodes in one request"
        )));
    }
    nodes
        .nodes
        .into_iter()
        .map(|n| {
            let node = NodePath {
                depth: u8::try_from(n.depth).unwrap_or(u8::MAX),
                prefix: n.prefix,
            };
            if node.is_valid() {
                Ok(node)
            } else {
                Err(Status::invalid_argument(format!(
                    "no tree node has depth {} and prefix {:#x}",
                    n.depth, n.prefix
                )))
            }
        })
        .collect()
}

pub(super) fn sync_request_to_pb(arc: ArcRange, request: &SyncRequest) -> pb::SyncRequest {
    use pb::sync_request::Step;
    let step = match request {
        SyncRequest::Summaries { nodes, .. } => Step::Summaries(nodes_to_pb(nodes)),
        SyncRequest::Digests { nodes, .. } => Step::Digests(nodes_to_pb(nodes)),
        SyncRequest::Pull { keys } => Step::Pull(pb::Keys { keys: keys.clone() }),
        SyncRequest::Push { entries } => Step::Push(batch_to_pb(entries)),
    };
    pb::SyncRequest {
        arc_from: arc.from.0,
        arc_to: arc.to.0,
        step: Some(step),
    }
}

pub(super) fn sync_request_from_pb(
    request: pb::SyncRequest,
    max_value: usize,
) -> Result<SyncRequest, Status> {
    use pb::sync_request::Step;
    let arc = ArcRange::new(Id(request.arc_from), Id(request.arc_to));
    Ok(match request.step {
        Some(Step::Summaries(nodes)) => SyncRequest::Summaries {
            arc,
            nodes: nodes_from_pb(nodes, sync::MAX_SUMMARY_NODES)?,
        },
        Some(Step::Digests(nodes)) => SyncRequest::Digests {
            arc,
            nodes: nodes_from_pb(nodes, sync::MAX_LIST_NODES)?,
        },
        Some(Step::Pull(keys)) => {
            if keys.keys.len() > sync::MAX_PULL_KEYS {
                return Err(Status::invalid_argument(format!(
                    "more than {} keys in one pull",
                    sync::MAX_PULL_KEYS
                )));
            }
            for key in &keys.keys {
                validate_key(key)?;
            }
            SyncRequest::Pull { keys: keys.keys }
        }
        Some(Step::Push(batch)) => SyncRequest::Push {
            entries: batch_from_pb(batch, max_value)?,
        },
        None => return Err(Status::invalid_argument("a sync request without a step")),
    })
}

pub(super) fn summary_to_pb(summary: &Summary) -> pb::Summary {
    pb::Summary {
        hash: summary.hash.to_vec(),
        count: summary.count,
    }
}

pub(super) fn summary_from_pb(summary: pb::Summary) -> Result<Summary, Status> {
    let hash = summary
        .hash
        .try_into()
        .map_err(|_| Status::invalid_argument("a summary's hash is not 16 bytes"))?;
    Ok(Summary {
        hash,
        count: summary.count,
    })
}

pub(super) fn sync_reply_to_pb(reply: &SyncReply) -> pb::SyncReply {
    use pb::sync_reply::Step;
    let step = match reply {
        SyncReply::Summaries(summaries) => Step::Summaries(pb::SummaryList {
            summaries: summaries.iter().map(summary_to_pb).collect(),
        }),
        SyncReply::Digests(digests) => Step::Digests(pb::DigestList {
            digests: digests
                .iter()
                .map(|d| pb::KeyDigest {
                    key: d.key.clone(),
                    version: Some(version_to_pb(d.version)),
                    tombstone: d.tombstone,
                    expires_at_ms: d.expires_at,
                })
                .collect(),
        }),
        SyncReply::Pulled { entries, answered } => Step::Pulled(pb::Pulled {
            records: entries.iter().map(entry_to_pb).collect(),
            answered: *answered as u32,
        }),
        SyncReply::Pushed { applied } => Step::Pushed(pb::ReplicateReply { applied: *applied }),
    };
    pb::SyncReply { step: Some(step) }
}

pub(super) fn sync_reply_from_pb(
    reply: pb::SyncReply,
    max_value: usize,
) -> Result<SyncReply, Status> {
    use pb::sync_reply::Step;
    Ok(match reply.step {
        Some(Step::Summaries(list)) => {
            if list.summaries.len() > sync::MAX_SUMMARY_NODES {
                return Err(Status::invalid_argument("too many summaries"));
            }
            SyncReply::Summaries(
                list.summaries
                    .into_iter()
                    .map(summary_from_pb)
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(Step::Digests(list)) => {
            if list.digests.len() > sync::MAX_DIGESTS {
                return Err(Status::invalid_argument("too many digests"));
            }
            SyncReply::Digests(
                list.digests
                    .into_iter()
                    .map(|d| {
                        validate_key(&d.key)?;
                        Ok(KeyDigest {
                            key: d.key,
                            version: version_from_pb(d.version)?,
                            tombstone: d.tombstone,
                            expires_at: d.expires_at_ms,
                        })
                    })
                    .collect::<Result<_, Status>>()?,
            )
        }
        Some(Step::Pulled(pulled)) => {
            if pulled.records.len() > sync::MAX_PULL_KEYS {
                return Err(Status::invalid_argument("too many pulled records"));
            }
            SyncReply::Pulled {
                entries: pulled
                    .records
                    .into_iter()
                    .map(|r| entry_from_pb(r, max_value))
                    .collect::<Result<_, _>>()?,
                answered: pulled.answered as usize,
            }
        }
        Some(Step::Pushed(pushed)) => SyncReply::Pushed {
            applied: pushed.applied,
        },
        None => return Err(Status::invalid_argument("a sync answer without a step")),
    })
}

/// A quorum failure reported by an owner, as the coordinator passes it on.
pub(super) fn quorum_error(failed: pb::QuorumFailed) -> crate::Error {
    crate::Error::Quorum(failed.reason.chars().take(1024).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &[u8], clock: u64, tombstone: bool, value: &[u8]) -> pb::StoredRecord {
        pb::StoredRecord {
            key: key.to_vec(),
            version: Some(pb::Version { clock, writer: 1 }),
            tombstone,
            expires_at_ms: None,
            value: value.to_vec(),
        }
    }

    #[test]
    fn received_records_are_checked_before_they_are_stored() {
        let now = wall_ms() << 16;
        assert!(entry_from_pb(record(b"k", now, false, b"v"), 10).is_ok());
        let far_future = (wall_ms() + 2 * MAX_CLOCK_AHEAD_MS) << 16;
        for bad in [
            record(b"", now, false, b"v"),
            record(&[b'k'; 1025], now, false, b"v"),
            record(b"k", now, false, &[0; 11]),
            record(b"k", now, true, b"v"),
            record(b"k", far_future, false, b"v"),
            pb::StoredRecord {
                version: None,
                ..record(b"k", now, false, b"v")
            },
        ] {
            let status = entry_from_pb(bad, 10).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        let too_many = pb::RecordBatch {
            records: vec![record(b"k", now, false, b"v"); 2 * BATCH_RECORDS + 1],
        };
        assert!(batch_from_pb(too_many, 10).is_err());
    }
}
