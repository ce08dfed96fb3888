//! Anti-entropy: two replicas of an arc find exactly the records on which
//! they differ, and exchange only those.
//!
//! Every store keeps a [`DigestTree`](crate::store::digest::DigestTree) of all its records.
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
//!
//! Depends on `id` and `store` (whose digest tree it reads) only.

use crate::id::Id;
use crate::store::digest::{NodePath, Summary};
use crate::store::{Engine, Entry, Record, Store, Version};
pub use crate::store::{BATCH_BYTES, BATCH_RECORDS};

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

mod reading;
mod respond;
mod session;

pub use respond::respond;
pub use session::{Session, Step};

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
