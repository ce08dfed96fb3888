//! The shipped data path in the simulator: a group of processes, each a
//! real [`DataNode`] on its own in-memory store, calling each other through
//! a simulated [`Peers`](crate::data::Peers) that delays, loses and cuts messages, with
//! processes that crash, restart on the same store, lose their disks, join
//! and leave.
//!
//! Everything the data layer does runs as it runs on a node: the
//! coordinator's routing and retries, quorum writes and reads, read repair,
//! hints and their delivery, join and leave hand-offs, and anti-entropy
//! rounds. Only two things are the simulator's: the network (`SimPeers`)
//! and the ring. The ring is taken as converged among the processes each
//! side can see (the ring's own scenarios, [`crate::sim::Sim`], cover how
//! it gets there): after every change the simulator publishes to each
//! process what its ring task would, and answers lookups and `GetState`
//! from that view. A join is published in the protocol's order: the new
//! member first (with no predecessor yet, and its hand-off started), the
//! rest of the ring only at the next [`DataSim::settle`], so the old owner
//! keeps serving the arc until it has seen its new predecessor.
//!
//! Time is tokio's, paused: a run takes simulated seconds and real
//! milliseconds, and it runs on one thread, so the same seed replays the
//! same run ([`run`]).

mod checks;
mod net;

use crate::clock::Clock;
use crate::data::{
    DataConfig, DataNode, LocalMember, Membership, ReadAnswer, RoundReport, Router, Wiring,
    WriteOp, Written,
};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::replica::ReplicationConfig;
use crate::ring::NodeRef;
use crate::store::{MemoryEngine, Record, SharedEngine, Store};
use crate::sync::SyncStats;
use net::{Net, SimPeers, SimRouter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The wall-clock time at which every simulation starts (November 2023).
const SIM_EPOCH_MS: u64 = 1_700_000_000_000;

/// The group, its network and its data layers' settings.
#[derive(Clone, Debug)]
pub struct DataSimConfig {
    pub seed: u64,
    pub processes: usize,
    pub vnodes: u32,
    /// Successor list length of every member.
    pub successors: usize,
    pub replicas: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    /// Probability that any one message (request or answer) is lost.
    pub loss: f64,
    /// One-way delay, uniform in this range.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Deadline of one call to another process.
    pub rpc_timeout: Duration,
    /// Run each process's background work as a node does (hint delivery
    /// every second). Off: hints move only when the scenario calls
    /// [`DataSim::deliver_hints`], so a story controls when repair happens.
    /// Anti-entropy always runs when the scenario says.
    pub background: bool,
    /// With `background`, each process also runs anti-entropy rounds on
    /// its own, as a node does with `--anti-entropy-interval`; zero (the
    /// default) leaves rounds to the scenario.
    pub anti_entropy_interval: Duration,
}

impl Default for DataSimConfig {
    fn default() -> DataSimConfig {
        DataSimConfig {
            seed: 1,
            processes: 5,
            vnodes: 4,
            successors: 4,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            loss: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 5,
            rpc_timeout: Duration::from_millis(500),
            background: false,
            anti_entropy_interval: Duration::ZERO,
        }
    }
}

/// What happened, for the scenarios to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSimStats {
    pub messages: u64,
    pub messages_lost: u64,
    pub writes_acknowledged: u64,
    pub writes_refused: u64,
    pub rounds: u64,
    pub rounds_failed: u64,
    /// `GetState` calls: a member's successor list asked for, to extend a
    /// preference list.
    pub state_calls: u64,
    pub sync: SyncStats,
}

/// One anti-entropy request, as the network saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequestSent {
    /// Simulated time since the run began.
    pub at: Duration,
    pub from: String,
    pub to: String,
    /// The arc compared.
    pub arc: crate::sync::ArcRange,
}

/// A process's disks: its records and its hints, kept across restarts.
type Disks = (Arc<MemoryEngine>, Arc<MemoryEngine>);

/// A simulated replica group: processes running the real data layer.
pub struct DataSim {
    config: DataSimConfig,
    net: Arc<Mutex<Net>>,
    /// Each process's disks.
    engines: Mutex<BTreeMap<String, Disks>>,
    /// Where each process's ring task would publish its members.
    membership: Mutex<BTreeMap<String, watch::Sender<Membership>>>,
    /// Every process's clock reads the same simulated wall time.
    epoch: tokio::time::Instant,
}

/// Runs `scenario` on a fresh group in a paused, single-threaded runtime.
/// A scenario that panics prints the seed and the command that replays it.
pub fn run<F, Fut, T>(config: DataSimConfig, test: &str, scenario: F) -> T
where
    F: FnOnce(DataSim) -> Fut,
    Fut: Future<Output = T>,
{
    struct Replay<'a>(u64, &'a str);
    impl Drop for Replay<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "simulation failed with seed {}; replay it with:\n    CHORDAL_SIM_SEED={} cargo test --test replication_sim {}",
                    self.0, self.0, self.1
                );
            }
        }
    }
    let _replay = Replay(config.seed, test);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    // A local set as well, so that a scenario can run writers side by side
    // on this one thread (`tokio::task::spawn_local`).
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(async move {
        let sim = DataSim::start(config);
        scenario(sim).await
    }))
}

impl DataSim {
    fn start(config: DataSimConfig) -> DataSim {
        let net = Net {
            rng: StdRng::seed_from_u64(config.seed),
            loss: config.loss,
            up: BTreeSet::new(),
            members: BTreeMap::new(),
            joining: BTreeSet::new(),
            sides: BTreeMap::new(),
            nodes: BTreeMap::new(),
            published: BTreeMap::new(),
            stats: DataSimStats::default(),
            syncs: Vec::new(),
        };
        let sim = DataSim {
            config: config.clone(),
            net: Arc::new(Mutex::new(net)),
            engines: Mutex::new(BTreeMap::new()),
            membership: Mutex::new(BTreeMap::new()),
            epoch: tokio::time::Instant::now(),
        };
        for p in 0..config.processes {
            let addr = Self::addr_of(p);
            sim.boot(&addr, true);
        }
        sim.publish();
        sim
    }

    fn addr_of(index: usize) -> String {
        format!("10.0.{}.{}:10001", index / 250, index % 250 + 1)
    }

    fn net(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().expect("sim lock")
    }

    pub fn config(&self) -> &DataSimConfig {
        &self.config
    }

    pub fn stats(&self) -> DataSimStats {
        self.net().stats
    }

    pub fn set_loss(&self, loss: f64) {
        self.net().loss = loss;
    }

    /// Addresses of the processes up and in the ring.
    pub fn live(&self) -> Vec<String> {
        let net = self.net();
        net.members
            .keys()
            .filter(|a| net.up.contains(*a))
            .cloned()
            .collect()
    }

    /// A random live process.
    pub fn pick(&self) -> String {
        let live = self.live();
        let at = self.net().rng.random_range(0..live.len());
        live[at].clone()
    }

    fn node(&self, addr: &str) -> Arc<DataNode> {
        self.net().nodes[addr].clone()
    }

    /// Starts the data layer of `addr` on its stores (new ones the first
    /// time), in the ring at once (`joined`) or not yet.
    fn boot(&self, addr: &str, joined: bool) {
        let (records, hints) = self
            .engines
            .lock()
            .expect("sim lock")
            .entry(addr.to_string())
            .or_insert_with(|| (Arc::new(MemoryEngine::new()), Arc::new(MemoryEngine::new())))
            .clone();
        let records: SharedEngine = records;
        let store = Store::new(records).expect("a memory store opens");
        let (sender, members) = watch::channel(Membership::default());
        let config = DataConfig {
            replication: ReplicationConfig {
                replicas: self.config.replicas,
                write_quorum: self.config.write_quorum,
                read_quorum: self.config.read_quorum,
                // Rounds run when a scenario says, and on a timer only in
                // the background work a scenario asked for.
                anti_entropy_interval: self.config.anti_entropy_interval,
                ..ReplicationConfig::default()
            },
            ..DataConfig::new(crate::data::DEFAULT_MAX_VALUE, self.config.rpc_timeout)
        };
        let seed = self.net().rng.random();
        let wiring = Wiring {
            addr: addr.to_string(),
            members,
            router: Arc::new(SimRouter {
                from: addr.to_string(),
                net: self.net.clone(),
                successors: self.config.successors,
            }),
            peers: Arc::new(SimPeers {
                from: addr.to_string(),
                net: self.net.clone(),
                min_delay_ms: self.config.min_delay_ms,
                max_delay_ms: self.config.max_delay_ms,
                timeout: self.config.rpc_timeout,
            }),
            clock: Clock::Virtual {
                base_ms: SIM_EPOCH_MS,
                start: self.epoch,
            },
            seed,
        };
        let node = Arc::new(
            DataNode::new(store, hints, config, wiring).expect("a simulated data layer starts"),
        );
        if self.config.background {
            node.start_maintenance();
        }
        let ids: Vec<Id> = (0..self.config.vnodes)
            .map(|v| Id::of_vnode(addr, v))
            .collect();
        self.membership
            .lock()
            .expect("sim lock")
            .insert(addr.to_string(), sender);
        let mut net = self.net();
        net.nodes.insert(addr.to_string(), node);
        net.up.insert(addr.to_string());
        if joined {
            net.members.insert(addr.to_string(), ids);
        }
    }

    /// Publishes to every process up what its ring task would: its members
    /// with their predecessors and successor lists, as it sees the ring.
    fn publish(&self) {
        let mut net = self.net();
        let addrs: Vec<String> = net.up.iter().cloned().collect();
        for addr in addrs {
            let Some(ids) = net.members.get(&addr).cloned() else {
                continue;
            };
            let ring = net.ring_seen_by(&addr);
            let joining = net.joining.contains(&addr);
            let members: Vec<LocalMember> = ids
                .iter()
                .map(|id| {
                    let at = ring.iter().position(|m| m.id == *id).expect("own member");
                    let successors = (1..=self.config.successors)
                        .map(|k| ring[(at + k) % ring.len()].clone())
                        .collect();
                    // A joining member has not been notified yet.
                    let predecessor =
                        (!joining).then(|| ring[(at + ring.len() - 1) % ring.len()].clone());
                    LocalMember {
                        me: NodeRef::new(*id, addr.clone()),
                        joined: true,
                        predecessor,
                        successors,
                    }
                })
                .collect();
            net.published.insert(addr.clone(), members.clone());
            if let Some(sender) = self.membership.lock().expect("sim lock").get(&addr) {
                sender.send_replace(Arc::new(members));
            }
        }
    }

    /// The ring as every process sees it once the change settled: joining
    /// processes become members everyone knows.
    pub fn settle(&self) {
        self.net().joining.clear();
        self.publish();
    }

    /// Simulated time since the run began.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Lets simulated time pass (background tasks run meanwhile).
    pub async fn pass(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    // ----- faults ---------------------------------------------------------------

    /// The process stops answering and its tasks end; its store survives.
    /// The others notice at once (the ring's failure detection is not
    /// what is tested here).
    pub async fn crash(&self, addr: &str) {
        let node = {
            let mut net = self.net();
            net.up.remove(addr);
            net.nodes[addr].clone()
        };
        node.stop().await;
        self.publish();
    }

    /// The process stops answering, but nobody has noticed yet: the ring
    /// every process was last told of still names it, until
    /// [`DataSim::answer_again`]. Its tasks go on.
    pub fn fall_silent(&self, addr: &str) {
        self.net().up.remove(addr);
    }

    /// A process that [fell silent](DataSim::fall_silent) answers again.
    pub fn answer_again(&self, addr: &str) {
        self.net().up.insert(addr.to_string());
    }

    /// A crashed process starts again on the same store.
    pub fn restart(&self, addr: &str) {
        self.boot(addr, true);
        self.publish();
    }

    /// The process loses its disk (records and hints) and comes back empty.
    pub async fn wipe(&self, addr: &str) {
        if self.net().up.contains(addr) {
            self.crash(addr).await;
        }
        self.engines.lock().expect("sim lock").insert(
            addr.to_string(),
            (Arc::new(MemoryEngine::new()), Arc::new(MemoryEngine::new())),
        );
        self.restart(addr);
    }

    /// A new process joins: its members are in the ring as it sees it, and
    /// each starts taking its arc over from its successor, whose
    /// predecessor was `before` (as the ring's join reports it). The rest
    /// of the ring learns of it at the next [`DataSim::settle`].
    pub fn join(&self) -> String {
        let addr = Self::addr_of(self.engines.lock().expect("sim lock").len());
        self.boot(&addr, true);
        self.net().joining.insert(addr.clone());
        // The successor and its predecessor, as the rest of the ring sees them.
        let ring_before = {
            let net = self.net();
            let other = net
                .members
                .keys()
                .find(|a| **a != addr && net.up.contains(*a))
                .cloned()
                .expect("a process to join through");
            net.ring_seen_by(&other)
        };
        self.publish();
        let node = self.node(&addr);
        for id in (0..self.config.vnodes).map(|v| Id::of_vnode(&addr, v)) {
            // The joiner's id is not on that ring: the owner of its id is
            // its successor.
            let at = net::owner_index(&ring_before, id);
            let successor = ring_before[at].clone();
            let before = ring_before[(at + ring_before.len() - 1) % ring_before.len()].clone();
            node.take_over(NodeRef::new(id, addr.clone()), successor, Some(before));
        }
        addr
    }

    /// `addr` leaves gracefully: it hands its arcs to its successors, then
    /// goes, and the ring closes over it.
    pub async fn leave(&self, addr: &str) {
        let node = self.node(addr);
        node.hand_off_on_leave().await;
        {
            let mut net = self.net();
            net.members.remove(addr);
            net.up.remove(addr);
        }
        node.stop().await;
        self.publish();
    }

    /// Splits the network: processes in `side` reach only each other, the
    /// rest only each other; each side's ring closes over the other.
    pub fn partition(&self, side: &[String]) {
        {
            let mut net = self.net();
            let addrs: Vec<String> = net.nodes.keys().cloned().collect();
            net.sides = addrs
                .into_iter()
                .map(|a| {
                    let s = usize::from(side.contains(&a));
                    (a, s)
                })
                .collect();
        }
        self.publish();
    }

    pub fn heal(&self) {
        self.net().sides.clear();
        self.publish();
    }

    // ----- the workload -------------------------------------------------------------

    /// A put coordinated by `via`: routed to the key's owner, applied there
    /// and copied to its replicas, answered once the write quorum is met.
    pub async fn write_via(&self, via: &str, key: &[u8], value: &[u8]) -> Result<Written> {
        self.store_via(via, key, value, false).await
    }

    pub async fn delete_via(&self, via: &str, key: &[u8]) -> Result<Written> {
        self.store_via(via, key, &[], true).await
    }

    /// A put coordinated by a random live process.
    pub async fn write(&self, key: &[u8], value: &[u8]) -> Result<Written> {
        let via = self.pick();
        self.write_via(&via, key, value).await
    }

    pub async fn delete(&self, key: &[u8]) -> Result<Written> {
        let via = self.pick();
        self.delete_via(&via, key).await
    }

    async fn store_via(
        &self,
        via: &str,
        key: &[u8],
        value: &[u8],
        delete: bool,
    ) -> Result<Written> {
        let node = self.node(via);
        let outcome = node
            .put(WriteOp {
                key: key.to_vec(),
                value: value.to_vec(),
                delete,
                ttl_ms: 0,
                write_quorum: 0,
            })
            .await;
        let mut net = self.net();
        match &outcome {
            Ok(_) => net.stats.writes_acknowledged += 1,
            Err(_) => net.stats.writes_refused += 1,
        }
        outcome
    }

    /// The owner's quorum read of `key` (tombstones included), as a
    /// coordinator gets it: the newest of the owner's record and a read
    /// quorum's, with read repair of those behind.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Record>> {
        let via = self.pick();
        self.read_via(&via, key).await
    }

    /// [`DataSim::read`] at the owner `via` finds.
    pub async fn read_via(&self, via: &str, key: &[u8]) -> Result<Option<Record>> {
        let owner = SimRouter {
            from: via.to_string(),
            net: self.net.clone(),
            successors: self.config.successors,
        }
        .lookup(Id::of_key(key))
        .await?
        .owner()
        .clone();
        let node = self.node(&owner.addr);
        match node.read_as_owner(owner.id, key, 0).await? {
            ReadAnswer::Found(record) => Ok(Some(record)),
            ReadAnswer::Missing => Ok(None),
            ReadAnswer::NotOwner(not_owner) => Err(Error::Unavailable(not_owner.reason)),
        }
    }

    // ----- background work, when the scenario says --------------------------------

    /// One anti-entropy round on every live process: each member's arc with
    /// each of its replicas.
    pub async fn anti_entropy(&self) -> Vec<RoundReport> {
        let mut all = Vec::new();
        for addr in self.live() {
            let reports = self.node(&addr).anti_entropy_round().await;
            let mut net = self.net();
            for report in &reports {
                net.stats.rounds += 1;
                net.stats.rounds_failed += u64::from(report.error.is_some());
                net.stats.sync.add(&report.stats);
            }
            drop(net);
            all.extend(reports);
        }
        all
    }

    /// Every live process offers the hints it holds, after waiting out the
    /// longest pause between attempts.
    pub async fn deliver_hints(&self) {
        self.pass(crate::data::hints::MAX_HINT_BACKOFF).await;
        for addr in self.live() {
            self.node(&addr).deliver_hints().await;
        }
    }

    /// Each anti-entropy request sent since the run began: when, by which
    /// process, to which. The first of a burst from one process is a round
    /// starting.
    pub fn sync_requests(&self) -> Vec<SyncRequestSent> {
        self.net()
            .syncs
            .iter()
            .map(|(at, from, to, arc)| SyncRequestSent {
                at: at.duration_since(self.epoch),
                from: from.clone(),
                to: to.clone(),
                arc: *arc,
            })
            .collect()
    }

    /// Waits until every hand-off under way has ended.
    pub async fn hand_offs_done(&self) {
        loop {
            let pending: usize = self
                .live()
                .iter()
                .map(|a| self.node(a).hand_offs_pending())
                .sum();
            if pending == 0 {
                return;
            }
            self.pass(Duration::from_millis(100)).await;
        }
    }

    /// Stops every process's tasks and waits for them.
    pub async fn stop(self) {
        let nodes: Vec<Arc<DataNode>> = self.net().nodes.values().cloned().collect();
        for node in nodes {
            node.stop().await;
        }
    }
}
