//! The data layer: keys stored at their owners, and arcs handed over when
//! members join and leave.
//!
//! Every process keeps one [`Store`] for all its virtual nodes; a member
//! *owns* the keys whose ids lie in `(predecessor, member]`. The owner task
//! of the node publishes what the data layer needs of each local member
//! ([`LocalMember`]) on a watch channel after every step, so ownership is
//! decided from the ring state of that moment without asking the task.
//!
//! A client request reaches any process, which *coordinates* it: it looks
//! the key up, sends the operation to the first member of the answer's
//! successor list, moves on to the next when one cannot be reached, follows
//! the `NotOwner` hint of a member that no longer owns the key, and retries
//! with a fresh lookup until the deadline. Only the owner makes versions.
//!
//! Join hand-off ([`Data::take_over`]): a new member registers a pending
//! hand-off from its successor as soon as it joins. Until it has every
//! record of its arc, it answers reads with the newer of its own copy and
//! the old owner's (a read-through), and observes the old owner's version
//! before writing, so nothing written before the join is shadowed. It
//! fetches the arc only once the old owner has seen it as predecessor: from
//! then on the old owner refuses writes to the arc, and a barrier lets the
//! writes already under way finish before the first record is read, so the
//! stream misses none. Graceful leave ([`Data::hand_off_on_leave`]) refuses
//! new writes, waits out the ones under way, and pushes every member's arc
//! to its first successor on another process before the node says goodbye.

use crate::error::{Error, Result};
use crate::id::{between_open, between_open_closed, Id};
use crate::replica::hints::Hints;
use crate::replica::ReplicationConfig;
use crate::ring::{LookupOutcome, NodeRef};
use crate::rpc::{self, DataPeer, NodeApi};
pub use crate::store::Entry;
use crate::store::{self, Record, RocksEngine, Store, StoreError, Version};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, RwLock};

/// Default largest value a node accepts.
pub const DEFAULT_MAX_VALUE: usize = 1024 * 1024;
/// Longest accepted time to live (ten years).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A hand-off batch is cut once it holds this many bytes of records.
pub const BATCH_BYTES: usize = 256 * 1024;
/// ... or this many records.
pub const BATCH_RECORDS: usize = 1024;

/// What the data layer needs of one local member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMember {
    pub me: NodeRef,
    pub joined: bool,
    pub predecessor: Option<NodeRef>,
    pub successors: Vec<NodeRef>,
}

/// All local members, as last published by the owner task.
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

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn store_error(error: StoreError) -> Error {
    tracing::error!("storage failed: {error}");
    Error::Unavailable(format!("storage failed: {error}"))
}

/// A join hand-off not yet complete.
#[derive(Clone, Debug)]
struct Pending {
    source: NodeRef,
}

/// The data layer of one process.
pub struct Data {
    store: Store<RocksEngine>,
    hlc: store::Hlc,
    config: DataConfig,
    addr: String,
    members: watch::Receiver<Membership>,
    router: Arc<dyn NodeApi>,
    peers: DataPeer,
    /// Writes hold it shared from their ownership check to their commit; a
    /// hand-off takes it exclusively once, to wait out the writes that were
    /// admitted under the old ownership.
    barrier: RwLock<()>,
    /// Join hand-offs under way, by receiving member.
    pending: Mutex<HashMap<Id, Pending>>,
    /// Set when the process starts leaving: writes are refused from then on.
    leaving: AtomicBool,
    routes: RouteCache,
    /// Where each newly joined member's arc starts, by member, until it
    /// learns its predecessor.
    join_arcs: Mutex<HashMap<Id, Id>>,
    /// Writes held for replicas that could not be reached.
    hints: Hints<RocksEngine>,
    /// Each local member's preference list, with the successor list it was
    /// worked out from.
    preferences: Mutex<HashMap<Id, replication::CachedPreference>>,
    /// How the last anti-entropy round of each (member, replica) went.
    rounds: Mutex<HashMap<(Id, String), anti_entropy::LastRound>>,
    /// Pauses between attempts to deliver hints, by target address.
    hint_backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    /// Chat room messages as they are stored here, for watchers.
    room_feed: tokio::sync::broadcast::Sender<Entry>,
    /// The process's metrics (anti-entropy traffic is counted here).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Data {
    pub fn new(
        store: Store<RocksEngine>,
        config: DataConfig,
        addr: String,
        members: watch::Receiver<Membership>,
        router: Arc<dyn NodeApi>,
    ) -> Result<Data> {
        let peers = DataPeer::new(config.rpc_timeout, config.max_message());
        let hints = Hints::open(store.engine().hints())
            .map_err(|e| Error::Config(format!("cannot read the hints in the database: {e}")))?;
        Ok(Data {
            store,
            hlc: store::Hlc::default(),
            config,
            addr,
            members,
            router,
            peers,
            barrier: RwLock::new(()),
            pending: Mutex::new(HashMap::new()),
            leaving: AtomicBool::new(false),
            routes: RouteCache::default(),
            join_arcs: Mutex::new(HashMap::new()),
            hints,
            preferences: Mutex::new(HashMap::new()),
            rounds: Mutex::new(HashMap::new()),
            hint_backoff: Mutex::new(HashMap::new()),
            room_feed: tokio::sync::broadcast::channel(rooms::FEED_CAPACITY).0,
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// Counts into `metrics` from now on (the process's, shared with the
    /// server and the node).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Data {
        self.metrics = metrics;
        self
    }

    /// This process's members that are in the ring now.
    pub fn members_joined(&self) -> usize {
        self.members.borrow().iter().filter(|m| m.joined).count()
    }

    pub fn store(&self) -> &Store<RocksEngine> {
        &self.store
    }

    /// Join hand-offs under way on this process.
    pub fn hand_offs_pending(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    // ----- checks ---------------------------------------------------------------

    /// Rejects empty and oversized keys, oversized values and absurd TTLs.
    pub fn validate(&self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<()> {
        rpc::validate_key(key).map_err(|s| Error::InvalidArgument(s.message().to_string()))?;
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
                self.join_arcs.lock().expect("join arcs lock").remove(&id);
                p.id
            }
            // Alone in the ring: every key is this member's.
            None if member.successors.iter().all(|s| s.id == id) => id,
            None => match self.join_arcs.lock().expect("join arcs lock").get(&id) {
                Some(start) => *start,
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

    fn pending_source(&self, member: Id) -> Option<NodeRef> {
        let pending = self.pending.lock().expect("pending lock");
        pending.get(&member).map(|p| p.source.clone())
    }

    // ----- as the owner ------------------------------------------------------------

    /// Applies a put or delete as local member `member`, the key's owner.
    /// The write is applied here, then copied to the key's replicas; the
    /// answer waits for the write quorum (`Error::Quorum` if it is not met).
    pub async fn write_as_owner(self: &Arc<Self>, member: Id, op: WriteOp) -> Result<WriteAnswer> {
        let quorum = self.requested_quorum(op.write_quorum, true)?;
        let admitted = self.barrier.read().await;
        let key_id = Id::of_key(&op.key);
        let owner = match self.check_owner(member, key_id) {
            Ok(owner) => owner,
            Err(not_owner) => return Ok(WriteAnswer::NotOwner(not_owner)),
        };
        if self.leaving.load(Ordering::SeqCst) {
            return Ok(WriteAnswer::NotOwner(NotOwner {
                hint: self.first_remote_successor(&owner),
                reason: "this node is leaving the ring".into(),
            }));
        }
        let now = wall_ms();
        // While the arc is still arriving, the old owner may hold a newer
        // version than ours; the new one must follow it.
        let mut existed_there = false;
        if let Some(source) = self.pending_source(member) {
            if let Some(record) = self.read_through(&source, &op.key).await? {
                self.hlc.observe(record.version.clock);
                existed_there = !record.tombstone && !record.is_expired(now);
            }
        }
        let expires_at = (op.ttl_ms > 0).then(|| now.saturating_add(op.ttl_ms));
        let tombstone_expires = self.config.replication.tombstone_expiry(now);
        let (previous, record) = self
            .store
            .update(&op.key, |existing| {
                if let Some(existing) = existing {
                    self.hlc.observe(existing.version.clock);
                }
                let version = Version {
                    clock: self.hlc.now(now),
                    writer: member.0,
                };
                if op.delete {
                    Record::tombstone(version, tombstone_expires)
                } else {
                    Record::value(version, op.value.clone(), expires_at)
                }
            })
            .map_err(store_error)?;
        // Committed here: a hand-off need not wait for the replicas.
        drop(admitted);
        let existed_here = previous.is_some_and(|p| !p.tombstone && !p.is_expired(now));
        let version = record.version;
        let entry = Entry {
            key: op.key,
            record,
        };
        self.publish_room_message(&entry);
        let acks = self.replicate_write(&owner, entry, quorum).await?;
        Ok(WriteAnswer::Written {
            version,
            existed: existed_here || existed_there,
            acks,
        })
    }

    /// Reads a key as local member `member`, the key's owner: the newest
    /// of its own record and those of `read_quorum - 1` replicas (0: the
    /// owner's `--read-quorum`), repairing stale replicas afterwards.
    pub async fn read_as_owner(
        self: &Arc<Self>,
        member: Id,
        key: &[u8],
        read_quorum: u32,
    ) -> Result<ReadAnswer> {
        let quorum = self.requested_quorum(read_quorum, false)?;
        let owner = match self.check_owner(member, Id::of_key(key)) {
            Ok(owner) => owner,
            Err(not_owner) => return Ok(ReadAnswer::NotOwner(not_owner)),
        };
        // Pending first: a hand-off that ends between the two reads below
        // has then been read through, not missed.
        let pending = self.pending_source(member);
        let mut record = self.read_local(key)?;
        if let Some(source) = pending {
            if let Some(there) = self.read_through(&source, key).await? {
                if record.as_ref().is_none_or(|here| there.supersedes(here)) {
                    record = Some(there);
                }
            }
        }
        let record = self.read_replicas(&owner, key, record, quorum).await?;
        Ok(record.map_or(ReadAnswer::Missing, ReadAnswer::Found))
    }

    /// This process's own record of `key`, whoever owns it.
    pub fn read_local(&self, key: &[u8]) -> Result<Option<Record>> {
        self.store.get(key, wall_ms()).map_err(store_error)
    }

    /// The old owner's record during a hand-off. When the old owner cannot
    /// be asked, the answer is UNAVAILABLE, never "missing": the record may
    /// well be there, and the coordinator retries.
    async fn read_through(&self, source: &NodeRef, key: &[u8]) -> Result<Option<Record>> {
        match self.peers.read(source, key, true, 0).await {
            Ok(ReadAnswer::Found(record)) => Ok(Some(record)),
            Ok(_) => Ok(None),
            Err(error) => Err(Error::Unavailable(format!(
                "this member is still taking its arc over from {source}, which did not answer: {error}"
            ))),
        }
    }

    /// Applies records received from another process (last writer wins).
    pub fn absorb(&self, entries: &[Entry]) -> Result<usize> {
        let mut applied = 0;
        for entry in entries {
            self.hlc.observe(entry.record.version.clock);
            if self
                .store
                .apply(&entry.key, &entry.record)
                .map_err(store_error)?
            {
                self.publish_room_message(entry);
                applied += 1;
            }
        }
        Ok(applied)
    }

    // ----- as the coordinator ---------------------------------------------------

    /// Stores a value (or, with `op.delete`, a tombstone) at the key's owner.
    pub async fn put(self: &Arc<Self>, op: WriteOp) -> Result<Written> {
        self.validate(&op.key, &op.value, op.ttl_ms)?;
        self.requested_quorum(op.write_quorum, true)?;
        let key = op.key.clone();
        self.route(&key, |owner| {
            let op = op.clone();
            async move {
                let answer = if owner.addr == self.addr {
                    self.write_as_owner(owner.id, op).await
                } else {
                    self.peers.write(&owner, &op).await
                }?;
                Ok(match answer {
                    WriteAnswer::Written {
                        version,
                        existed,
                        acks,
                    } => Ok(Written {
                        version,
                        existed,
                        owner,
                        acks,
                    }),
                    WriteAnswer::NotOwner(not_owner) => Err(not_owner),
                })
            }
        })
        .await
    }

    /// The live value under `key`, from its owner and `read_quorum - 1`
    /// replicas (0: the owner's `--read-quorum`).
    pub async fn get(self: &Arc<Self>, key: &[u8], read_quorum: u32) -> Result<Value> {
        self.validate(key, &[], 0)?;
        self.requested_quorum(read_quorum, false)?;
        let found = self
            .route(key, |owner| async move {
                let answer = if owner.addr == self.addr {
                    self.read_as_owner(owner.id, key, read_quorum).await
                } else {
                    self.peers.read(&owner, key, false, read_quorum).await
                }?;
                Ok(match answer {
                    ReadAnswer::Found(record) => Ok(Some((record, owner))),
                    ReadAnswer::Missing => Ok(None),
                    ReadAnswer::NotOwner(not_owner) => Err(not_owner),
                })
            })
            .await?;
        match found {
            Some((record, owner)) if !record.tombstone && !record.is_expired(wall_ms()) => {
                Ok(Value {
                    value: record.value,
                    version: record.version,
                    expires_at: record.expires_at,
                    owner: Some(owner),
                })
            }
            _ => Err(Error::NotFound(format!(
                "no value under {}",
                printable(key)
            ))),
        }
    }

    /// This process's own live value of `key`, without routing.
    pub fn get_local(&self, key: &[u8]) -> Result<Value> {
        self.validate(key, &[], 0)?;
        match self.read_local(key)? {
            Some(record) if !record.tombstone => Ok(Value {
                value: record.value,
                version: record.version,
                expires_at: record.expires_at,
                owner: None,
            }),
            _ => Err(Error::NotFound(format!(
                "this node holds no value under {}",
                printable(key)
            ))),
        }
    }

    /// Runs `attempt` against the key's owner: the first member of the
    /// lookup's successor list that answers, following `NotOwner` hints,
    /// with fresh lookups and growing pauses until the retry budget is
    /// spent.
    async fn route<T, F, Fut>(&self, key: &[u8], attempt: F) -> Result<T>
    where
        F: Fn(NodeRef) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, NotOwner>>>,
    {
        const MAX_TRIES_PER_LOOKUP: usize = 8;
        let key_id = Id::of_key(key);
        let deadline = Instant::now() + self.config.retry_budget;
        let mut pause = Duration::from_millis(25);
        let mut last_problem = String::from("no attempt was made");
        // A route remembered from an earlier lookup saves the lookup; the
        // owner's own check makes a stale one cost a retry, never a wrong
        // answer.
        let mut cached = self.routes.find(key_id);
        loop {
            let candidates = match cached.take() {
                Some(candidates) => Ok((candidates, true)),
                None => self.router.lookup(key_id).await.map(|outcome| {
                    self.routes.remember(&outcome);
                    (owner_candidates(&outcome), false)
                }),
            };
            let from_cache = match candidates {
                Ok((mut candidates, from_cache)) => {
                    let mut tries = 0;
                    while let Some(target) = candidates.pop() {
                        if tries == MAX_TRIES_PER_LOOKUP {
                            break;
                        }
                        tries += 1;
                        match attempt(target.clone()).await {
                            Ok(Ok(answer)) => {
                                // The remembered arc named someone else
                                // first: forget it, so the next request
                                // looks the owner up instead of waiting
                                // on a member that is gone or cut off.
                                if tries > 1 {
                                    self.routes.forget(key_id);
                                }
                                return Ok(answer);
                            }
                            Ok(Err(not_owner)) => {
                                last_problem = format!("{target}: {}", not_owner.reason);
                                if let Some(hint) = not_owner.hint {
                                    candidates.push(hint);
                                }
                            }
                            Err(
                                error @ (Error::InvalidArgument(_)
                                | Error::NotFound(_)
                                | Error::Quorum(_)),
                            ) => return Err(error),
                            Err(error) => last_problem = format!("{target}: {error}"),
                        }
                    }
                    from_cache
                }
                Err(error) => {
                    last_problem = error.to_string();
                    false
                }
            };
            if from_cache {
                self.routes.forget(key_id);
                continue; // straight to a fresh lookup
            }
            if Instant::now() + pause > deadline {
                return Err(Error::Unavailable(format!(
                    "the owner of {} could not be reached within {}: {last_problem}",
                    printable(key),
                    humantime::format_duration(self.config.retry_budget)
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    // ----- hand-off on join --------------------------------------------------------

    /// Records that local `member`, just joined before `successor` whose
    /// predecessor was `before`, must take the arc `(before, member]` over,
    /// and starts the transfer. A successor on this process shares the
    /// store already, unless its own hand-off is still under way: then the
    /// arc is still at that hand-off's source, and is fetched from there.
    pub fn take_over(
        self: &Arc<Self>,
        member: NodeRef,
        successor: NodeRef,
        before: Option<NodeRef>,
    ) {
        // The successor's predecessor is where our arc starts, if it lies
        // before us. (Our own id there is a restart the successor has not
        // noticed yet; one past us, a join that landed behind another.)
        let from = before
            .filter(|b| between_open(b.id, member.id, successor.id))
            .map(|b| b.id);
        if let Some(from) = from {
            let mut join_arcs = self.join_arcs.lock().expect("join arcs lock");
            join_arcs.insert(member.id, from);
        }
        let successor = if successor.addr == self.addr {
            match self.pending_source(successor.id) {
                Some(source) => source,
                None => return,
            }
        } else {
            successor
        };
        let previous = self.pending.lock().expect("pending lock").insert(
            member.id,
            Pending {
                source: successor.clone(),
            },
        );
        if previous.is_some() {
            tracing::debug!(%member, "hand-off restarted");
        }
        let data = self.clone();
        tokio::spawn(async move {
            let outcome = data.run_take_over(&member, &successor, from).await;
            match outcome {
                Ok(stats) => tracing::info!(
                    %member, from = %successor,
                    "took over the arc: {} records, {} in {}",
                    stats.records,
                    human_bytes(stats.bytes),
                    humantime::format_duration(round_ms(stats.elapsed)),
                ),
                Err(error) => {
                    tracing::warn!(%member, from = %successor, "hand-off abandoned: {error}")
                }
            }
            let mut pending = data.pending.lock().expect("pending lock");
            if pending
                .get(&member.id)
                .is_some_and(|p| p.source == successor)
            {
                pending.remove(&member.id);
            }
        });
    }

    async fn run_take_over(
        &self,
        member: &NodeRef,
        source: &NodeRef,
        from: Option<Id>,
    ) -> Result<TransferStats> {
        const MAX_REFUSALS: u32 = 240;
        const MAX_FAILURES: u32 = 6;
        let mut stats = TransferStats::default();
        let mut after: Option<Vec<u8>> = None;
        const MAX_WAITS: u32 = 120;
        let (mut refusals, mut failures, mut waits) = (0, 0, 0);
        let mut seen_joined = false;
        let mut members = self.members.clone();
        loop {
            // Unless the join said, the arc starts after this member's
            // predecessor, once known. (The notice that started this may
            // be ahead of the published membership: wait for it.)
            let from = loop {
                match self.member(member.id) {
                    Some(me) if me.joined => {
                        seen_joined = true;
                        if let Some(from) = from.or(me.predecessor.map(|p| p.id)) {
                            break from;
                        }
                    }
                    _ if seen_joined => {
                        return Err(Error::Unavailable("the member left the ring".into()))
                    }
                    _ => {}
                }
                waits += 1;
                if waits == MAX_WAITS {
                    return Err(Error::Unavailable(
                        "the member never came to know its predecessor".into(),
                    ));
                }
                let wait = tokio::time::timeout(self.config.rpc_timeout, members.changed());
                if let Ok(Err(_)) = wait.await {
                    return Err(Error::Unavailable("the node is stopping".into()));
                }
            };
            let began = Instant::now();
            let fetched = self
                .fetch_arc(source, from, member.id, &mut after, &mut stats)
                .await;
            // Time spent streaming, not waiting to be allowed to.
            stats.elapsed += began.elapsed();
            match fetched {
                Ok(()) => return Ok(stats),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    // The old owner has not yet seen us as its predecessor.
                    refusals += 1;
                    if refusals == MAX_REFUSALS {
                        return Err(Error::Unavailable(format!(
                            "{source} kept refusing: {}",
                            status.message()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => {
                    failures += 1;
                    tracing::debug!(%member, %source, "hand-off interrupted: {}", status.message());
                    if failures == MAX_FAILURES {
                        return Err(Error::Unavailable(format!(
                            "{source} failed {MAX_FAILURES} times, last: {}",
                            status.message()
                        )));
                    }
                    tokio::time::sleep(self.config.rpc_timeout / 2 * failures).await;
                }
            }
        }
    }

    /// Streams `(from, to]` from `source` into the store, advancing `after`
    /// past every record applied so that a retry resumes there.
    async fn fetch_arc(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: &mut Option<Vec<u8>>,
        stats: &mut TransferStats,
    ) -> Result<(), tonic::Status> {
        let mut stream = self.peers.fetch(source, from, to, after.clone()).await?;
        let mut next_report = Instant::now() + Duration::from_secs(5);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            self.absorb(&batch).map_err(tonic::Status::from)?;
            stats.count(&batch);
            if let Some(last) = batch.last() {
                *after = Some(last.key.clone());
            }
            if Instant::now() >= next_report {
                tracing::info!(
                    member = %to, from = %source,
                    "hand-off in progress: {} records, {}",
                    stats.records,
                    human_bytes(stats.bytes)
                );
                next_report += Duration::from_secs(5);
            }
        }
        Ok(())
    }

    /// Serves a `Fetch` of `(from, to]` from local `member`: once the
    /// member no longer owns `to` (it has seen a predecessor at or past it)
    /// and has no hand-off of its own under way, and once the writes
    /// admitted under the old ownership have finished. Batches arrive on
    /// the returned channel, a few at a time: the channel's bound is the
    /// back-pressure.
    pub async fn serve_fetch(
        self: &Arc<Self>,
        member: Id,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<mpsc::Receiver<Result<Vec<Entry>>>, tonic::Status> {
        let Some(me) = self.member(member).filter(|m| m.joined) else {
            return Err(tonic::Status::failed_precondition(format!(
                "member {member} is not in the ring here"
            )));
        };
        let handed_over = me
            .predecessor
            .as_ref()
            .is_some_and(|p| !between_open_closed(p.id, to, member));
        if !handed_over {
            return Err(tonic::Status::failed_precondition(format!(
                "member {member} still owns {to}; notify it first"
            )));
        }
        if self.pending_source(member).is_some() {
            return Err(tonic::Status::failed_precondition(format!(
                "member {member} is still receiving its own arc"
            )));
        }
        drop(self.barrier.write().await);
        let after = after.map(|key| store::storage_key(&key));
        Ok(self.stream_arc(from, to, after))
    }

    /// Reads the arc `(from, to]` in batches on a blocking thread.
    fn stream_arc(
        self: &Arc<Self>,
        from: Id,
        to: Id,
        mut after: Option<Vec<u8>>,
    ) -> mpsc::Receiver<Result<Vec<Entry>>> {
        let (batches, receiver) = mpsc::channel(4);
        let data = self.clone();
        tokio::task::spawn_blocking(move || loop {
            let batch = data.next_batch(from, to, &mut after);
            let done = matches!(&batch, Ok(b) if b.is_empty()) || batch.is_err();
            if done {
                if let Err(error) = batch {
                    batches.blocking_send(Err(error)).ok();
                }
                return;
            }
            if batches.blocking_send(batch).is_err() {
                return; // the receiver went away
            }
        });
        receiver
    }

    /// The next batch of the arc after `after`: at most [`BATCH_RECORDS`]
    /// records, cut once past [`BATCH_BYTES`].
    fn next_batch(&self, from: Id, to: Id, after: &mut Option<Vec<u8>>) -> Result<Vec<Entry>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
            let page = self
                .store
                .scan_arc(from, to, after.as_deref(), 64, wall_ms())
                .map_err(store_error)?;
            if page.is_empty() {
                break;
            }
            for (stored_key, record) in page {
                let key = store::split_storage_key(&stored_key)
                    .map(|(_, key)| key.to_vec())
                    .unwrap_or_default();
                bytes += key.len() + record.value.len() + 32;
                *after = Some(stored_key);
                batch.push(Entry { key, record });
                if batch.len() == BATCH_RECORDS || bytes >= BATCH_BYTES {
                    break;
                }
            }
        }
        Ok(batch)
    }

    // ----- hand-off on leave -------------------------------------------------------

    /// Refuses writes from now on, waits for those under way, and pushes
    /// each member's arc to its first successor on another process.
    pub async fn hand_off_on_leave(self: &Arc<Self>) {
        self.leaving.store(true, Ordering::SeqCst);
        drop(self.barrier.write().await);
        let members: Vec<LocalMember> = self.members.borrow().iter().cloned().collect();
        for member in members.into_iter().filter(|m| m.joined) {
            let Some(target) = self.first_remote_successor(&member) else {
                tracing::warn!(member = %member.me, "no other process to hand the arc to; it stays in the data directory");
                continue;
            };
            // Without a known predecessor, everything here that might be
            // ours goes: extra records do no harm, missing ones would.
            let from = member.predecessor.as_ref().map_or(member.me.id, |p| p.id);
            let started = Instant::now();
            let batches = self.stream_arc(from, member.me.id, None);
            match self.peers.absorb(&target, batches).await {
                Ok(stats) => tracing::info!(
                    member = %member.me, to = %target,
                    "handed the arc over: {} records, {} in {}",
                    stats.records,
                    human_bytes(stats.bytes),
                    humantime::format_duration(round_ms(started.elapsed()))
                ),
                // Typical when a whole ring stops at once: the records stay
                // in this data directory and are served again on restart.
                Err(status) => tracing::warn!(
                    member = %member.me, to = %target,
                    "could not hand the arc over ({}); its records stay in this node's data directory",
                    status.message()
                ),
            }
        }
    }

    /// Deletes expired records in the background of a running node.
    pub fn purge_expired(&self) {
        match self.store.purge_expired(wall_ms(), 100_000) {
            Ok(0) => {}
            Ok(purged) => tracing::debug!("purged {purged} expired records"),
            Err(error) => tracing::warn!("purging expired records failed: {error}"),
        }
    }
}

/// Arcs learned from lookups, by owner id: the arc's start (the lookup's
/// predecessor) and the successor list that answered.
#[derive(Default)]
struct RouteCache {
    arcs: Mutex<BTreeMap<Id, (Id, Vec<NodeRef>)>>,
}

impl RouteCache {
    /// More arcs than a ring of 1024 processes of 16 members has.
    const MAX_ARCS: usize = 16_384;

    /// Whom to try for `key`, last first, if a remembered arc holds it.
    fn find(&self, key: Id) -> Option<Vec<NodeRef>> {
        let arcs = self.arcs.lock().expect("route cache lock");
        // The arc holding `key` is the one of the first owner at or after it.
        let (owner, (start, successors)) =
            arcs.range(key..).next().or_else(|| arcs.iter().next())?;
        between_open_closed(*start, key, *owner).then(|| successors.iter().rev().cloned().collect())
    }

    fn remember(&self, outcome: &LookupOutcome) {
        let mut arcs = self.arcs.lock().expect("route cache lock");
        if arcs.len() >= Self::MAX_ARCS {
            arcs.clear();
        }
        let owner = outcome.owner().id;
        // Arcs the new one overlaps are out of date.
        arcs.retain(|id, (start, _)| {
            *id == owner
                || !(between_open_closed(outcome.predecessor.id, *id, owner)
                    || between_open_closed(*start, owner, *id))
        });
        arcs.insert(owner, (outcome.predecessor.id, outcome.successors.clone()));
    }

    fn forget(&self, key: Id) {
        let mut arcs = self.arcs.lock().expect("route cache lock");
        let owner = arcs
            .range(key..)
            .next()
            .or_else(|| arcs.iter().next())
            .map(|(owner, _)| *owner);
        if let Some(owner) = owner {
            arcs.remove(&owner);
        }
    }
}

/// Whom to try, last first: the lookup's successor list, owner at the end.
fn owner_candidates(outcome: &LookupOutcome) -> Vec<NodeRef> {
    outcome.successors.iter().rev().cloned().collect()
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

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis() as u64)
}

/// `1.5 MiB`-style sizes for logs.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A key for messages: as text when it is printable, else in hex.
pub fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if text.chars().all(|c| !c.is_control()) && text.len() <= 64 => {
            format!("{text:?}")
        }
        _ => {
            let hex: String = key.iter().take(32).map(|b| format!("{b:02x}")).collect();
            let more = if key.len() > 32 { "…" } else { "" };
            format!("0x{hex}{more} ({} bytes)", key.len())
        }
    }
}

mod anti_entropy;
mod replication;
pub mod rooms;

pub use anti_entropy::{ReplicaHealth, RoundReport};

#[cfg(test)]
mod tests;
