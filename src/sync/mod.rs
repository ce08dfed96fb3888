//! Anti-entropy: two replicas of an arc find exactly the records on which
//! they differ, and exchange only those.
//!
//! Every store keeps a [`DigestTree`](tree::DigestTree) of all its records.
//! The tree is global (a prefix tree over the whole circle), but a replica
//! pair compares one *arc* `(from, to]`: the tree they compare is the
//! global tree cut to the arc. A node wholly inside the arc has the
//! summary the tree stores; a node wholly outside is empty; only the nodes
//! holding one of the arc's two ends are cut, at most two per level, and
//! their summaries are the sum of their children's (down to the leaves,
//! where the few records of the cut leaf are read from the store). So a
//! process holding many arcs, which change with membership, needs one tree
//! and no rebuilding.
//!
//! A round ([`Session`]) is driven by one side, the initiator, against a
//! responder that answers statelessly ([`respond`]):
//!
//! 1. `Summaries` of the root: equal hashes and counts, done.
//! 2. Otherwise the summaries of the children of every node that differs,
//!    level by level, so only the differing paths are walked: `O(d · 16 ·
//!    depth)` summaries for `d` differing records.
//! 3. A differing node with at most [`LIST_MAX`] records on either side is
//!    not descended into: the two sides exchange its `(key, version)`
//!    list (`Digests`), and the initiator pushes the records the responder
//!    lacks or holds older (`Push`), and pulls those it lacks itself
//!    (`Pull`), in batches. A node the responder holds nothing of is
//!    pushed whole without asking for its list, read from the store a
//!    batch at a time.
//!
//! After a round, both sides hold the newest version of every record of
//! the arc that either held at the start. The session is a state machine
//! with no I/O: the runtime drives it over gRPC, the simulator over its
//! lossy network, and a failed request simply ends the round (the next
//! round starts again from the root, and repeats nothing that succeeded).

pub mod tree;

use crate::id::Id;
use crate::store::{Engine, Entry, Record, Store, StoreResult, Version};
use std::collections::{BTreeMap, HashSet, VecDeque};
use tree::{record_digest, NodePath, Summary, LEAF_DEPTH, MAX_DEPTH};

/// A node with at most this many records on both sides is listed rather
/// than descended into.
pub const LIST_MAX: u64 = 64;
/// Nodes per `Summaries` request.
pub const MAX_SUMMARY_NODES: usize = 4096;
/// Nodes per `Digests` request (so at most `LIST_MAX` times as many keys).
pub const MAX_LIST_NODES: usize = 64;
/// Digests one `Digests` answer may hold: honest answers hold at most
/// `MAX_LIST_NODES * LIST_MAX`, leaving room for writes since the summary.
pub const MAX_DIGESTS: usize = 4 * MAX_LIST_NODES * LIST_MAX as usize;
/// Keys per `Pull` request.
pub const MAX_PULL_KEYS: usize = 512;
/// A `Push` or a `Pull` answer is cut once it holds this many bytes (it
/// always holds at least one record).
pub const BATCH_BYTES: usize = 256 * 1024;
/// ... or this many records.
pub const BATCH_RECORDS: usize = 1024;

/// The arc `(from, to]` of the circle; `from == to` is the whole circle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArcRange {
    pub from: Id,
    pub to: Id,
}

/// How a node of the tree lies against an arc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    Outside,
    Inside,
    Partial,
}

impl ArcRange {
    pub fn new(from: Id, to: Id) -> ArcRange {
        ArcRange { from, to }
    }

    /// The arc as one or two inclusive id ranges.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        let (from, to) = (self.from.0, self.to.0);
        if from < to {
            return vec![(from + 1, to)];
        }
        let mut segments = Vec::with_capacity(2);
        if from != u64::MAX {
            segments.push((from + 1, u64::MAX));
        }
        segments.push((0, to));
        segments
    }

    pub fn contains(&self, id: Id) -> bool {
        crate::id::between_open_closed(self.from, id, self.to)
    }

    /// The parts of the circle that none of `covered` contains, as arcs.
    pub fn gaps(covered: &[ArcRange]) -> Vec<ArcRange> {
        let mut segments: Vec<(u64, u64)> = covered.iter().flat_map(|a| a.segments()).collect();
        segments.sort_unstable();
        let mut gaps = Vec::new();
        // The first id not yet known to be covered; None past u64::MAX.
        let mut next = Some(0u64);
        for (low, high) in segments {
            let Some(start) = next else { break };
            if low > start {
                gaps.push(ArcRange::new(Id(start.wrapping_sub(1)), Id(low - 1)));
            }
            if high >= start {
                next = high.checked_add(1);
            }
        }
        if let Some(start) = next {
            gaps.push(ArcRange::new(Id(start.wrapping_sub(1)), Id(u64::MAX)));
        }
        gaps
    }

    /// The parts of `node`'s id range inside the arc.
    pub fn cut(&self, node: NodePath) -> Vec<(u64, u64)> {
        let (low, high) = node.bounds();
        self.segments()
            .into_iter()
            .filter_map(|(a, b)| {
                let (start, end) = (a.max(low), b.min(high));
                (start <= end).then_some((start, end))
            })
            .collect()
    }

    pub fn overlap(&self, node: NodePath) -> Overlap {
        let cut = self.cut(node);
        match cut.as_slice() {
            [] => Overlap::Outside,
            [(start, end)] if (*start, *end) == node.bounds() => Overlap::Inside,
            _ => Overlap::Partial,
        }
    }
}

/// The most expired tombstones a round remembers the responder holding:
/// one `Forget` request's worth.
pub const MAX_EXPIRED_THERE: usize = 2 * BATCH_RECORDS;

/// What a replica says of one record in a `Digests` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDigest {
    pub key: Vec<u8>,
    pub version: Version,
    pub tombstone: bool,
    pub expires_at: Option<u64>,
}

impl KeyDigest {
    fn of(key: &[u8], record: &Record) -> KeyDigest {
        KeyDigest {
            key: key.to_vec(),
            version: record.version,
            tombstone: record.tombstone,
            expires_at: record.expires_at,
        }
    }

    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }
}

/// One request of a round, initiator to responder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// The summaries of `nodes`, cut to `arc`.
    Summaries { arc: ArcRange, nodes: Vec<NodePath> },
    /// The digest of every record under `nodes`, cut to `arc`.
    Digests { arc: ArcRange, nodes: Vec<NodePath> },
    /// The records of `keys` (those held), as many as fit in a batch.
    Pull { keys: Vec<Vec<u8>> },
    /// Records to apply, last writer wins.
    Push { entries: Vec<Entry> },
}

/// The answer to a [`SyncRequest`] of the same kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncReply {
    Summaries(Vec<Summary>),
    Digests(Vec<KeyDigest>),
    /// The records found among the first `answered` keys asked for.
    Pulled {
        entries: Vec<Entry>,
        answered: usize,
    },
    Pushed {
        applied: u64,
    },
}

/// Why a round ended early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("local storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the other replica's answer is malformed: {0}")]
    BadReply(String),
    #[error("the request cannot be answered: {0}")]
    BadRequest(String),
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Requests sent (each one round trip).
    pub round_trips: u64,
    /// Tree nodes whose summaries were compared.
    pub nodes_compared: u64,
    /// Record digests received in `Digests` answers.
    pub digests_received: u64,
    /// Records sent to the responder.
    pub pushed: u64,
    /// Records received from the responder.
    pub pulled: u64,
    /// Bytes of requests and answers on the wire, as the driver counted
    /// them.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl SyncStats {
    /// Whether the two replicas already agreed.
    pub fn in_sync(&self) -> bool {
        self.pushed == 0 && self.pulled == 0
    }

    pub fn add(&mut self, other: &SyncStats) {
        self.round_trips += other.round_trips;
        self.nodes_compared += other.nodes_compared;
        self.digests_received += other.digests_received;
        self.pushed += other.pushed;
        self.pulled += other.pulled;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
    }
}

// ----- the store's side: summaries, digests, records -------------------------------

impl<E: Engine> Store<E> {
    /// Up to `limit` tombstones in `arc` that expired at or before `by_ms`.
    pub fn expired_tombstones(
        &self,
        arc: ArcRange,
        by_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let mut found = Vec::new();
        for (low, high) in arc.segments() {
            self.visit_ids_while(low, high, |key, record| {
                if record.tombstone && record.expires_at.is_some_and(|at| at <= by_ms) {
                    found.push(Entry {
                        key: key.to_vec(),
                        record,
                    });
                }
                found.len() < limit
            })?;
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The summary of `node` cut to `arc`.
    pub fn summarize(&self, arc: ArcRange, node: NodePath) -> StoreResult<Summary> {
        match arc.overlap(node) {
            Overlap::Outside => Ok(Summary::default()),
            Overlap::Inside if node.depth <= LEAF_DEPTH => Ok(self.tree().stored([node])[0]),
            _ if node.depth >= LEAF_DEPTH => {
                let mut sum = Summary::default();
                for (low, high) in arc.cut(node) {
                    self.visit_ids(low, high, |key, record| {
                        sum.add(&Summary::of(record_digest(key, &record)))
                    })?;
                }
                Ok(sum)
            }
            _ => {
                let mut sum = Summary::default();
                for child in node.children() {
                    sum.add(&self.summarize(arc, child)?);
                }
                Ok(sum)
            }
        }
    }

    /// Every record under `nodes` cut to `arc`, as digests, in ring order;
    /// `None` if there are more than `limit`.
    pub fn digests(
        &self,
        arc: ArcRange,
        nodes: &[NodePath],
        limit: usize,
    ) -> StoreResult<Option<Vec<KeyDigest>>> {
        let mut out = Vec::new();
        for node in nodes {
            for (low, high) in arc.cut(*node) {
                self.visit_ids_while(low, high, |key, record| {
                    out.push(KeyDigest::of(key, &record));
                    out.len() <= limit
                })?;
                if out.len() > limit {
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// [`Store::digests`] of nodes the caller knows to be small.
    fn digests_of_small(&self, arc: ArcRange, nodes: &[NodePath]) -> StoreResult<Vec<KeyDigest>> {
        Ok(self.digests(arc, nodes, usize::MAX)?.unwrap_or_default())
    }

    /// The records of the first keys of `keys` that fit in a batch (at
    /// least one key is always answered), expired ones included: an expired
    /// record still supersedes an older live one. Returns the records found
    /// and how many keys were answered.
    pub fn records(&self, keys: &[Vec<u8>]) -> StoreResult<(Vec<Entry>, usize)> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut answered = 0;
        for key in keys {
            if answered > 0 && (bytes >= BATCH_BYTES || entries.len() >= BATCH_RECORDS) {
                break;
            }
            answered += 1;
            if let Some(record) = self.get(key, 0)? {
                bytes += key.len() + record.value.len() + 32;
                entries.push(Entry {
                    key: key.clone(),
                    record,
                });
            }
        }
        Ok((entries, answered))
    }

    /// Applies received records, last writer wins; returns how many were
    /// newer than what was held.
    pub fn apply_all(&self, entries: &[Entry]) -> StoreResult<u64> {
        let mut applied = 0;
        for entry in entries {
            if self.apply(&entry.key, &entry.record)? {
                applied += 1;
            }
        }
        Ok(applied)
    }
}

/// The responder's answer to one request: stateless, so any number of
/// rounds may be served at once. A listing of more than [`MAX_DIGESTS`]
/// records is refused (an honest initiator lists only small nodes).
pub fn respond<E: Engine>(store: &Store<E>, request: SyncRequest) -> Result<SyncReply, SyncError> {
    Ok(match request {
        SyncRequest::Summaries { arc, nodes } => SyncReply::Summaries(
            nodes
                .iter()
                .map(|node| store.summarize(arc, *node))
                .collect::<StoreResult<_>>()?,
        ),
        SyncRequest::Digests { arc, nodes } => match store.digests(arc, &nodes, MAX_DIGESTS)? {
            Some(digests) => SyncReply::Digests(digests),
            None => {
                return Err(SyncError::BadRequest(format!(
                    "the nodes asked for hold more than {MAX_DIGESTS} records; list smaller ones"
                )))
            }
        },
        SyncRequest::Pull { keys } => {
            let (entries, answered) = store.records(&keys)?;
            SyncReply::Pulled { entries, answered }
        }
        SyncRequest::Push { entries } => SyncReply::Pushed {
            applied: store.apply_all(&entries)?,
        },
    })
}

// ----- the initiator's side ---------------------------------------------------------

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
    frontier: Vec<NodePath>,
    /// Differing nodes small enough to list.
    to_list: Vec<NodePath>,
    /// Keys whose local record the responder lacks or holds older.
    to_push: VecDeque<Vec<u8>>,
    /// Id ranges the responder holds nothing of, pushed whole by scanning
    /// them a batch at a time, with the stored key to resume after.
    to_push_whole: Vec<(u64, u64)>,
    push_resume: Option<Vec<u8>>,
    /// Keys the responder holds newer or only.
    to_pull: VecDeque<Vec<u8>>,
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
                crate::data::printable(&stranger.key)
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

/// Runs a whole round between two stores in this process: what the tests
/// and the simulator use, the responder's answers going through
/// [`respond`] exactly as over the network.
pub fn sync_in_process<E: Engine, F: Engine>(
    arc: ArcRange,
    initiator: &Store<E>,
    responder: &Store<F>,
    now_ms: u64,
) -> Result<SyncStats, SyncError> {
    let mut session = Session::new(arc, now_ms);
    while let Step::Send(request) = session.next(initiator)? {
        let reply = respond(responder, request)?;
        session.on_reply(initiator, reply)?;
    }
    Ok(session.stats())
}

#[cfg(test)]
mod tests;
