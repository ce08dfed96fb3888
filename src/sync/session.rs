//! The initiator's side of a round: a [`Session`] that walks the trees
//! from the root, descending only into nodes whose summaries differ, lists
//! small ones, and pushes and pulls the records that differ.

use super::*;
use crate::store::digest::{NodePath, Summary, MAX_DEPTH};
use crate::store::{Engine, Entry, Store};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// What the initiator does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Send(SyncRequest),
    Done,
}

/// One anti-entropy round of one arc, seen from the initiator.
#[derive(Debug)]
pub struct Session {
    arc: ArcRange,
    /// Nodes whose summaries are still to be compared.
    pub(super) frontier: Vec<NodePath>,
    /// Differing nodes small enough to list.
    pub(super) to_list: Vec<NodePath>,
    /// Keys whose local record the responder lacks or holds older.
    to_push: VecDeque<Vec<u8>>,
    /// Id ranges the responder holds nothing of, pushed whole by scanning
    /// them a batch at a time, with the stored key to resume after.
    to_push_whole: Vec<(u64, u64)>,
    push_resume: Option<Vec<u8>>,
    /// Keys the responder holds newer or only.
    pub(super) to_pull: VecDeque<Vec<u8>>,
    /// Expired tombstones the responder holds of keys this side lacks.
    expired_there: Vec<Entry>,
    /// The request awaiting its answer.
    in_flight: Option<SyncRequest>,
    /// Wall-clock time, for expiry.
    now_ms: u64,
    stats: SyncStats,
}

impl Session {
    pub fn new(arc: ArcRange, now_ms: u64) -> Session {
        Session {
            arc,
            frontier: vec![NodePath::ROOT],
            to_list: Vec::new(),
            to_push: VecDeque::new(),
            to_push_whole: Vec::new(),
            push_resume: None,
            to_pull: VecDeque::new(),
            expired_there: Vec::new(),
            in_flight: None,
            now_ms,
            stats: SyncStats::default(),
        }
    }

    pub fn arc(&self) -> ArcRange {
        self.arc
    }

    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The expired tombstones the responder holds of keys this side lacks
    /// (at most [`MAX_EXPIRED_THERE`]): left there when the owner purged
    /// its own copy but could not tell that replica to forget it. A round
    /// does not copy them; an owner that drives the round can have the
    /// replica forget them.
    pub fn take_expired_there(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.expired_there)
    }

    /// The driver's count of bytes on the wire.
    pub fn count_bytes(&mut self, sent: usize, received: usize) {
        self.stats.bytes_sent += sent as u64;
        self.stats.bytes_received += received as u64;
    }

    /// The next request, or `Done`. Records to move go first, so what is
    /// queued stays small; then lists; then the next level of the tree.
    pub fn next<E: Engine>(&mut self, local: &Store<E>) -> Result<Step, SyncError> {
        assert!(self.in_flight.is_none(), "one request at a time");
        let request = if !self.to_pull.is_empty() {
            let count = self.to_pull.len().min(MAX_PULL_KEYS);
            SyncRequest::Pull {
                keys: self.to_pull.iter().take(count).cloned().collect(),
            }
        } else if !self.to_push.is_empty() {
            let mut entries = Vec::new();
            let mut bytes = 0;
            while let Some(key) = self.to_push.pop_front() {
                if let Some(record) = local.get(&key, 0)? {
                    bytes += key.len() + record.value.len() + 32;
                    entries.push(Entry { key, record });
                }
                if bytes >= BATCH_BYTES || entries.len() >= BATCH_RECORDS {
                    break;
                }
            }
            if entries.is_empty() {
                return self.next(local); // every key was gone
            }
            SyncRequest::Push { entries }
        } else if let Some(&(low, high)) = self.to_push_whole.last() {
            let entries = self.next_whole_batch(local, low, high)?;
            if entries.is_empty() {
                return self.next(local);
            }
            SyncRequest::Push { entries }
        } else if !self.to_list.is_empty() {
            let at = self.to_list.len().saturating_sub(MAX_LIST_NODES);
            SyncRequest::Digests {
                arc: self.arc,
                nodes: self.to_list.split_off(at),
            }
        } else if !self.frontier.is_empty() {
            let at = self.frontier.len().saturating_sub(MAX_SUMMARY_NODES);
            SyncRequest::Summaries {
                arc: self.arc,
                nodes: self.frontier.split_off(at),
            }
        } else {
            return Ok(Step::Done);
        };
        self.stats.round_trips += 1;
        self.in_flight = Some(request.clone());
        Ok(Step::Send(request))
    }

    /// The next batch of the id range `[low, high]`, read in ring order
    /// from where the last one ended (expired records left out: the
    /// responder holds nothing they could supersede); moves on to the
    /// next range when this one is done.
    fn next_whole_batch<E: Engine>(
        &mut self,
        local: &Store<E>,
        low: u64,
        high: u64,
    ) -> Result<Vec<Entry>, SyncError> {
        let page = local.scan_arc(
            Id(low.wrapping_sub(1)),
            Id(high),
            self.push_resume.as_deref(),
            BATCH_RECORDS,
            self.now_ms,
        )?;
        let mut entries = Vec::with_capacity(page.len());
        let mut bytes = 0;
        for (stored_key, record) in page {
            let Some((_, key)) = crate::store::split_storage_key(&stored_key) else {
                continue;
            };
            bytes += key.len() + record.value.len() + 32;
            entries.push(Entry {
                key: key.to_vec(),
                record,
            });
            self.push_resume = Some(stored_key);
            if bytes >= BATCH_BYTES {
                break;
            }
        }
        if entries.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
            self.to_push_whole.pop();
            self.push_resume = None;
        }
        Ok(entries)
    }

    /// Takes the answer to the request last returned by [`Session::next`].
    pub fn on_reply<E: Engine>(
        &mut self,
        local: &Store<E>,
        reply: SyncReply,
    ) -> Result<(), SyncError> {
        let request = self
            .in_flight
            .take()
            .ok_or_else(|| SyncError::BadReply("an answer nobody asked for".into()))?;
        match (request, reply) {
            (SyncRequest::Summaries { nodes, .. }, SyncReply::Summaries(theirs)) => {
                self.on_summaries(local, &nodes, &theirs)
            }
            (SyncRequest::Digests { nodes, .. }, SyncReply::Digests(theirs)) => {
                self.on_digests(local, &nodes, theirs)
            }
            (SyncRequest::Pull { keys }, SyncReply::Pulled { entries, answered }) => {
                self.on_pulled(local, &keys, entries, answered)
            }
            (SyncRequest::Push { entries }, SyncReply::Pushed { .. }) => {
                self.stats.pushed += entries.len() as u64;
                Ok(())
            }
            (request, reply) => Err(SyncError::BadReply(format!(
                "{} answered with {}",
                request_kind(&request),
                reply_kind(&reply)
            ))),
        }
    }

    fn on_summaries<E: Engine>(
        &mut self,
        local: &Store<E>,
        nodes: &[NodePath],
        theirs: &[Summary],
    ) -> Result<(), SyncError> {
        if theirs.len() != nodes.len() {
            return Err(SyncError::BadReply(format!(
                "{} summaries for {} nodes",
                theirs.len(),
                nodes.len()
            )));
        }
        self.stats.nodes_compared += nodes.len() as u64;
        for (node, their) in nodes.iter().zip(theirs) {
            let mine = local.summarize(self.arc, *node)?;
            if mine == *their {
                continue;
            }
            if their.count == 0 {
                // They hold nothing here: everything of ours goes.
                self.to_push_whole
                    .extend(self.arc.cut(*node).into_iter().rev());
            } else if mine.count.max(their.count) <= LIST_MAX || node.depth == MAX_DEPTH {
                self.to_list.push(*node);
            } else {
                let arc = self.arc;
                self.frontier.extend(
                    node.children()
                        .filter(|child| arc.overlap(*child) != Overlap::Outside),
                );
            }
        }
        Ok(())
    }

    fn on_digests<E: Engine>(
        &mut self,
        local: &Store<E>,
        nodes: &[NodePath],
        theirs: Vec<KeyDigest>,
    ) -> Result<(), SyncError> {
        if theirs.len() > MAX_DIGESTS {
            return Err(SyncError::BadReply(format!(
                "{} digests; at most {MAX_DIGESTS} expected",
                theirs.len()
            )));
        }
        let asked: HashSet<NodePath> = nodes.iter().copied().collect();
        self.stats.digests_received += theirs.len() as u64;
        let mut theirs_by_key = BTreeMap::new();
        for digest in theirs {
            let id = Id::of_key(&digest.key);
            let under_asked = (0..=MAX_DEPTH).any(|depth| {
                let prefix = if depth == 0 {
                    0
                } else {
                    id.0 >> (64 - 4 * depth as u32)
                };
                asked.contains(&NodePath { depth, prefix })
            });
            if !under_asked || !self.arc.contains(id) {
                return Err(SyncError::BadReply(
                    "a digest of a key outside the nodes asked for".into(),
                ));
            }
            theirs_by_key.insert(digest.key.clone(), digest);
        }
        let now = self.now_ms;
        for mine in local.digests_of_small(self.arc, nodes)? {
            match theirs_by_key.remove(&mine.key) {
                Some(their) if their.version > mine.version => self.to_pull.push_back(their.key),
                Some(their) if their.version < mine.version => self.to_push.push_back(mine.key),
                Some(_) => {}
                None if mine.is_expired(now) => {}
                None => self.to_push.push_back(mine.key),
            }
        }
        for (key, their) in theirs_by_key {
            if !their.is_expired(now) {
                self.to_pull.push_back(key);
            } else if their.tombstone && self.expired_there.len() < MAX_EXPIRED_THERE {
                self.expired_there.push(Entry {
                    key,
                    record: Record::tombstone(their.version, their.expires_at),
                });
            }
        }
        Ok(())
    }

    fn on_pulled<E: Engine>(
        &mut self,
        local: &Store<E>,
        keys: &[Vec<u8>],
        entries: Vec<Entry>,
        answered: usize,
    ) -> Result<(), SyncError> {
        if answered == 0 || answered > keys.len() {
            return Err(SyncError::BadReply(format!(
                "{answered} of {} keys answered",
                keys.len()
            )));
        }
        let asked: HashSet<&[u8]> = keys[..answered].iter().map(Vec::as_slice).collect();
        if let Some(stranger) = entries.iter().find(|e| !asked.contains(e.key.as_slice())) {
            return Err(SyncError::BadReply(format!(
                "a record of {} that was not asked for",
                crate::error::printable(&stranger.key)
            )));
        }
        self.to_pull.drain(..answered);
        self.stats.pulled += entries.len() as u64;
        local.apply_all(&entries)?;
        Ok(())
    }
}

fn request_kind(request: &SyncRequest) -> &'static str {
    match request {
        SyncRequest::Summaries { .. } => "Summaries",
        SyncRequest::Digests { .. } => "Digests",
        SyncRequest::Pull { .. } => "Pull",
        SyncRequest::Push { .. } => "Push",
    }
}

fn reply_kind(reply: &SyncReply) -> &'static str {
    match reply {
        SyncReply::Summaries(_) => "Summaries",
        SyncReply::Digests(_) => "Digests",
        SyncReply::Pulled { .. } => "Pulled",
        SyncReply::Pushed { .. } => "Pushed",
    }
}
