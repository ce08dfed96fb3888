//! The data services on the wire: the `Data` service between ring members,
//! the client calls of `Api` that read and write keys, and [`DataPeer`], the
//! outbound side of both. Every record that arrives is validated (key and
//! value bounds, batch length) before the data layer sees it.

use super::{member_from_pb, member_to_pb, pb, validate_key, ApiService, NodeApi, Pool};
use crate::data::{
    wall_ms, Data, Entry, NotOwner, ReadAnswer, TransferStats, Value, WriteAnswer, WriteOp,
    Written, BATCH_RECORDS,
};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::{Record, Version};
use crate::sync::tree::{NodePath, Summary};
use crate::sync::{self, ArcRange, KeyDigest, SyncReply, SyncRequest};
use futures::{Stream, StreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How far ahead of this node's clock a received record's version may be.
const MAX_CLOCK_AHEAD_MS: u64 = 3_600_000;

// ----- conversions --------------------------------------------------------------

fn version_to_pb(version: Version) -> pb::Version {
    pb::Version {
        clock: version.clock,
        writer: version.writer,
    }
}

fn version_from_pb(version: Option<pb::Version>) -> Result<Version, Status> {
    let version = version.ok_or_else(|| Status::invalid_argument("version is missing"))?;
    Ok(Version {
        clock: version.clock,
        writer: version.writer,
    })
}

fn entry_to_pb(entry: &Entry) -> pb::StoredRecord {
    pb::StoredRecord {
        key: entry.key.clone(),
        version: Some(version_to_pb(entry.record.version)),
        tombstone: entry.record.tombstone,
        expires_at_ms: entry.record.expires_at,
        value: entry.record.value.clone(),
    }
}

fn entry_from_pb(record: pb::StoredRecord, max_value: usize) -> Result<Entry, Status> {
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

fn batch_from_pb(batch: pb::RecordBatch, max_value: usize) -> Result<Vec<Entry>, Status> {
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

fn batch_to_pb(batch: &[Entry]) -> pb::RecordBatch {
    pb::RecordBatch {
        records: batch.iter().map(entry_to_pb).collect(),
    }
}

fn not_owner_to_pb(not_owner: NotOwner) -> pb::NotOwner {
    pb::NotOwner {
        hint: not_owner.hint.as_ref().map(member_to_pb),
        reason: not_owner.reason,
    }
}

fn not_owner_from_pb(not_owner: pb::NotOwner) -> Result<NotOwner, Status> {
    Ok(NotOwner {
        hint: not_owner
            .hint
            .map(|h| member_from_pb(Some(h), "hint"))
            .transpose()?,
        reason: not_owner.reason.chars().take(512).collect(),
    })
}

fn read_reply(answer: ReadAnswer) -> pb::ReadReply {
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

fn quorum_failed(message: String) -> pb::QuorumFailed {
    pb::QuorumFailed {
        answered: 0,
        needed: 0,
        reason: message,
    }
}

fn nodes_to_pb(nodes: &[NodePath]) -> pb::Nodes {
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

fn nodes_from_pb(nodes: pb::Nodes, limit: usize) -> Result<Vec<NodePath>, Status> {
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

fn sync_request_to_pb(arc: ArcRange, request: &SyncRequest) -> pb::SyncRequest {
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

fn sync_request_from_pb(request: pb::SyncRequest, max_value: usize) -> Result<SyncRequest, Status> {
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

fn summary_to_pb(summary: &Summary) -> pb::Summary {
    pb::Summary {
        hash: summary.hash.to_vec(),
        count: summary.count,
    }
}

fn summary_from_pb(summary: pb::Summary) -> Result<Summary, Status> {
    let hash = summary
        .hash
        .try_into()
        .map_err(|_| Status::invalid_argument("a summary's hash is not 16 bytes"))?;
    Ok(Summary {
        hash,
        count: summary.count,
    })
}

fn sync_reply_to_pb(reply: &SyncReply) -> pb::SyncReply {
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

fn sync_reply_from_pb(reply: pb::SyncReply, max_value: usize) -> Result<SyncReply, Status> {
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

// ----- the Data service -------------------------------------------------------------

/// The service ring members use to read, write and hand over records.
pub struct DataService {
    data: Arc<Data>,
}

impl DataService {
    pub fn new(data: Arc<Data>) -> DataService {
        DataService { data }
    }

    pub fn server(data: Arc<Data>) -> pb::data_server::DataServer<DataService> {
        let limit = data.config().max_message();
        pb::data_server::DataServer::new(DataService { data })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::RecordBatch, Status>> + Send>>;

#[tonic::async_trait]
impl pb::data_server::Data for DataService {
    async fn write(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteReply>, Status> {
        tracing::debug!("write from {}", super::peer(&request));
        let request = request.into_inner();
        self.data
            .validate(&request.key, &request.value, request.ttl_ms)?;
        if request.delete && !request.value.is_empty() {
            return Err(Status::invalid_argument("a delete carries a value"));
        }
        let op = WriteOp {
            key: request.key,
            value: request.value,
            delete: request.delete,
            ttl_ms: request.ttl_ms,
            write_quorum: request.write_quorum,
        };
        use pb::write_reply::Answer;
        let answer = match self.data.write_as_owner(Id(request.member), op).await {
            Ok(WriteAnswer::Written {
                version,
                existed,
                acks,
            }) => Answer::Written(pb::Written {
                version: Some(version_to_pb(version)),
                existed,
                acks: acks as u32,
            }),
            Ok(WriteAnswer::NotOwner(not_owner)) => Answer::NotOwner(not_owner_to_pb(not_owner)),
            Err(crate::Error::Quorum(message)) => Answer::QuorumFailed(quorum_failed(message)),
            Err(error) => return Err(error.into()),
        };
        Ok(tonic::Response::new(pb::WriteReply {
            answer: Some(answer),
        }))
    }

    async fn read(
        &self,
        request: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, Status> {
        let request = request.into_inner();
        validate_key(&request.key)?;
        let answer = if request.raw {
            self.data
                .read_local(&request.key)?
                .map_or(ReadAnswer::Missing, ReadAnswer::Found)
        } else {
            match self
                .data
                .read_as_owner(Id(request.member), &request.key, request.read_quorum)
                .await
            {
                Ok(answer) => answer,
                Err(crate::Error::Quorum(message)) => {
                    return Ok(tonic::Response::new(pb::ReadReply {
                        answer: Some(pb::read_reply::Answer::QuorumFailed(quorum_failed(message))),
                    }))
                }
                Err(error) => return Err(error.into()),
            }
        };
        Ok(tonic::Response::new(read_reply(answer)))
    }

    type FetchStream = BatchStream;

    async fn fetch(
        &self,
        request: tonic::Request<pb::FetchRequest>,
    ) -> Result<tonic::Response<BatchStream>, Status> {
        let request = request.into_inner();
        if let Some(after) = &request.after {
            validate_key(after)?;
        }
        let batches = self
            .data
            .serve_fetch(
                Id(request.member),
                Id(request.from),
                Id(request.to),
                request.after,
            )
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(batches).map(|batch| {
            batch
                .map(|entries| batch_to_pb(&entries))
                .map_err(Status::from)
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn absorb(
        &self,
        request: tonic::Request<Streaming<pb::RecordBatch>>,
    ) -> Result<tonic::Response<pb::AbsorbReply>, Status> {
        let mut stream = request.into_inner();
        let idle = self.data.config().rpc_timeout * 4;
        let max_value = self.data.config().max_value;
        let mut applied = 0u64;
        loop {
            let batch = match tokio::time::timeout(idle, stream.message()).await {
                Err(_) => return Err(Status::deadline_exceeded("the hand-off stream stalled")),
                Ok(message) => message?,
            };
            let Some(batch) = batch else { break };
            let entries = batch_from_pb(batch, max_value)?;
            applied += self.data.absorb(&entries)? as u64;
        }
        Ok(tonic::Response::new(pb::AbsorbReply { applied }))
    }

    async fn replicate(
        &self,
        request: tonic::Request<pb::ReplicateRequest>,
    ) -> Result<tonic::Response<pb::ReplicateReply>, Status> {
        tracing::debug!("copies from {}", super::peer(&request));
        let request = request.into_inner();
        let hint_for = request
            .hint_for
            .map(|m| member_from_pb(Some(m), "hint_for"))
            .transpose()?;
        let entries = batch_from_pb(
            pb::RecordBatch {
                records: request.records,
            },
            self.data.config().max_value,
        )?;
        let applied = self.data.accept_copies(&entries, hint_for.as_ref())?;
        Ok(tonic::Response::new(pb::ReplicateReply { applied }))
    }

    async fn sync(
        &self,
        request: tonic::Request<pb::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncReply>, Status> {
        let request = sync_request_from_pb(request.into_inner(), self.data.config().max_value)?;
        let reply = self.data.serve_sync(request).await?;
        Ok(tonic::Response::new(sync_reply_to_pb(&reply)))
    }

    async fn forget(
        &self,
        request: tonic::Request<pb::RecordBatch>,
    ) -> Result<tonic::Response<pb::ForgetReply>, Status> {
        let entries = batch_from_pb(request.into_inner(), self.data.config().max_value)?;
        if entries.iter().any(|e| !e.record.tombstone) {
            return Err(Status::invalid_argument("only tombstones can be forgotten"));
        }
        let forgotten = self.data.forget_tombstones(&entries)?;
        Ok(tonic::Response::new(pb::ForgetReply { forgotten }))
    }
}

// ----- the client calls of the Api service --------------------------------------

impl<N: NodeApi> ApiService<N> {
    pub(super) async fn put_inner(&self, request: pb::PutRequest) -> Result<pb::PutReply, Status> {
        let written = self
            .data
            .put(WriteOp {
                key: request.key,
                value: request.value,
                delete: false,
                ttl_ms: request.ttl_ms,
                write_quorum: request.write_quorum,
            })
            .await?;
        Ok(pb::PutReply {
            version: Some(version_to_pb(written.version)),
            owner: Some(member_to_pb(&written.owner)),
            acks: written.acks as u32,
        })
    }

    pub(super) async fn get_inner(&self, request: pb::GetRequest) -> Result<pb::GetReply, Status> {
        let value = if request.local {
            self.data.get_local(&request.key)?
        } else {
            self.data.get(&request.key, request.read_quorum).await?
        };
        Ok(pb::GetReply {
            value: value.value,
            version: Some(version_to_pb(value.version)),
            owner: value.owner.as_ref().map(member_to_pb),
            expires_at_ms: value.expires_at,
        })
    }

    pub(super) async fn delete_inner(
        &self,
        request: pb::DeleteRequest,
    ) -> Result<pb::DeleteReply, Status> {
        let written = self
            .data
            .put(WriteOp {
                key: request.key,
                value: Vec::new(),
                delete: true,
                ttl_ms: 0,
                write_quorum: request.write_quorum,
            })
            .await?;
        Ok(pb::DeleteReply {
            existed: written.existed,
            version: Some(version_to_pb(written.version)),
            owner: Some(member_to_pb(&written.owner)),
            acks: written.acks as u32,
        })
    }

    pub(super) async fn repair_inner(&self) -> Result<pb::RepairReply, Status> {
        let reports = self.data.anti_entropy_round().await;
        Ok(pb::RepairReply {
            rounds: reports
                .iter()
                .map(|r| pb::RoundReport {
                    owner: Some(member_to_pb(&r.owner)),
                    arc_from: r.arc.from.0,
                    replica: Some(member_to_pb(&r.replica)),
                    round_trips: r.stats.round_trips,
                    nodes_compared: r.stats.nodes_compared,
                    digests_received: r.stats.digests_received,
                    pushed: r.stats.pushed,
                    pulled: r.stats.pulled,
                    bytes_sent: r.stats.bytes_sent,
                    bytes_received: r.stats.bytes_received,
                    elapsed_us: r.elapsed.as_micros() as u64,
                    error: r.error.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }
}

pub(super) fn reports_from_pb(
    reply: pb::RepairReply,
) -> Result<Vec<crate::data::RoundReport>, Status> {
    reply
        .rounds
        .into_iter()
        .map(|r| {
            let owner = member_from_pb(r.owner, "owner")?;
            Ok(crate::data::RoundReport {
                arc: ArcRange::new(Id(r.arc_from), owner.id),
                owner,
                replica: member_from_pb(r.replica, "replica")?,
                stats: sync::SyncStats {
                    round_trips: r.round_trips,
                    nodes_compared: r.nodes_compared,
                    digests_received: r.digests_received,
                    pushed: r.pushed,
                    pulled: r.pulled,
                    bytes_sent: r.bytes_sent,
                    bytes_received: r.bytes_received,
                },
                elapsed: Duration::from_micros(r.elapsed_us),
                error: (!r.error.is_empty()).then_some(r.error),
            })
        })
        .collect()
}

pub(super) fn written_from_put(reply: pb::PutReply) -> Result<Written, Status> {
    Ok(Written {
        version: version_from_pb(reply.version)?,
        existed: false,
        owner: member_from_pb(reply.owner, "owner")?,
        acks: reply.acks as usize,
    })
}

pub(super) fn written_from_delete(reply: pb::DeleteReply) -> Result<Written, Status> {
    Ok(Written {
        version: version_from_pb(reply.version)?,
        existed: reply.existed,
        owner: member_from_pb(reply.owner, "owner")?,
        acks: reply.acks as usize,
    })
}

pub(super) fn value_from_pb(reply: pb::GetReply) -> Result<Value, Status> {
    Ok(Value {
        value: reply.value,
        version: version_from_pb(reply.version)?,
        expires_at: reply.expires_at_ms,
        owner: reply
            .owner
            .map(|o| member_from_pb(Some(o), "owner"))
            .transpose()?,
    })
}

// ----- outbound ------------------------------------------------------------------

/// Calls of the `Data` service on other processes.
pub struct DataPeer {
    pool: Pool,
    timeout: Duration,
    max_message: usize,
}

/// The records of a `Fetch`, a batch at a time.
pub struct FetchStream {
    inner: Streaming<pb::RecordBatch>,
    max_value: usize,
}

impl FetchStream {
    pub async fn next(&mut self) -> Option<Result<Vec<Entry>, Status>> {
        match self.inner.message().await {
            Ok(Some(batch)) => Some(batch_from_pb(batch, self.max_value)),
            Ok(None) => None,
            Err(status) => Some(Err(status)),
        }
    }
}

impl DataPeer {
    /// Point calls get twice `timeout`: an owner in the middle of a
    /// hand-off may itself ask the old owner before answering.
    pub fn new(timeout: Duration, max_message: usize) -> DataPeer {
        DataPeer {
            pool: Pool::new(timeout * 2),
            timeout,
            max_message,
        }
    }

    fn client(&self, addr: &str) -> Result<pb::data_client::DataClient<Channel>, Status> {
        Ok(pb::data_client::DataClient::new(self.pool.channel(addr)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    /// A channel of its own for one long transfer: no per-call deadline,
    /// but keep-alive pings to notice a peer that went away.
    async fn bulk_client(
        &self,
        addr: &str,
    ) -> Result<pb::data_client::DataClient<Channel>, Status> {
        super::validate_addr(addr).map_err(Status::invalid_argument)?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(self.timeout * 2)
            .keep_alive_timeout(self.timeout * 2)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
        Ok(pb::data_client::DataClient::new(channel)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    fn failed(&self, addr: &str, status: Status) -> Status {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
        ) {
            self.pool.evict(addr);
        }
        status
    }

    /// Sends a put or delete to its owner, member `to`. A quorum the owner
    /// could not gather is `Error::Quorum`: the coordinator passes it on
    /// rather than trying elsewhere.
    pub async fn write(&self, to: &NodeRef, op: &WriteOp) -> crate::Result<WriteAnswer> {
        let request = pb::WriteRequest {
            member: to.id.0,
            key: op.key.clone(),
            value: op.value.clone(),
            delete: op.delete,
            ttl_ms: op.ttl_ms,
            write_quorum: op.write_quorum,
        };
        let reply = self
            .client(&to.addr)?
            .write(request)
            .await
            .map_err(|s| self.failed(&to.addr, s))?
            .into_inner();
        use pb::write_reply::Answer;
        match reply.answer {
            Some(Answer::Written(written)) => Ok(WriteAnswer::Written {
                version: version_from_pb(written.version)?,
                existed: written.existed,
                acks: written.acks as usize,
            }),
            Some(Answer::NotOwner(not_owner)) => {
                Ok(WriteAnswer::NotOwner(not_owner_from_pb(not_owner)?))
            }
            Some(Answer::QuorumFailed(failed)) => Err(quorum_error(failed)),
            None => Err(Status::invalid_argument("empty write answer").into()),
        }
    }

    /// Reads `key` from member `to`: as its owner, gathering
    /// `read_quorum` answers, or with `raw`, that process's own copy.
    pub async fn read(
        &self,
        to: &NodeRef,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> crate::Result<ReadAnswer> {
        let request = pb::ReadRequest {
            member: to.id.0,
            key: key.to_vec(),
            raw,
            read_quorum,
        };
        let reply = self
            .client(&to.addr)?
            .read(request)
            .await
            .map_err(|s| self.failed(&to.addr, s))?
            .into_inner();
        use pb::read_reply::Answer;
        match reply.answer {
            Some(Answer::Record(mut record)) => {
                // Answers to a read carry no key; it is the one asked for.
                record.key = key.to_vec();
                Ok(ReadAnswer::Found(
                    entry_from_pb(record, self.max_message)?.record,
                ))
            }
            Some(Answer::Missing(_)) => Ok(ReadAnswer::Missing),
            Some(Answer::NotOwner(not_owner)) => {
                Ok(ReadAnswer::NotOwner(not_owner_from_pb(not_owner)?))
            }
            Some(Answer::QuorumFailed(failed)) => Err(quorum_error(failed)),
            None => Err(Status::invalid_argument("empty read answer").into()),
        }
    }

    /// Sends copies of records to member `to`'s process; with `hint_for`,
    /// for it to hold for that member.
    pub async fn replicate(
        &self,
        to: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> Result<u64, Status> {
        let request = pb::ReplicateRequest {
            records: entries.iter().map(entry_to_pb).collect(),
            hint_for: hint_for.map(member_to_pb),
        };
        let reply = self
            .client(&to.addr)?
            .replicate(request)
            .await
            .map_err(|s| self.failed(&to.addr, s))?;
        Ok(reply.into_inner().applied)
    }

    /// Asks `to`'s process to delete its copies of purged tombstones.
    pub async fn forget(&self, to: &NodeRef, tombstones: &[Entry]) -> Result<u64, Status> {
        let request = pb::RecordBatch {
            records: tombstones.iter().map(entry_to_pb).collect(),
        };
        let reply = self
            .client(&to.addr)?
            .forget(request)
            .await
            .map_err(|s| self.failed(&to.addr, s))?;
        Ok(reply.into_inner().forgotten)
    }

    /// One step of an anti-entropy round with `to`'s process; also the
    /// bytes of the request and the answer as encoded.
    pub async fn sync(
        &self,
        to: &NodeRef,
        arc: ArcRange,
        request: SyncRequest,
    ) -> Result<(SyncReply, usize, usize), Status> {
        let request = sync_request_to_pb(arc, &request);
        let sent = request.encoded_len();
        let reply = self
            .client(&to.addr)?
            .sync(request)
            .await
            .map_err(|s| self.failed(&to.addr, s))?
            .into_inner();
        let received = reply.encoded_len();
        Ok((sync_reply_from_pb(reply, self.max_message)?, sent, received))
    }

    /// Member `of`'s successor list, asked of its process.
    pub async fn successors(&self, of: &NodeRef) -> Result<Vec<NodeRef>, Status> {
        Ok(self.state(of).await?.1)
    }

    /// Member `of`'s predecessor (if it knows one) and successor list,
    /// asked of its process.
    pub async fn state(&self, of: &NodeRef) -> Result<(Option<NodeRef>, Vec<NodeRef>), Status> {
        let reply = super::RingClient::new(self.pool.channel(&of.addr)?)
            .get_state(pb::MemberRequest { member: of.id.0 })
            .await
            .map_err(|s| self.failed(&of.addr, s))?;
        match super::state_reply_from_pb(reply.into_inner())? {
            crate::ring::Response::State {
                predecessor,
                successors,
            } => Ok((predecessor, successors)),
            other => Err(Status::unavailable(format!(
                "{of} did not give its state: {other:?}"
            ))),
        }
    }

    /// Starts streaming the arc `(from, to]` from member `source`.
    pub async fn fetch(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<FetchStream, Status> {
        let request = pb::FetchRequest {
            member: source.id.0,
            from: from.0,
            to: to.0,
            after,
        };
        let inner = self
            .bulk_client(&source.addr)
            .await?
            .fetch(request)
            .await?
            .into_inner();
        Ok(FetchStream {
            inner,
            max_value: self.max_message,
        })
    }

    /// Pushes `batches` to member `target`'s process; stops at the first
    /// batch that could not be read.
    pub async fn absorb(
        &self,
        target: &NodeRef,
        batches: mpsc::Receiver<crate::Result<Vec<Entry>>>,
    ) -> Result<TransferStats, Status> {
        let stats = Arc::new(Mutex::new(TransferStats::default()));
        let failure = Arc::new(Mutex::new(None));
        let (counted, failed) = (stats.clone(), failure.clone());
        let batches = tokio_stream::wrappers::ReceiverStream::new(batches);
        let stream = tokio_stream::StreamExt::map_while(batches, move |batch| match batch {
            Ok(entries) => {
                counted.lock().expect("stats lock").count(&entries);
                Some(batch_to_pb(&entries))
            }
            Err(error) => {
                *failed.lock().expect("failure lock") = Some(error.to_string());
                None
            }
        });
        self.bulk_client(&target.addr).await?.absorb(stream).await?;
        if let Some(error) = failure.lock().expect("failure lock").take() {
            return Err(Status::internal(format!("reading the arc failed: {error}")));
        }
        let stats = *stats.lock().expect("stats lock");
        Ok(stats)
    }
}

/// A quorum failure reported by an owner, as the coordinator passes it on.
fn quorum_error(failed: pb::QuorumFailed) -> crate::Error {
    crate::Error::Quorum(failed.reason.chars().take(1024).collect())
}

// ----- a baseline for the hand-off benchmark ---------------------------------------

/// Serves `Data.Fetch` from memory: the same batches a hand-off sends,
/// without a store behind them.
struct SyntheticData {
    batch: pb::RecordBatch,
    batches: u64,
}

#[tonic::async_trait]
impl pb::data_server::Data for SyntheticData {
    async fn write(
        &self,
        _: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn read(
        &self,
        _: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    type FetchStream = BatchStream;

    async fn fetch(
        &self,
        _: tonic::Request<pb::FetchRequest>,
    ) -> Result<tonic::Response<BatchStream>, Status> {
        let batch = self.batch.clone();
        let stream = futures::stream::iter(0..self.batches).map(move |_| Ok(batch.clone()));
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn absorb(
        &self,
        _: tonic::Request<Streaming<pb::RecordBatch>>,
    ) -> Result<tonic::Response<pb::AbsorbReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn replicate(
        &self,
        _: tonic::Request<pb::ReplicateRequest>,
    ) -> Result<tonic::Response<pb::ReplicateReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn sync(
        &self,
        _: tonic::Request<pb::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn forget(
        &self,
        _: tonic::Request<pb::RecordBatch>,
    ) -> Result<tonic::Response<pb::ForgetReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }
}

/// Streams `records` records of `key_size`-byte keys and `value_size`-byte
/// values over a loopback gRPC server stream, batched as a hand-off batches
/// them, and drains it with the hand-off's client: the cost of the wire
/// alone, to set beside a real hand-off. Returns the records and bytes
/// received and the time taken.
pub async fn stream_baseline(
    records: u64,
    key_size: usize,
    value_size: usize,
) -> crate::Result<TransferStats> {
    let per_record = key_size + value_size + 32;
    let per_batch = (crate::data::BATCH_BYTES.div_ceil(per_record)).clamp(1, BATCH_RECORDS) as u64;
    let batch = pb::RecordBatch {
        records: (0..per_batch)
            .map(|i| pb::StoredRecord {
                key: format!("{i:0key_size$}").into_bytes(),
                version: Some(pb::Version {
                    clock: i,
                    writer: 1,
                }),
                tombstone: false,
                expires_at_ms: None,
                value: vec![7; value_size],
            })
            .collect(),
    };
    let service = SyntheticData {
        batch,
        batches: records.div_ceil(per_batch),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let max = crate::data::DataConfig::new(crate::data::DEFAULT_MAX_VALUE, Duration::from_secs(5))
        .max_message();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                pb::data_server::DataServer::new(service)
                    .max_encoding_message_size(max)
                    .max_decoding_message_size(max),
            )
            .serve_with_incoming(crate::node::incoming(listener)),
    );
    let started = std::time::Instant::now();
    let peer = DataPeer::new(Duration::from_secs(5), max);
    let mut stream = peer
        .fetch(&NodeRef::new(Id(0), addr), Id(0), Id(0), None)
        .await?;
    let mut stats = TransferStats::default();
    while let Some(batch) = stream.next().await {
        stats.count(&batch?);
    }
    stats.elapsed = started.elapsed();
    server.abort();
    Ok(stats)
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
