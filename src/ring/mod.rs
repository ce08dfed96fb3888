//! The ring protocol: Chord as corrected by Pamela Zave, as a pure state
//! machine. Depends on `id` only: no I/O, no clock, no tokio.
//!
//! A [`Host`] is one process's share of the ring: a handful of virtual nodes
//! ([`Member`]s), each a full ring member with its own identifier, successor
//! list, predecessor and fingers. The host has no sockets and no clock. It is
//! driven by [`Input`]s (timer ticks, answers to its requests, failures of its
//! requests) and by requests from other hosts ([`Host::handle_request`]); it
//! answers with [`Action`]s (requests to send, finished lookups, notices for
//! the log). The runtime in `node` moves those over gRPC; the simulator in
//! `sim` moves them in memory, with loss, delay and crashes chosen by a seed.
//!
//! # The rules, and where they differ from the 2001 paper
//!
//! The original maintenance rules do not keep the ring correct (Zave, "How to
//! Make Chord Correct", 2015; "Reasoning about identifier spaces", 2017). The
//! corrected protocol implemented here:
//!
//! * **Successor lists of length r.** A member's list is its first successor
//!   followed by that successor's list, cut to `r`. The list stops early at
//!   the member itself: in a ring smaller than `r + 1` the list wraps round to
//!   its owner, and that last entry is what lets a two-member ring shrink to
//!   one when the other dies. Nothing else ever makes a member its own
//!   successor: when every entry of a list is dead the member *recovers* by
//!   querying the nearest member its process knows of after it, and if none
//!   answers it leaves and rejoins; it never collapses onto itself.
//! * **Never adopt an unqueried pointer.** A new first successor is adopted
//!   only from that member's own answer: stabilize asks the successor, and if
//!   the successor's predecessor lies strictly between, asks *that* member
//!   before adopting it. Recovery and join do the same.
//! * **Join** looks up the member's own identifier (iteratively asking for the
//!   best predecessor until one answers `Found`), takes the first live entry
//!   `s` of that predecessor's list, asks `s` for its list and adopts `s`
//!   followed by it. The predecessor starts empty; the first stabilize
//!   notifies `s`.
//! * **Stabilize** (periodic) asks the first successor for its predecessor
//!   and list. No answer after `query_attempts` tries means dead: drop it and
//!   go on with the next entry. It always ends by notifying the first
//!   successor.
//! * **Rectify** replaces notify: a member notified by `p` takes `p` as its
//!   predecessor if it has none or `p` is strictly between; otherwise it pings
//!   its current predecessor and takes `p` only if that one is dead.
//! * **Atomicity.** A member has at most one state-changing query outstanding
//!   (join, stabilize, rectify, recover). Meanwhile it answers `Pending` to
//!   `GetState`, so nobody copies a list that is half updated, but it answers
//!   `Ping` at once so it is never presumed dead for being busy.
//!
//! Lookups are iterative ([`lookup`]) and use the closest preceding entry
//! among *all* tables of the process: every member's successor list,
//! predecessor and fingers. Hops are counted per process.

//!
//! # Where things are
//!
//! This file holds the public types and the entry points of [`Host`]. Each
//! phase of the protocol is an `impl Host` block in a file of its own, with
//! the query that starts it beside the handling of its answer:
//!
//! * `join.rs`: joining, from the lookup of the member's own id to adopting
//!   its successor's list, and the retries and back-off between attempts.
//! * `stabilize.rs`: stabilize, recover and rectify.
//! * `lost.rs`: members presumed dead, probed until they answer again, and
//!   members that announced their departure.
//! * `fingers.rs`: refreshing finger tables.
//! * `serve.rs`: answering requests, from other hosts and from siblings.
//! * `answers.rs`: sending requests and taking each answer back to whoever
//!   waits for it, including a member's one outstanding operation (`Op`).
//! * `lookup_tasks.rs`: driving the host's [`lookup`]s in flight.
//! * `member.rs`: the tables of one [`Member`].

mod answers;
mod fingers;
mod join;
pub mod lookup;
mod lookup_tasks;
mod lost;
mod member;
pub mod message;
mod serve;
mod stabilize;

pub use lookup::{Lookup, LookupError, LookupOutcome, Next};
pub use member::Member;
pub use message::{
    validate_addr, Addr, NodeRef, Outgoing, Request, RequestId, Response, MAX_ADDR_LEN,
};

use crate::id::Id;
use answers::Waiter;
use lookup_tasks::{LookupTask, Purpose};
use lost::Lost;
use std::collections::{HashMap, HashSet, VecDeque};

/// Protocol parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `r`: the length of every successor list.
    pub successors: usize,
    /// A lookup that has not finished after this many hops fails.
    pub max_lookup_hops: usize,
    /// Tries of a query before its target is presumed dead (so one lost
    /// message does not evict a live successor).
    pub query_attempts: u32,
    /// Upper bound, in stabilize ticks, of the wait between join attempts.
    pub max_join_backoff_ticks: u32,
    /// Candidates returned by one `FindStep` that cannot answer itself.
    pub lookup_candidates: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            successors: 4,
            max_lookup_hops: 64,
            query_attempts: 3,
            max_join_backoff_ticks: 32,
            lookup_candidates: 3,
        }
    }
}

/// Something that happens to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time to stabilize (and, for members not yet in the ring, to try
    /// joining).
    StabilizeTick,
    /// Time to refresh one finger per member.
    FixFingersTick,
    /// The request `id` was answered.
    Reply { id: RequestId, response: Response },
    /// The request `id` got no answer: timeout, refused connection, or loss.
    Failed { id: RequestId },
}

/// Something the host wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a request; answer with [`Input::Reply`] or [`Input::Failed`].
    Send(Outgoing),
    /// A lookup started with [`Host::start_lookup`] finished.
    LookupDone {
        token: u64,
        result: Result<LookupOutcome, LookupError>,
    },
    /// A membership event worth logging.
    Notice(Notice),
}

/// Membership events, for logs and dashboards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// This member started a new ring.
    Created { member: NodeRef },
    /// This member joined the ring before `successor`, whose predecessor
    /// was then `before`: the member's arc is `(before, member]`, and
    /// `successor` held it until now.
    Joined {
        member: NodeRef,
        successor: NodeRef,
        before: Option<NodeRef>,
    },
    /// A join attempt failed; the next one comes after `retry_in_ticks`.
    JoinFailed {
        member: Id,
        error: String,
        retry_in_ticks: u32,
    },
    /// The first successor changed.
    SuccessorChanged {
        member: Id,
        from: Option<NodeRef>,
        to: NodeRef,
    },
    /// The predecessor changed.
    PredecessorChanged {
        member: Id,
        from: Option<NodeRef>,
        to: Option<NodeRef>,
    },
    /// A successor stopped answering and was dropped.
    SuccessorDead { member: Id, dead: NodeRef },
    /// Every member this process knows after `member` is dead; it rejoins.
    Orphaned { member: Id },
}

/// One process's members and everything they have in flight.
#[derive(Debug)]
pub struct Host {
    addr: Addr,
    config: Config,
    members: Vec<Member>,
    /// Bootstrap addresses other than our own, tried in order.
    seeds: Vec<Addr>,
    /// Our own address was among the seeds: start a ring if no seed answers.
    may_create: bool,
    next_request: RequestId,
    inflight: HashMap<RequestId, (Waiter, Addr)>,
    lookups: HashMap<u64, LookupTask>,
    next_lookup: u64,
    /// Requests to our own address, delivered without the network.
    local: VecDeque<Outgoing>,
    actions: Vec<Action>,
    leave_pending: HashSet<RequestId>,
    /// Members presumed dead, still probed now and then: after a partition
    /// heals, they are how the two rings find each other again.
    lost: Vec<Lost>,
    /// Lost members that answered a probe, waiting to be adopted by a
    /// member they fall just after.
    revived: Vec<Lost>,
    /// Members that told us they were leaving, for a few ticks.
    departed: Vec<Lost>,
    probe_cursor: usize,
    /// Stabilize ticks seen.
    ticks: u64,
}

impl Host {
    /// A host at `addr` with one member per id. `seeds` are bootstrap
    /// addresses tried in order; if `addr` is among them (or there are none),
    /// the host starts a new ring when no other seed answers.
    pub fn new(addr: impl Into<Addr>, ids: &[Id], seeds: &[Addr], config: Config) -> Host {
        let addr = addr.into();
        assert!(
            config.successors >= 1,
            "a successor list needs at least one entry"
        );
        let members = ids
            .iter()
            .map(|&id| Member::new(NodeRef::new(id, addr.clone())))
            .collect();
        let may_create = seeds.is_empty() || seeds.contains(&addr);
        let mut remote_seeds = Vec::new();
        for seed in seeds {
            if *seed != addr && !remote_seeds.contains(seed) {
                remote_seeds.push(seed.clone());
            }
        }
        Host {
            addr,
            config,
            members,
            seeds: remote_seeds,
            may_create,
            next_request: 1,
            inflight: HashMap::new(),
            lookups: HashMap::new(),
            next_lookup: 1,
            local: VecDeque::new(),
            actions: Vec::new(),
            leave_pending: HashSet::new(),
            lost: Vec::new(),
            revived: Vec::new(),
            departed: Vec::new(),
            probe_cursor: 0,
            ticks: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: Id) -> Option<&Member> {
        self.members.iter().find(|m| m.me.id == id)
    }

    /// Addresses of other processes this host knows, for rejoining after a
    /// restart.
    pub fn known_addrs(&self) -> Vec<Addr> {
        let mut addrs: Vec<Addr> = Vec::new();
        for member in &self.members {
            for entry in member.known_entries() {
                if entry.addr != self.addr && !addrs.contains(&entry.addr) {
                    addrs.push(entry.addr.clone());
                }
            }
        }
        addrs
    }

    /// Actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Feeds one input.
    pub fn step(&mut self, input: Input) {
        match input {
            Input::StabilizeTick => self.on_stabilize_tick(),
            Input::FixFingersTick => self.on_fix_fingers_tick(),
            Input::Reply { id, response } => self.on_answer(id, Some(response)),
            Input::Failed { id } => self.on_answer(id, None),
        }
        self.deliver_local();
    }

    /// Answers a request from another host. `member` names the addressed
    /// member for member requests.
    pub fn handle_request(&mut self, member: Option<Id>, request: Request) -> Response {
        let response = self.answer(member, request);
        self.deliver_local();
        response
    }

    /// Starts a lookup of `target` on behalf of a client; the result comes
    /// back as [`Action::LookupDone`] with `token`.
    pub fn start_lookup(&mut self, target: Id, token: u64) {
        self.begin_lookup(target, Purpose::Client { token }, None);
        self.deliver_local();
    }

    /// Leaves the ring gracefully: every member tells its predecessor and
    /// successor, and stops answering as a member. Poll
    /// [`Host::leave_complete`] for the acknowledgements.
    pub fn leave(&mut self) {
        for index in 0..self.members.len() {
            let member = &mut self.members[index];
            if !member.is_joined() {
                member.leaving = true;
                continue;
            }
            member.leaving = true;
            let me = member.me.clone();
            let mut neighbours: Vec<NodeRef> = member.predecessor.iter().cloned().collect();
            neighbours.extend(member.successors.first().cloned());
            for neighbour in neighbours {
                // Sibling members are leaving too; only other processes care.
                if neighbour.addr == self.addr {
                    continue;
                }
                let id = self.send(
                    &neighbour,
                    Request::Leaving {
                        leaving: me.clone(),
                    },
                    Waiter::Leave,
                );
                self.leave_pending.insert(id);
            }
        }
        self.deliver_local();
    }

    /// Whether every leave notice has been answered or has failed.
    pub fn leave_complete(&self) -> bool {
        self.leave_pending.is_empty()
    }

    // ----- timers ---------------------------------------------------------

    fn on_stabilize_tick(&mut self) {
        self.probe_lost();
        self.ticks += 1;
        for index in self.stabilize_order() {
            let member = &mut self.members[index];
            if member.leaving {
                continue;
            }
            if member.op.is_some() {
                member.op_age += 1;
                // Every request ends in a reply or a failure, so this only
                // fires if a driver lost one; never wedge a member for it.
                if member.op_age > 4 * self.config.query_attempts + 8 {
                    tracing::warn!(member = %member.me.id, "abandoning a stuck operation");
                    self.end_op(index);
                }
                continue;
            }
            if member.successors.is_empty() {
                self.try_join(index);
            } else {
                self.start_stabilize(index);
            }
            // Finish exchanges between sibling members before the next
            // sibling starts its own (see `stabilize_order`).
            self.deliver_local();
        }
    }

    /// The order in which members start stabilizing on a tick: ascending
    /// ids, so a member usually asks a sibling successor before that sibling
    /// is busy with its own query (a busy member answers `Pending`, and a
    /// fixed order would starve the member behind a busy sibling forever).
    /// The start rotates every tick so the one member whose successor wraps
    /// round is not always the one left waiting.
    fn stabilize_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by_key(|&index| self.members[index].me.id);
        if !order.is_empty() {
            let rotation = (self.ticks % order.len() as u64) as usize;
            order.rotate_left(rotation);
        }
        order
    }

    fn notice(&mut self, notice: Notice) {
        self.actions.push(Action::Notice(notice));
    }
}

/// The successor list a member adopts from `head` and head's own list:
/// `head` followed by its list, cut to `r`. The list must go clockwise from
/// the member and at most once round: it ends early where it comes back to
/// the member itself (a ring smaller than `r + 1`; that entry is kept), and
/// where an entry would pass over the member or fail to move clockwise (the
/// head's view of the ring is stale: the rest is not adopted).
pub fn successor_list(me: &NodeRef, head: &NodeRef, tail: &[NodeRef], r: usize) -> Vec<NodeRef> {
    let mut list = vec![head.clone()];
    if head.id == me.id {
        return list;
    }
    let mut reach = me.id.distance_to(head.id);
    for entry in tail {
        if list.len() >= r {
            break;
        }
        if entry.id == me.id {
            list.push(entry.clone());
            break;
        }
        let distance = me.id.distance_to(entry.id);
        if distance <= reach {
            break;
        }
        reach = distance;
        list.push(entry.clone());
    }
    list
}

#[cfg(test)]
mod tests;
