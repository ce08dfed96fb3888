//! Replication in the simulator: a group of processes, each with its own
//! in-memory store, writing with quorums, reading with quorums and read
//! repair, holding hints, and running anti-entropy rounds, over a network
//! that loses messages, with processes that crash, restart and lose their
//! disks.
//!
//! The ring itself is taken as converged (the ring's own scenarios cover
//! how it gets there): the owner of a key is the first live member at or
//! after it, and preference lists come from the real [`preference_from`]
//! over the live members. The pieces under test are the real ones:
//! [`Store`] with its last-writer-wins rule and digest tree, the
//! anti-entropy [`Session`] and [`respond`], and [`Quorums`]; only the
//! message passing is the simulator's. Every message, request or answer,
//! is lost with probability `loss`; a lost request or answer fails the
//! operation it belongs to, exactly as a timeout would. The same seed
//! replays the same run.

use crate::id::{between_open_closed, Id};
use crate::replica::{preference_from, Quorum, Quorums, FALLBACKS};
use crate::ring::NodeRef;
use crate::store::{Entry, MemoryEngine, Record, Store, Version};
use crate::sync::{respond, ArcRange, Session, Step, SyncStats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The group and its network.
#[derive(Clone, Debug)]
pub struct ReplicaSimConfig {
    pub seed: u64,
    pub processes: usize,
    pub vnodes: u32,
    pub replicas: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    /// Probability that any one message is lost.
    pub loss: f64,
}

impl Default for ReplicaSimConfig {
    fn default() -> ReplicaSimConfig {
        ReplicaSimConfig {
            seed: 1,
            processes: 5,
            vnodes: 4,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            loss: 0.0,
        }
    }
}

struct Process {
    addr: String,
    ids: Vec<Id>,
    store: Store<MemoryEngine>,
    up: bool,
    /// Writes held for other processes: (target address, record).
    hints: Vec<(String, Entry)>,
}

/// What happened, for the scenarios to report.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicaSimStats {
    pub writes_acknowledged: u64,
    pub writes_refused: u64,
    pub hints_delivered: u64,
    pub rounds: u64,
    pub rounds_failed: u64,
    pub sync: SyncStats,
}

/// A simulated replica group.
pub struct ReplicaSim {
    config: ReplicaSimConfig,
    rng: StdRng,
    processes: Vec<Process>,
    /// The writers' shared clock: every write gets a new, later version.
    clock: u64,
    pub stats: ReplicaSimStats,
}

/// Why a quorum operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumFailed {
    pub answered: usize,
    pub needed: usize,
}

impl ReplicaSim {
    pub fn new(config: ReplicaSimConfig) -> ReplicaSim {
        let processes = (0..config.processes)
            .map(|p| {
                let addr = format!("10.0.0.{p}:10001");
                Process {
                    ids: (0..config.vnodes).map(|v| Id::of_vnode(&addr, v)).collect(),
                    addr,
                    store: Store::new(MemoryEngine::new()).expect("an empty store opens"),
                    up: true,
                    hints: Vec::new(),
                }
            })
            .collect();
        ReplicaSim {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            processes,
            clock: 0,
            stats: ReplicaSimStats::default(),
        }
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    pub fn addrs(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.addr.clone()).collect()
    }

    fn index(&self, addr: &str) -> usize {
        self.processes
            .iter()
            .position(|p| p.addr == addr)
            .expect("a simulated process")
    }

    /// The process stops answering; its store survives.
    pub fn crash(&mut self, addr: &str) {
        let p = self.index(addr);
        self.processes[p].up = false;
    }

    pub fn restart(&mut self, addr: &str) {
        let p = self.index(addr);
        self.processes[p].up = true;
    }

    /// The process loses its disk (store and hints) and comes back empty.
    pub fn wipe(&mut self, addr: &str) {
        let p = self.index(addr);
        self.processes[p].store = Store::new(MemoryEngine::new()).expect("an empty store opens");
        self.processes[p].hints.clear();
        self.processes[p].up = true;
    }

    /// Whether a message got through.
    fn delivered(&mut self) -> bool {
        self.config.loss <= 0.0 || !self.rng.random_bool(self.config.loss)
    }

    /// The live members in ring order.
    fn live_ring(&self) -> Vec<NodeRef> {
        let mut members: Vec<NodeRef> = self
            .processes
            .iter()
            .filter(|p| p.up)
            .flat_map(|p| p.ids.iter().map(|id| NodeRef::new(*id, p.addr.clone())))
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }

    /// The owner of `key` among the live members, and the arc it owns.
    fn owner_of(&self, ring: &[NodeRef], key: Id) -> Option<(NodeRef, ArcRange)> {
        let at = ring.iter().position(|m| m.id >= key).unwrap_or(0);
        let owner = ring.get(at)?.clone();
        let predecessor = &ring[(at + ring.len() - 1) % ring.len()];
        Some((owner.clone(), ArcRange::new(predecessor.id, owner.id)))
    }

    /// The processes after `owner` holding copies, then the fallbacks.
    fn preference(&self, ring: &[NodeRef], owner: &NodeRef) -> crate::replica::Preference {
        let at = ring.iter().position(|m| m.id == owner.id).expect("owner");
        let after: Vec<NodeRef> = ring[at + 1..].iter().chain(&ring[..=at]).cloned().collect();
        preference_from(
            owner,
            &after,
            self.config.replicas.saturating_sub(1) + FALLBACKS,
        )
    }

    /// A put, coordinated by the key's owner: applied there, sent to each
    /// replica (a copy not acknowledged becomes a hint kept by the owner).
    /// Returns the version if the write quorum was met.
    pub fn write(&mut self, key: &[u8], value: &[u8]) -> Result<Version, QuorumFailed> {
        self.put(key, Some(value))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<Version, QuorumFailed> {
        self.put(key, None)
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<Version, QuorumFailed> {
        let ring = self.live_ring();
        let Some((owner, _)) = self.owner_of(&ring, Id::of_key(key)) else {
            return Err(QuorumFailed {
                answered: 0,
                needed: self.config.write_quorum,
            });
        };
        self.clock += 1;
        let version = Version {
            clock: self.clock,
            writer: owner.id.0,
        };
        let record = match value {
            Some(value) => Record::value(version, value.to_vec(), None),
            None => Record::tombstone(version, None),
        };
        let entry = Entry {
            key: key.to_vec(),
            record,
        };
        let origin = self.index(&owner.addr);
        self.processes[origin]
            .store
            .apply(key, &entry.record)
            .expect("memory store");
        let preference = self.preference(&ring, &owner);
        let quorum = Quorums::effective(
            self.config.replicas,
            Quorum::Default(self.config.write_quorum),
            &preference,
        );
        let mut acks = 1;
        for replica in preference.replicas(self.config.replicas).to_vec() {
            let target = self.index(&replica.addr);
            let arrived = self.delivered();
            if arrived {
                self.processes[target]
                    .store
                    .apply(key, &entry.record)
                    .expect("memory store");
            }
            if arrived && self.delivered() {
                acks += 1;
            } else {
                self.processes[origin]
                    .hints
                    .push((replica.addr.clone(), entry.clone()));
            }
        }
        if acks >= quorum.needed {
            self.stats.writes_acknowledged += 1;
            Ok(version)
        } else {
            self.stats.writes_refused += 1;
            Err(QuorumFailed {
                answered: acks,
                needed: quorum.needed,
            })
        }
    }

    /// A quorum read at the key's owner: the newest of its record and
    /// every replica that answers (at least `R - 1` must), with read
    /// repair of those found behind.
    pub fn read(&mut self, key: &[u8]) -> Result<Option<Record>, QuorumFailed> {
        let ring = self.live_ring();
        let needed = self.config.read_quorum;
        let Some((owner, _)) = self.owner_of(&ring, Id::of_key(key)) else {
            return Err(QuorumFailed {
                answered: 0,
                needed,
            });
        };
        let origin = self.index(&owner.addr);
        let local = self.processes[origin]
            .store
            .get(key, 0)
            .expect("memory store");
        let preference = self.preference(&ring, &owner);
        let quorum = Quorums::effective(self.config.replicas, Quorum::Default(needed), &preference);
        let mut heard = vec![(origin, local)];
        for replica in preference.replicas(self.config.replicas).to_vec() {
            if !(self.delivered() && self.delivered()) {
                continue;
            }
            let target = self.index(&replica.addr);
            let record = self.processes[target]
                .store
                .get(key, 0)
                .expect("memory store");
            heard.push((target, record));
        }
        if heard.len() < quorum.needed {
            return Err(QuorumFailed {
                answered: heard.len(),
                needed: quorum.needed,
            });
        }
        let newest = heard
            .iter()
            .filter_map(|(_, r)| r.clone())
            .max_by_key(|r| r.version);
        if let Some(newest) = &newest {
            for (process, record) in &heard {
                let behind = record.as_ref().is_none_or(|r| newest.supersedes(r));
                if behind && self.delivered() {
                    self.processes[*process]
                        .store
                        .apply(key, newest)
                        .expect("memory store");
                }
            }
        }
        Ok(newest)
    }

    /// Every live process offers its hints to their targets; a hint is
    /// dropped once its target acknowledged it.
    pub fn deliver_hints(&mut self) {
        for origin in 0..self.processes.len() {
            if !self.processes[origin].up {
                continue;
            }
            let hints = std::mem::take(&mut self.processes[origin].hints);
            let mut kept = Vec::new();
            for (addr, entry) in hints {
                let target = self.index(&addr);
                if self.processes[target].up && self.delivered() {
                    self.processes[target]
                        .store
                        .apply(&entry.key, &entry.record)
                        .expect("memory store");
                    if self.delivered() {
                        self.stats.hints_delivered += 1;
                        continue;
                    }
                }
                kept.push((addr, entry));
            }
            self.processes[origin].hints.extend(kept);
        }
    }

    /// One anti-entropy round everywhere: every live member's arc against
    /// each of its replicas, the session's every request and answer
    /// crossing the lossy network. A lost message ends that round.
    pub fn anti_entropy(&mut self) {
        let ring = self.live_ring();
        for (at, owner) in ring.iter().enumerate() {
            let predecessor = &ring[(at + ring.len() - 1) % ring.len()];
            let arc = ArcRange::new(predecessor.id, owner.id);
            let preference = self.preference(&ring, owner);
            let initiator = self.index(&owner.addr);
            for replica in preference.replicas(self.config.replicas).to_vec() {
                let responder = self.index(&replica.addr);
                self.stats.rounds += 1;
                if !self.sync_round(arc, initiator, responder) {
                    self.stats.rounds_failed += 1;
                }
            }
        }
    }

    fn sync_round(&mut self, arc: ArcRange, initiator: usize, responder: usize) -> bool {
        let mut session = Session::new(arc, 0);
        loop {
            let step = session
                .next(&self.processes[initiator].store)
                .expect("memory store");
            let Step::Send(request) = step else {
                self.stats.sync.add(&session.stats());
                return true;
            };
            if !self.delivered() {
                return false;
            }
            let reply = respond(&self.processes[responder].store, request)
                .expect("an honest initiator's request");
            if !self.delivered() {
                return false;
            }
            session
                .on_reply(&self.processes[initiator].store, reply)
                .expect("an honest replica's answer");
        }
    }

    /// Keys held anywhere whose live preference list does not hold the
    /// same newest record on every member: empty when the group has
    /// converged.
    pub fn divergent_keys(&self) -> Vec<Vec<u8>> {
        let ring = self.live_ring();
        let mut newest: BTreeMap<Vec<u8>, Record> = BTreeMap::new();
        for process in self.processes.iter().filter(|p| p.up) {
            process
                .store
                .visit_ids(0, u64::MAX, |key, record| {
                    let slot = newest.entry(key.to_vec()).or_insert_with(|| record.clone());
                    if record.supersedes(slot) {
                        *slot = record;
                    }
                })
                .expect("memory store");
        }
        newest
            .into_iter()
            .filter(|(key, record)| {
                let Some((owner, arc)) = self.owner_of(&ring, Id::of_key(key)) else {
                    return false;
                };
                debug_assert!(between_open_closed(arc.from, Id::of_key(key), arc.to));
                let preference = self.preference(&ring, &owner);
                let quorum =
                    Quorums::effective(self.config.replicas, Quorum::Default(1), &preference);
                let holders = std::iter::once(&owner)
                    .chain(preference.replicas(quorum.copies).iter())
                    .collect::<Vec<_>>();
                holders.iter().any(|member| {
                    let process = &self.processes[self.index(&member.addr)];
                    process.store.get(key, 0).expect("memory store").as_ref() != Some(record)
                })
            })
            .map(|(key, _)| key)
            .collect()
    }

    /// The records process `addr` holds, by key.
    pub fn held_by(&self, addr: &str) -> BTreeMap<Vec<u8>, Record> {
        let mut held = BTreeMap::new();
        self.processes[self.index(addr)]
            .store
            .visit_ids(0, u64::MAX, |key, record| {
                held.insert(key.to_vec(), record);
            })
            .expect("memory store");
        held
    }

    /// The keys `addr` should hold a copy of, among `keys`, on the live
    /// ring.
    pub fn should_hold(&self, addr: &str, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let ring = self.live_ring();
        keys.iter()
            .filter(|key| {
                let Some((owner, _)) = self.owner_of(&ring, Id::of_key(key)) else {
                    return false;
                };
                let preference = self.preference(&ring, &owner);
                owner.addr == addr
                    || preference
                        .replicas(self.config.replicas)
                        .iter()
                        .any(|m| m.addr == addr)
            })
            .cloned()
            .collect()
    }

    pub fn hints_held(&self) -> usize {
        self.processes.iter().map(|p| p.hints.len()).sum()
    }

    /// A random process address.
    pub fn pick(&mut self) -> String {
        let at = self.rng.random_range(0..self.processes.len());
        self.processes[at].addr.clone()
    }
}
