//! The data layer: keys stored at their owners, copied to their replicas,
//! and handed over when members join and leave.
//!
//! Depends on `id`, `clock`, `error`, `ring` (for [`NodeRef`] and lookup
//! answers), `store`, `sync`, `replica` and `room`, and on nothing above
//! it: it reaches the ring and other processes only through the traits it
//! defines in [`peers`] ([`Router`], [`Peers`]), which the gRPC edge and
//! the simulator implement. No network type appears here.
//!
//! Every process keeps one [`Store`] for all its virtual nodes; a member
//! *owns* the keys whose ids lie in `(predecessor, member]`. The node's
//! ring task publishes what the data layer needs of each local member
//! ([`LocalMember`]) on a watch channel after every step, so ownership is
//! decided from the ring state of that moment without asking the task.
//!
//! The jobs, one file each:
//! * [`coordinator`]: a client request reaches any process, which looks the
//!   key up, sends the operation to the first member of the answer's
//!   successor list, moves on when one cannot be reached, follows the
//!   `NotOwner` hint of a member that no longer owns the key, and retries
//!   with a fresh lookup until the deadline. Arcs learned from lookups are
//!   remembered (`coordinator::RouteCache`).
//! * [`owner`]: the owner applies writes (only the owner makes versions)
//!   and answers reads.
//! * [`quorum`]: the owner copies each write to its replicas and waits for
//!   the write quorum; reads gather the read quorum and repair stale
//!   replicas. [`hints`] holds what a replica could not take.
//! * [`handoff`]: the arc moving to a joining member, and away from a
//!   leaving one.
//! * [`anti_entropy`] and [`copies`]: rounds that compare and repair
//!   replicas, catch a restarted process up, hand back copies held beyond
//!   `N`, and purge tombstones every replica holds.
//! * [`serve`]: what this process answers to the calls of [`Peers`] made by
//!   others, after the checks that do not depend on the transport.
//! * [`describe`]: what a process reports about itself.
//! * [`rooms`]: chat room messages watched as they arrive.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::id::{between_open_closed, Id};
use crate::replica::hints::Hints;
use crate::replica::ReplicationConfig;
use crate::ring::NodeRef;
pub use crate::store::Entry;
use crate::store::{self, Record, SharedEngine, Store, StoreError, Version};
use prometheus_client::metrics::counter::Counter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod anti_entropy;
pub mod coordinator;
pub mod copies;
pub mod describe;
pub mod handoff;
pub mod hints;
pub mod owner;
pub mod peers;
pub mod quorum;
pub mod rooms;
pub mod serve;

pub use anti_entropy::{ReplicaHealth, RoundReport};
pub use describe::{MemberInfo, ProcessInfo};
pub use peers::{BatchStream, Peers, Router, SyncExchange};
pub use store::{BATCH_BYTES, BATCH_RECORDS};

/// Default largest value a node accepts.
pub const DEFAULT_MAX_VALUE: usize = 1024 * 1024;
/// Longest accepted time to live (ten years).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What the data layer needs of one local member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    pub me: NodeRef,
    pub joined: bool,
    pub predecessor: Option<NodeRef>,
    pub successors: Vec<NodeRef>,
}

/// All local members, as last published by the ring task.
pub type Membership = Arc<Vec<LocalMember>>;

/// A put or a delete, as the coordinator sends it to the owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOp {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub delete: bool,
    /// Milliseconds to live; 0: for ever.
    pub ttl_ms: u64,
    /// Acknowledgements to wait for; 0: the owner's `--write-quorum`.
    pub write_quorum: u32,
}

/// "Not mine": the addressed member does not own the key now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotOwner {
    /// The member it believes does.
    pub hint: Option<NodeRef>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteAnswer {
    Written {
        version: Version,
        existed: bool,
        /// Copies acknowledged, the owner's included.
        acks: usize,
    },
    NotOwner(NotOwner),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAnswer {
    /// The owner's record; a tombstone means deleted.
    Found(Record),
    Missing,
    NotOwner(NotOwner),
}

/// The answer to a client's put or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub version: Version,
    pub existed: bool,
    pub owner: NodeRef,
    /// Copies acknowledged before the answer, the owner's included.
    pub acks: usize,
}

/// The answer to a client's get: a live value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: Vec<u8>,
    pub version: Version,
    pub expires_at: Option<u64>,
    /// The member that answered; `None` for a local read.
    pub owner: Option<NodeRef>,
}

/// Limits of the data layer.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// Largest value accepted, in bytes.
    pub max_value: usize,
    /// Deadline of one request to another process.
    pub rpc_timeout: Duration,
    /// How long a coordinator keeps retrying before answering UNAVAILABLE.
    pub retry_budget: Duration,
    /// `N`, `W`, `R` and anti-entropy.
    pub replication: ReplicationConfig,
}

impl DataConfig {
    pub fn new(max_value: usize, rpc_timeout: Duration) -> DataConfig {
        DataConfig {
            max_value,
            rpc_timeout,
            retry_budget: rpc_timeout * 8,
            replication: ReplicationConfig::default(),
        }
    }

    /// Largest message the data services accept: a hand-off batch plus one
    /// record of the largest value, or a put of a value twice the limit (so
    /// that an oversized value is answered INVALID_ARGUMENT, not cut off).
    pub fn max_message(&self) -> usize {
        BATCH_BYTES + 2 * self.max_value + 64 * 1024
    }
}

/// What the data layer counts, for the metrics the admin port serves.
#[derive(Clone, Debug, Default)]
pub struct DataStats {
    /// Bytes of anti-entropy requests and answers of rounds driven here.
    pub anti_entropy_bytes: Counter,
    /// Records the rounds driven here sent or received.
    pub anti_entropy_records: Counter,
}

/// What a [`DataNode`] is wired to: where it is, what it knows of its
/// members, how it reaches the ring and other processes, and its clock.
pub struct Wiring {
    /// This process's advertised address.
    pub addr: String,
    /// The local members, as the ring task publishes them.
    pub members: watch::Receiver<Membership>,
    pub router: Arc<dyn Router>,
    pub peers: Arc<dyn Peers>,
    pub clock: Clock,
    /// Seeds the jitter of background work (random for a node, the run's
    /// seed in the simulator).
    pub seed: u64,
}

pub(crate) fn store_error(error: StoreError) -> Error {
    tracing::error!("storage failed: {error}");
    Error::Unavailable(format!("storage failed: {error}"))
}

/// The data side of one process: its store, and everything it does with
/// records as owner, replica and coordinator. Each piece of mutable state
/// sits beside the behaviour that changes it, in the files above.
pub struct DataNode {
    store: Store<SharedEngine>,
    hlc: store::Hlc,
    config: DataConfig,
    addr: String,
    clock: Clock,
    members: watch::Receiver<Membership>,
    router: Arc<dyn Router>,
    peers: Arc<dyn Peers>,
    routes: coordinator::RouteCache,
    handoffs: handoff::Handoffs,
    preferences: quorum::PreferenceCache,
    hints: hints::HintQueue,
    rounds: anti_entropy::Rounds,
    room_feed: rooms::RoomFeed,
    stats: DataStats,
    rng: Mutex<StdRng>,
    /// Every task the data layer spawns, so that shutdown can wait for them.
    tasks: TaskTracker,
    /// Cancelled when the process stops: every spawned task ends early.
    stopping: CancellationToken,
}

impl DataNode {
    /// The data layer over `store`, keeping hints in `hints` (the same
    /// database's hint column family, for a node).
    pub fn new(
        store: Store<SharedEngine>,
        hints: SharedEngine,
        config: DataConfig,
        wiring: Wiring,
    ) -> Result<DataNode> {
        let hints = Hints::open(hints)
            .map_err(|e| Error::Config(format!("cannot read the hints in the database: {e}")))?;
        Ok(DataNode {
            store,
            hlc: store::Hlc::default(),
            config,
            addr: wiring.addr,
            clock: wiring.clock,
            members: wiring.members,
            router: wiring.router,
            peers: wiring.peers,
            routes: coordinator::RouteCache::default(),
            handoffs: handoff::Handoffs::default(),
            preferences: quorum::PreferenceCache::default(),
            hints: hints::HintQueue::new(hints),
            rounds: anti_entropy::Rounds::default(),
            room_feed: rooms::RoomFeed::default(),
            stats: DataStats::default(),
            rng: Mutex::new(StdRng::seed_from_u64(wiring.seed)),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    pub fn stats(&self) -> &DataStats {
        &self.stats
    }

    /// This process's members that are in the ring now.
    pub fn members_joined(&self) -> usize {
        self.members.borrow().iter().filter(|m| m.joined).count()
    }

    pub fn store(&self) -> &Store<SharedEngine> {
        &self.store
    }

    /// Milliseconds since the Unix epoch, by this node's clock.
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    // ----- lifetime ---------------------------------------------------------------

    /// Runs `task` until it ends or the node stops, tracked so that
    /// [`DataNode::stop`] waits for it.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = stopping.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Whether the node is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Completes when the node starts stopping.
    pub async fn stopped(&self) {
        self.stopping.cancelled().await
    }

    /// Stops every task the data layer spawned (watches, replica copies,
    /// read repairs, hand-offs, maintenance) and waits until each has ended.
    pub async fn stop(&self) {
        self.stopping.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs `work` on the store: on a blocking thread when the engine may
    /// wait on a disk, at once otherwise (the simulator's memory engine,
    /// which must run in a replayable order on one thread).
    pub(crate) async fn store_work<T, F>(self: &Arc<Self>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&DataNode) -> T + Send + 'static,
    {
        if !self.store.engine().blocks() {
            return Ok(work(self));
        }
        let data = self.clone();
        tokio::task::spawn_blocking(move || work(&data))
            .await
            .map_err(|e| Error::Unavailable(format!("store work failed: {e}")))
    }

    /// A factor in `[1 - spread, 1 + spread]`, so that the processes of a
    /// ring do not run their background work in step.
    pub(crate) fn jitter(&self, spread: f64) -> f64 {
        let unit: f64 = self.rng.lock().expect("rng lock").random();
        1.0 - spread + unit * 2.0 * spread
    }

    // ----- checks ---------------------------------------------------------------

    /// Rejects empty and oversized keys, oversized values and absurd TTLs.
    pub fn validate(&self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<()> {
        store::validate_key(key).map_err(Error::InvalidArgument)?;
        if value.len() > self.config.max_value {
            return Err(Error::InvalidArgument(format!(
                "the value is {} bytes; the limit is {} (--max-value-size)",
                value.len(),
                self.config.max_value
            )));
        }
        if Duration::from_millis(ttl_ms) > MAX_TTL {
            return Err(Error::InvalidArgument(format!(
                "the time to live is longer than {}",
                humantime::format_duration(MAX_TTL)
            )));
        }
        Ok(())
    }

    fn member(&self, id: Id) -> Option<LocalMember> {
        self.members
            .borrow()
            .iter()
            .find(|m| m.me.id == id)
            .cloned()
    }

    fn joined_members(&self) -> Vec<LocalMember> {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.joined)
            .cloned()
            .collect()
    }

    /// Whether local member `id` owns `key_id` now; the reason if not.
    fn check_owner(&self, id: Id, key_id: Id) -> Result<LocalMember, NotOwner> {
        let Some(member) = self.member(id).filter(|m| m.joined) else {
            return Err(NotOwner {
                hint: None,
                reason: format!("member {id} is not in the ring here"),
            });
        };
        // The arc starts after the predecessor; until the member knows one,
        // after the arc start its join found, if any. A member that knows
        // neither refuses: a wrong guess would answer "missing" for keys
        // another member holds, while a refusal only costs a retry.
        let start = match &member.predecessor {
            Some(p) => {
                self.handoffs.forget_join_arc(id);
                p.id
            }
            // Alone in the ring: every key is this member's.
            None if member.successors.iter().all(|s| s.id == id) => id,
            None => match self.handoffs.join_arc(id) {
                Some(start) => start,
                None => {
                    return Err(NotOwner {
                        hint: None,
                        reason: format!("member {id} does not know its predecessor yet"),
                    })
                }
            },
        };
        if between_open_closed(start, key_id, member.me.id) {
            Ok(member)
        } else {
            Err(NotOwner {
                hint: member.predecessor.clone(),
                reason: format!("{key_id} is not in the arc ({start}, {id}]"),
            })
        }
    }

    fn first_remote_successor(&self, member: &LocalMember) -> Option<NodeRef> {
        member
            .successors
            .iter()
            .find(|s| s.addr != self.addr)
            .cloned()
    }
}

/// Records and bytes moved by one transfer.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransferStats {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl TransferStats {
    pub fn count(&mut self, batch: &[Entry]) {
        self.records += batch.len() as u64;
        self.bytes += batch
            .iter()
            .map(|e| (e.key.len() + e.record.value.len()) as u64)
            .sum::<u64>();
    }
}

#[cfg(test)]
mod tests;
