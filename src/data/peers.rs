//! What the data layer needs from beside and below it, as traits: a
//! [`Router`] that finds a key's owner, and [`Peers`], the calls it makes
//! to other processes. The gRPC edge (`rpc`) implements both for a running
//! node; the simulator (`sim::data`) implements them over its simulated
//! network, so the code it tests is the code that ships.
//!
//! Every method answers in domain types and [`crate::Error`]; no transport
//! type crosses this line. An implementation bounds every call by its own
//! deadline: a peer that does not answer is an `Unavailable` error, never
//! a wait without end.

use super::{Entry, ReadAnswer, WriteAnswer, WriteOp};
use crate::error::Result;
use crate::id::Id;
use crate::ring::{LookupOutcome, NodeRef};
use crate::sync::{ArcRange, SyncReply, SyncRequest};
use futures::Stream;
use std::pin::Pin;

/// Batches of records arriving from, or going to, another process.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<Vec<Entry>>> + Send>>;

/// Finds the members responsible for a key.
#[async_trait::async_trait]
pub trait Router: Send + Sync + 'static {
    /// The predecessor and successor list of `target`'s owner, as a lookup
    /// through the ring found them.
    async fn lookup(&self, target: Id) -> Result<LookupOutcome>;
}

/// One step of an anti-entropy round with another process: its answer and
/// the bytes that crossed the network each way (0 where nothing is encoded).
#[derive(Clone, Debug)]
pub struct SyncExchange {
    pub reply: SyncReply,
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

/// The calls the data layer makes to other processes' data layers.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// A put or delete, sent to member `to`, the key's owner. A quorum the
    /// owner could not gather is [`crate::Error::Quorum`].
    async fn write(&self, to: &NodeRef, op: &WriteOp) -> Result<WriteAnswer>;

    /// `key` as member `to` reads it as the owner, gathering `read_quorum`
    /// answers; with `raw`, that process's own copy, whoever owns it.
    async fn read(
        &self,
        to: &NodeRef,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> Result<ReadAnswer>;

    /// Copies of records for `to`'s process to apply; with `hint_for`, to
    /// hold for that member instead. Returns how many were applied or held.
    async fn replicate(
        &self,
        to: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> Result<u64>;

    /// Asks `to`'s process to delete its copies of purged tombstones.
    async fn forget(&self, to: &NodeRef, tombstones: &[Entry]) -> Result<u64>;

    /// One step of an anti-entropy round of `arc` with `to`'s process.
    async fn sync(&self, to: &NodeRef, arc: ArcRange, request: SyncRequest)
        -> Result<SyncExchange>;

    /// Member `of`'s predecessor (if it knows one) and successor list.
    async fn state(&self, of: &NodeRef) -> Result<(Option<NodeRef>, Vec<NodeRef>)>;

    /// Streams the arc `(from, to]` held by member `source`, resuming after
    /// the stored key `after`. [`crate::Error::NotReady`] while `source`
    /// still owns the arc.
    async fn fetch(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<BatchStream>;

    /// Pushes `batches` to `target`'s process to apply; stops at the first
    /// batch that is an error, and fails with it.
    async fn absorb(&self, target: &NodeRef, batches: BatchStream) -> Result<()>;
}
