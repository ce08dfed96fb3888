//! A deterministic simulator of many ring hosts in one process, and of the
//! data path over them ([`data`]).
//!
//! Sits beside `rpc` as the second implementation of the data layer's
//! traits: it may use `data` and everything below, never `rpc` or above.
//!
//! The simulator runs real [`Host`] state machines (the same code the
//! network runtime drives) and moves their messages itself: each message
//! takes a delay drawn from a seeded generator, may be lost, never crosses a
//! partition, and is never answered by a crashed host. Every request the
//! sender is waiting for ends in an answer or a timeout, exactly as over
//! gRPC. Time is a number of simulated milliseconds; nothing sleeps. The same
//! seed replays the same run, so a failing seed is a reproducible bug report.
//!
//! [`Sim::check_ring`] checks the invariants of the corrected protocol after
//! any step: the best successors (first live entry of every live member's
//! list) form exactly one cycle, the cycle is ordered (it goes round the
//! identifier circle exactly once), and every other member hangs off it as an
//! appendage. [`Sim::is_converged`] is the stronger, eventual property: the
//! cycle holds every live member, and every successor list and predecessor is
//! exactly right.

pub mod data;
mod invariants;
pub mod paper;

pub use invariants::{list_in_ring_order, Owners, RingShape, Violation};

use crate::id::Id;
use crate::ring::{
    self, Action, Addr, Host, Input, LookupError, LookupOutcome, Notice, Outgoing, RequestId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

/// How the simulated network and timers behave.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Virtual nodes per host.
    pub vnodes: u32,
    pub ring: ring::Config,
    /// One-way message delay is uniform in `[min_delay_ms, max_delay_ms]`.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Probability that any one message (request or answer) is lost.
    pub loss: f64,
    /// A request unanswered after this long has failed.
    pub timeout_ms: u64,
    pub stabilize_ms: u64,
    pub fix_fingers_ms: u64,
    /// Print every membership notice to stderr, with the simulated time:
    /// for reading a failing seed's story.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            vnodes: 1,
            ring: ring::Config::default(),
            min_delay_ms: 1,
            max_delay_ms: 10,
            loss: 0.0,
            timeout_ms: 100,
            stabilize_ms: 500,
            fix_fingers_ms: 250,
            trace: false,
        }
    }
}

/// Counters of what happened during a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub timeouts: u64,
    pub successor_deaths: u64,
    pub orphaned: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Stabilize,
    FixFingers,
}

#[derive(Debug)]
enum Event {
    Tick {
        host: Addr,
        incarnation: u64,
        timer: Timer,
    },
    Deliver {
        from: Addr,
        incarnation: u64,
        outgoing: Outgoing,
    },
    Answer {
        to: Addr,
        incarnation: u64,
        id: RequestId,
        response: ring::Response,
    },
    Timeout {
        host: Addr,
        incarnation: u64,
        id: RequestId,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimHost {
    host: Host,
    incarnation: u64,
    /// Requests this host still waits on.
    pending: HashSet<RequestId>,
}

/// The simulator.
pub struct Sim {
    config: SimConfig,
    now: u64,
    seq: u64,
    rng: StdRng,
    hosts: BTreeMap<Addr, SimHost>,
    /// Seeds of hosts ever added, to restart them.
    seeds_of: HashMap<Addr, Vec<Addr>>,
    next_host: u64,
    incarnations: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// Partition group of each host; hosts in different groups cannot talk.
    groups: HashMap<Addr, u32>,
    lookup_results: HashMap<u64, Result<LookupOutcome, LookupError>>,
    next_token: u64,
    pub stats: Stats,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let rng = StdRng::seed_from_u64(config.seed);
        Sim {
            config,
            now: 0,
            seq: 0,
            rng,
            hosts: BTreeMap::new(),
            seeds_of: HashMap::new(),
            next_host: 0,
            incarnations: 0,
            queue: BinaryHeap::new(),
            groups: HashMap::new(),
            lookup_results: HashMap::new(),
            next_token: 1,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The ids the host at `addr` runs.
    pub fn ids_for(&self, addr: &str) -> Vec<Id> {
        (0..self.config.vnodes)
            .map(|index| Id::of_vnode(addr, index))
            .collect()
    }

    /// Adds a host that bootstraps through `seeds` (its own address in the
    /// seeds, or no seeds, starts a ring). Returns its address.
    pub fn add_host(&mut self, seeds: &[Addr]) -> Addr {
        let addr = format!(
            "10.{}.{}.{}:7000",
            self.next_host >> 16,
            (self.next_host >> 8) & 255,
            self.next_host & 255
        );
        self.next_host += 1;
        self.start_host(addr.clone(), seeds.to_vec());
        addr
    }

    /// Adds the first host of a new ring.
    pub fn add_first_host(&mut self) -> Addr {
        self.add_host(&[])
    }

    fn start_host(&mut self, addr: Addr, seeds: Vec<Addr>) {
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let ids = self.ids_for(&addr);
        let host = Host::new(addr.clone(), &ids, &seeds, self.config.ring.clone());
        self.seeds_of.insert(addr.clone(), seeds);
        self.hosts.insert(
            addr.clone(),
            SimHost {
                host,
                incarnation,
                pending: HashSet::new(),
            },
        );
        // Random phases, so hosts do not stabilize in lockstep.
        let stabilize_phase = self.rng.random_range(0..self.config.stabilize_ms.max(1));
        let fix_phase = self.rng.random_range(0..self.config.fix_fingers_ms.max(1));
        // The first join attempt happens at once.
        self.schedule(
            0,
            Event::Tick {
                host: addr.clone(),
                incarnation,
                timer: Timer::Stabilize,
            },
        );
        self.schedule(
            stabilize_phase,
            Event::Tick {
                host: addr.clone(),
                incarnation,
                timer: Timer::Stabilize,
            },
        );
        self.schedule(
            fix_phase,
            Event::Tick {
                host: addr,
                incarnation,
                timer: Timer::FixFingers,
            },
        );
    }

    /// Kills a host at once: it answers nothing from now on.
    pub fn crash(&mut self, addr: &str) {
        self.hosts.remove(addr);
    }

    /// Starts a crashed host again with the same identity and seeds, and
    /// empty state, as a process restarted on its old data directory would.
    pub fn restart(&mut self, addr: &str) {
        assert!(!self.hosts.contains_key(addr), "{addr} is running");
        let seeds = self
            .seeds_of
            .get(addr)
            .cloned()
            .expect("a host this simulator started");
        self.start_host(addr.to_string(), seeds);
    }

    /// Leaves gracefully, waits (in simulated time) for the neighbours to
    /// acknowledge or time out, then stops the host.
    pub fn leave(&mut self, addr: &str) {
        let Some(sim_host) = self.hosts.get_mut(addr) else {
            return;
        };
        sim_host.host.leave();
        self.dispatch(addr);
        let deadline = self.now + self.config.timeout_ms * 2;
        while self.now < deadline
            && self
                .hosts
                .get(addr)
                .is_some_and(|h| !h.host.leave_complete())
        {
            if !self.step() {
                break;
            }
        }
        self.hosts.remove(addr);
    }

    /// Splits the network: hosts in different groups cannot exchange
    /// messages. Hosts in no group form a group of their own.
    pub fn partition(&mut self, groups: &[Vec<Addr>]) {
        self.groups.clear();
        for (index, group) in groups.iter().enumerate() {
            for addr in group {
                self.groups.insert(addr.clone(), index as u32 + 1);
            }
        }
    }

    /// Ends any partition.
    pub fn heal(&mut self) {
        self.groups.clear();
    }

    /// Turns printing of membership notices on or off.
    pub fn set_trace(&mut self, trace: bool) {
        self.config.trace = trace;
    }

    /// Sets the message loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    fn can_talk(&self, from: &str, to: &str) -> bool {
        self.groups.get(from).copied().unwrap_or(0) == self.groups.get(to).copied().unwrap_or(0)
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            event,
        }));
    }

    fn delay(&mut self) -> u64 {
        self.rng.random_range(
            self.config.min_delay_ms..=self.config.max_delay_ms.max(self.config.min_delay_ms),
        )
    }

    fn lost(&mut self) -> bool {
        let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(1.0));
        if lost {
            self.stats.messages_lost += 1;
        }
        lost
    }

    fn alive(&self, addr: &str, incarnation: u64) -> bool {
        self.hosts
            .get(addr)
            .is_some_and(|h| h.incarnation == incarnation)
    }

    /// Processes the next event. False when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(next)) = self.queue.pop() else {
            return false;
        };
        self.now = next.at;
        match next.event {
            Event::Tick {
                host,
                incarnation,
                timer,
            } => {
                if !self.alive(&host, incarnation) {
                    return true;
                }
                let (input, period) = match timer {
                    Timer::Stabilize => (Input::StabilizeTick, self.config.stabilize_ms),
                    Timer::FixFingers => (Input::FixFingersTick, self.config.fix_fingers_ms),
                };
                self.hosts.get_mut(&host).expect("alive").host.step(input);
                self.dispatch(&host);
                let jitter = self.rng.random_range(0..=period / 10);
                self.schedule(
                    period - period / 20 + jitter,
                    Event::Tick {
                        host,
                        incarnation,
                        timer,
                    },
                );
            }
            Event::Deliver {
                from,
                incarnation,
                outgoing,
            } => {
                let to = outgoing.to.clone();
                if !self.hosts.contains_key(&to) || !self.can_talk(&from, &to) {
                    return true;
                }
                let sim_host = self.hosts.get_mut(&to).expect("checked");
                let response = sim_host
                    .host
                    .handle_request(outgoing.member, outgoing.request);
                self.dispatch(&to);
                if !self.lost() && self.can_talk(&to, &from) {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Answer {
                            to: from,
                            incarnation,
                            id: outgoing.id,
                            response,
                        },
                    );
                }
            }
            Event::Answer {
                to,
                incarnation,
                id,
                response,
            } => {
                if !self.alive(&to, incarnation) {
                    return true;
                }
                let sim_host = self.hosts.get_mut(&to).expect("alive");
                if sim_host.pending.remove(&id) {
                    sim_host.host.step(Input::Reply { id, response });
                    self.dispatch(&to);
                }
            }
            Event::Timeout {
                host,
                incarnation,
                id,
            } => {
                if !self.alive(&host, incarnation) {
                    return true;
                }
                let sim_host = self.hosts.get_mut(&host).expect("alive");
                if sim_host.pending.remove(&id) {
                    self.stats.timeouts += 1;
                    sim_host.host.step(Input::Failed { id });
                    self.dispatch(&host);
                }
            }
        }
        true
    }

    /// Sends what `addr`'s host asked to send, and records the rest.
    fn dispatch(&mut self, addr: &str) {
        let Some(sim_host) = self.hosts.get_mut(addr) else {
            return;
        };
        let incarnation = sim_host.incarnation;
        let actions = sim_host.host.take_actions();
        for action in actions {
            match action {
                Action::Send(outgoing) => {
                    self.stats.messages_sent += 1;
                    self.hosts
                        .get_mut(addr)
                        .expect("present")
                        .pending
                        .insert(outgoing.id);
                    let timeout = self.config.timeout_ms;
                    self.schedule(
                        timeout,
                        Event::Timeout {
                            host: addr.to_string(),
                            incarnation,
                            id: outgoing.id,
                        },
                    );
                    if !self.lost() && self.can_talk(addr, &outgoing.to) {
                        let delay = self.delay();
                        self.schedule(
                            delay,
                            Event::Deliver {
                                from: addr.to_string(),
                                incarnation,
                                outgoing,
                            },
                        );
                    }
                }
                Action::LookupDone { token, result } => {
                    self.lookup_results.insert(token, result);
                }
                Action::Notice(notice) => {
                    if self.config.trace {
                        eprintln!("{:>8} ms {addr}: {notice:?}", self.now);
                    }
                    match notice {
                        Notice::SuccessorDead { .. } => self.stats.successor_deaths += 1,
                        Notice::Orphaned { .. } => self.stats.orphaned += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Runs for `ms` simulated milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        self.run_for_checked(ms, |_| Ok::<(), ()>(()))
            .expect("no check");
    }

    /// Runs for `ms` simulated milliseconds, calling `check` after every
    /// event; stops at the first error.
    pub fn run_for_checked<E>(
        &mut self,
        ms: u64,
        mut check: impl FnMut(&Sim) -> Result<(), E>,
    ) -> Result<(), E> {
        let deadline = self.now + ms;
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(next)| next.at <= deadline)
        {
            self.step();
            check(self)?;
        }
        self.now = deadline;
        Ok(())
    }

    /// Runs until the ring is converged, checking invariants after every
    /// event when `check` is set. Returns the simulated time taken, or the
    /// violation, or `None` if `limit_ms` passed first.
    pub fn run_until_converged(
        &mut self,
        limit_ms: u64,
        check: bool,
    ) -> Result<Option<u64>, Violation> {
        let start = self.now;
        let deadline = start + limit_ms;
        // Convergence is checked every simulated 50 ms: checking it after
        // every event would dominate the run time of large rings.
        let mut next_probe = self.now;
        while self.now <= deadline {
            if self.now >= next_probe {
                if self.is_converged() {
                    return Ok(Some(self.now - start));
                }
                next_probe = self.now + 50;
            }
            if !self.step() {
                break;
            }
            if check {
                self.check_ring()?;
            }
        }
        Ok(None)
    }

    /// Looks `target` up from the host at `from`, running the simulation
    /// until the lookup finishes.
    pub fn lookup(&mut self, from: &str, target: Id) -> Result<LookupOutcome, LookupError> {
        let mut results = self.lookup_many(&[(from.to_string(), target)]);
        results.pop().expect("one lookup, one result")
    }

    /// Starts every lookup `(from, target)` at once and runs the simulation
    /// until all have finished; results come back in the same order. Much
    /// cheaper than one at a time in a large ring, whose background traffic
    /// is then shared by all of them.
    pub fn lookup_many(
        &mut self,
        lookups: &[(Addr, Id)],
    ) -> Vec<Result<LookupOutcome, LookupError>> {
        let mut tokens = Vec::with_capacity(lookups.len());
        for (from, target) in lookups {
            let token = self.next_token;
            self.next_token += 1;
            tokens.push(token);
            self.hosts
                .get_mut(from)
                .expect("a live host")
                .host
                .start_lookup(*target, token);
            self.dispatch(from);
        }
        while tokens.iter().any(|t| !self.lookup_results.contains_key(t)) {
            if !self.step() {
                break;
            }
        }
        tokens
            .iter()
            .map(|token| {
                self.lookup_results
                    .remove(token)
                    .unwrap_or(Err(LookupError::NoRoute {
                        unreachable: Vec::new(),
                    }))
            })
            .collect()
    }
}
