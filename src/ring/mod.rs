//! The ring protocol: Chord as corrected by Pamela Zave, as a pure state
//! machine.
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

pub mod lookup;
pub mod message;

pub use lookup::{Lookup, LookupError, LookupOutcome, Next};
pub use message::{
    validate_addr, Addr, NodeRef, Outgoing, Request, RequestId, Response, MAX_ADDR_LEN,
};

use crate::id::{between_open, between_open_closed, Id};
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

/// One virtual node: a full ring member.
#[derive(Clone, Debug)]
pub struct Member {
    me: NodeRef,
    /// Empty until joined.
    successors: Vec<NodeRef>,
    predecessor: Option<NodeRef>,
    fingers: Vec<Option<NodeRef>>,
    next_finger: usize,
    finger_lookup: bool,
    /// The one outstanding state-changing query.
    op: Option<Op>,
    /// Stabilize ticks the current operation has been outstanding.
    op_age: u32,
    /// A notification that arrived while `op` was busy.
    deferred_notify: Option<NodeRef>,
    join: JoinProgress,
    leaving: bool,
}

impl Member {
    fn new(me: NodeRef) -> Member {
        Member {
            me,
            successors: Vec::new(),
            predecessor: None,
            fingers: vec![None; Id::BITS],
            next_finger: 0,
            finger_lookup: false,
            op: None,
            op_age: 0,
            deferred_notify: None,
            join: JoinProgress::default(),
            leaving: false,
        }
    }

    pub fn me(&self) -> &NodeRef {
        &self.me
    }

    pub fn id(&self) -> Id {
        self.me.id
    }

    pub fn successors(&self) -> &[NodeRef] {
        &self.successors
    }

    pub fn successor(&self) -> Option<&NodeRef> {
        self.successors.first()
    }

    pub fn predecessor(&self) -> Option<&NodeRef> {
        self.predecessor.as_ref()
    }

    /// Finger `i` points at the owner of `id + 2^i`, when known and not self.
    pub fn fingers(&self) -> &[Option<NodeRef>] {
        &self.fingers
    }

    /// The distinct members the finger table points at, in table order.
    pub fn fingers_in_use(&self) -> Vec<NodeRef> {
        let mut seen = HashSet::new();
        self.fingers
            .iter()
            .flatten()
            .filter(|f| seen.insert(f.id))
            .cloned()
            .collect()
    }

    /// In the ring: has a successor list and is not leaving.
    pub fn is_joined(&self) -> bool {
        !self.successors.is_empty() && !self.leaving
    }

    fn known_entries(&self) -> impl Iterator<Item = &NodeRef> {
        self.successors
            .iter()
            .chain(self.predecessor.iter())
            .chain(self.fingers.iter().flatten())
    }

    fn forget(&mut self, id: Id) {
        for finger in &mut self.fingers {
            if finger.as_ref().is_some_and(|f| f.id == id) {
                *finger = None;
            }
        }
        if self.predecessor.as_ref().is_some_and(|p| p.id == id) {
            self.predecessor = None;
        }
        self.successors.retain(|s| s.id != id);
    }
}

#[derive(Clone, Debug, Default)]
struct JoinProgress {
    failures: u32,
    wait_ticks: u32,
    /// Index into the host's remote seeds of the next one to try.
    seed_cursor: usize,
}

/// Progress of a recovery.
#[derive(Clone, Debug)]
struct Recovery {
    /// Candidates not asked yet, nearest after us first.
    rest: Vec<NodeRef>,
    /// The list adopted from the nearest candidate that answered but named
    /// us: used only if no candidate ahead of us answers without naming us.
    fallback: Option<Vec<NodeRef>>,
    /// Candidates that answered `Pending` and were put back once.
    busy: Vec<Id>,
}

#[derive(Clone, Debug)]
enum Op {
    /// Looking up our own id.
    JoinLocating { lookup: u64 },
    /// Asking `asking` (the first live successor candidate) for its list.
    JoinFetching {
        asking: NodeRef,
        rest: Vec<NodeRef>,
        request: RequestId,
    },
    /// Asking the first successor for its predecessor and list.
    StabilizeSuccessor {
        successor: NodeRef,
        attempt: u32,
        request: RequestId,
    },
    /// Asking a member found strictly between us and our successor (or our
    /// predecessor, in a one-member ring) before adopting it.
    StabilizeBetween {
        candidate: NodeRef,
        fallback: Vec<NodeRef>,
        request: RequestId,
    },
    /// Pinging our predecessor because `candidate` claims to precede us.
    Rectify {
        candidate: NodeRef,
        checking: NodeRef,
        attempt: u32,
        request: RequestId,
    },
    /// Every successor is dead: asking the nearest known members after us.
    Recover {
        asking: NodeRef,
        recovery: Recovery,
        request: RequestId,
    },
}

impl Op {
    /// The member the outstanding query went to.
    fn asked(&self) -> Option<&NodeRef> {
        match self {
            Op::JoinLocating { .. } => None,
            Op::JoinFetching { asking, .. } | Op::Recover { asking, .. } => Some(asking),
            Op::StabilizeSuccessor { successor, .. } => Some(successor),
            Op::StabilizeBetween { candidate, .. } => Some(candidate),
            Op::Rectify { checking, .. } => Some(checking),
        }
    }

    fn request(&self) -> Option<RequestId> {
        match self {
            Op::JoinLocating { .. } => None,
            Op::JoinFetching { request, .. }
            | Op::StabilizeSuccessor { request, .. }
            | Op::StabilizeBetween { request, .. }
            | Op::Rectify { request, .. }
            | Op::Recover { request, .. } => Some(*request),
        }
    }
}

/// Who waits for the answer to a request.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    Member(usize),
    Lookup(u64),
    /// Notifications and leave notices: the answer changes nothing.
    Nobody,
    Leave,
    /// A ping to a member presumed dead, to see whether it came back.
    Probe(Id),
}

#[derive(Clone, Debug)]
enum Purpose {
    Join { member: usize },
    Finger { member: usize, index: usize },
    Client { token: u64 },
}

#[derive(Clone, Debug)]
struct LookupTask {
    lookup: Lookup,
    purpose: Purpose,
    asking: Option<Addr>,
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

#[derive(Clone, Debug)]
struct Lost {
    node: NodeRef,
    ticks_left: u32,
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

    // ----- answering requests -------------------------------------------

    fn answer(&mut self, member: Option<Id>, request: Request) -> Response {
        if let Request::FindStep { target } = request {
            return self.find_step(target);
        }
        let Some(index) = member.and_then(|id| self.members.iter().position(|m| m.me.id == id))
        else {
            return Response::NotMember;
        };
        match request {
            Request::Ping if self.members[index].is_joined() => Response::Pong,
            Request::GetState if self.members[index].is_joined() => {
                let member = &self.members[index];
                if member.op.is_some() {
                    Response::Pending
                } else {
                    Response::State {
                        predecessor: member.predecessor.clone(),
                        successors: member.successors.clone(),
                    }
                }
            }
            Request::Notify { from } if self.members[index].is_joined() => {
                self.rectify(index, from);
                Response::Ack
            }
            Request::Leaving { leaving } => {
                self.on_leaving(index, leaving);
                Response::Ack
            }
            _ => Response::NotMember,
        }
    }

    /// One lookup step answered from every table of this process.
    fn find_step(&self, target: Id) -> Response {
        let joined = || self.members.iter().filter(|m| m.is_joined());
        if joined().next().is_none() {
            return Response::NotMember;
        }
        // A local member whose arc holds the target: the nearest one wins.
        let owner_side = joined()
            .filter(|m| between_open_closed(m.me.id, target, m.successors[0].id))
            .min_by_key(|m| m.me.id.distance_to(target));
        if let Some(member) = owner_side {
            return Response::Found {
                predecessor: member.me.clone(),
                successors: member.successors.clone(),
            };
        }
        // Otherwise the closest preceding entries, the best one per process.
        let mut entries: Vec<&NodeRef> = joined()
            .flat_map(|m| m.known_entries())
            .filter(|entry| entry.id != target && entry.addr != self.addr)
            .collect();
        entries.sort_unstable_by_key(|entry| (entry.id.distance_to(target), entry.id));
        let mut candidates: Vec<NodeRef> = Vec::with_capacity(self.config.lookup_candidates);
        for entry in entries {
            if candidates.len() == self.config.lookup_candidates {
                break;
            }
            if !candidates.iter().any(|c| c.addr == entry.addr) {
                candidates.push(entry.clone());
            }
        }
        Response::Closer { candidates }
    }

    fn on_leaving(&mut self, index: usize, leaving: NodeRef) {
        let member = &self.members[index];
        let is_neighbour = |node: &NodeRef| node.id == leaving.id && node.addr == leaving.addr;
        // Only a neighbour's own departure counts: nobody else can make a
        // member drop the pointers it relies on.
        if !member.predecessor.as_ref().is_some_and(is_neighbour)
            && !member.successors.iter().any(is_neighbour)
        {
            return;
        }
        if !self.is_departed(leaving.id) {
            self.departed.push(Lost {
                node: leaving.clone(),
                ticks_left: Self::DEPARTED_TICKS,
            });
            if self.departed.len() > Self::MAX_LOST {
                self.departed.remove(0);
            }
        }
        let member = &mut self.members[index];
        let me = member.me.id;
        let was_predecessor = member
            .predecessor
            .as_ref()
            .is_some_and(|p| p.id == leaving.id);
        // Drop the leaver from the list only if a successor other than
        // ourselves remains; otherwise stabilize finds it gone and goes
        // through recovery, which checks before concluding we are alone.
        let remaining: Vec<NodeRef> = member
            .successors
            .iter()
            .filter(|s| s.id != leaving.id)
            .cloned()
            .collect();
        if remaining.first().is_some_and(|head| head.id != me) {
            member.successors = remaining;
        }
        for finger in &mut member.fingers {
            if finger.as_ref().is_some_and(|f| f.id == leaving.id) {
                *finger = None;
            }
        }
        if was_predecessor {
            self.set_predecessor(index, None);
        }
        if self.members[index].op.is_none() && self.members[index].is_joined() {
            self.start_stabilize(index);
        }
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

    fn on_fix_fingers_tick(&mut self) {
        for index in 0..self.members.len() {
            let member = &mut self.members[index];
            if !member.is_joined() || member.finger_lookup {
                continue;
            }
            let me = member.me.id;
            let successor = member.successors[0].clone();
            // Fingers whose start falls before the successor are the
            // successor: fill them without asking anyone.
            let mut skipped = 0;
            while skipped < Id::BITS {
                let index_to_fix = member.next_finger;
                let start = me.finger_start(index_to_fix);
                if !between_open_closed(me, start, successor.id) {
                    break;
                }
                member.fingers[index_to_fix] = (successor.id != me).then(|| successor.clone());
                member.next_finger = (index_to_fix + 1) % Id::BITS;
                skipped += 1;
            }
            if skipped == Id::BITS {
                continue;
            }
            member.finger_lookup = true;
            let finger = member.next_finger;
            self.begin_lookup(
                me.finger_start(finger),
                Purpose::Finger {
                    member: index,
                    index: finger,
                },
                None,
            );
        }
    }

    // ----- join -----------------------------------------------------------

    fn try_join(&mut self, index: usize) {
        let member = &mut self.members[index];
        if member.join.wait_ticks > 0 {
            member.join.wait_ticks -= 1;
            return;
        }
        let target = member.me.id;
        if self.members.iter().any(Member::is_joined) {
            // A sibling is in the ring: our own tables route the lookup.
            self.begin_lookup(target, Purpose::Join { member: index }, None);
            return;
        }
        let cursor = self.members[index].join.seed_cursor;
        if let Some(seed) = self.seeds.get(cursor).cloned() {
            self.begin_lookup(target, Purpose::Join { member: index }, Some(seed));
        } else if self.may_create {
            self.create(index);
        } else {
            self.join_failed(index, "no bootstrap node configured".into());
        }
    }

    fn create(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.successors = vec![member.me.clone()];
        member.predecessor = None;
        member.join = JoinProgress::default();
        let me = member.me.clone();
        self.notice(Notice::Created { member: me });
    }

    /// The current join attempt failed; move to the next seed, or back off.
    fn join_failed(&mut self, index: usize, error: String) {
        let seeds = self.seeds.len();
        let may_create = self.may_create;
        let member = &mut self.members[index];
        member.join.seed_cursor += 1;
        if member.join.seed_cursor < seeds {
            // Next seed at the next tick.
            let id = member.me.id;
            self.notice(Notice::JoinFailed {
                member: id,
                error,
                retry_in_ticks: 1,
            });
            return;
        }
        if may_create && !self.members.iter().any(Member::is_joined) {
            // Every other seed is silent and we are our own bootstrap.
            self.create(index);
            return;
        }
        let member = &mut self.members[index];
        member.join.seed_cursor = 0;
        member.join.failures += 1;
        let backoff = 1u32
            .checked_shl(member.join.failures.min(16))
            .unwrap_or(u32::MAX)
            .min(self.config.max_join_backoff_ticks.max(1));
        member.join.wait_ticks = backoff;
        let id = member.me.id;
        self.notice(Notice::JoinFailed {
            member: id,
            error,
            retry_in_ticks: backoff,
        });
    }

    fn on_join_located(&mut self, index: usize, result: Result<LookupOutcome, LookupError>) {
        self.members[index].op = None;
        match result {
            Ok(outcome) => {
                let me = self.members[index].me.id;
                let mut candidates: Vec<NodeRef> = outcome
                    .successors
                    .into_iter()
                    .filter(|s| s.id != me)
                    .collect();
                if candidates.is_empty() {
                    self.join_failed(index, "the ring has no member to join before".into());
                    return;
                }
                let first = candidates.remove(0);
                self.fetch_for_join(index, first, candidates);
            }
            Err(error) => self.join_failed(index, error.to_string()),
        }
    }

    fn fetch_for_join(&mut self, index: usize, asking: NodeRef, rest: Vec<NodeRef>) {
        let request = self.send(&asking, Request::GetState, Waiter::Member(index));
        self.set_op(
            index,
            Op::JoinFetching {
                asking,
                rest,
                request,
            },
        );
    }

    // ----- stabilize ------------------------------------------------------

    fn start_stabilize(&mut self, index: usize) {
        let member = &self.members[index];
        let Some(successor) = member.successors.first().cloned() else {
            return;
        };
        if successor.id == member.me.id {
            // Alone in the ring: our predecessor, if any, is a newcomer that
            // notified us; it is also our successor once it answers.
            if let Some(predecessor) = member.predecessor.clone() {
                let fallback = member.successors.clone();
                let request = self.send(&predecessor, Request::GetState, Waiter::Member(index));
                self.set_op(
                    index,
                    Op::StabilizeBetween {
                        candidate: predecessor,
                        fallback,
                        request,
                    },
                );
            }
            return;
        }
        let request = self.send(&successor, Request::GetState, Waiter::Member(index));
        self.set_op(
            index,
            Op::StabilizeSuccessor {
                successor,
                attempt: 1,
                request,
            },
        );
    }

    /// Adopts `successors`, ends the operation and notifies the successor.
    fn finish_stabilize(&mut self, index: usize, successors: Vec<NodeRef>) {
        let member = &mut self.members[index];
        let old = member.successors.first().cloned();
        member.successors = successors;
        let first = member.successors[0].clone();
        let me = member.me.clone();
        if old.as_ref().map(|o| o.id) != Some(first.id) {
            self.notice(Notice::SuccessorChanged {
                member: me.id,
                from: old,
                to: first.clone(),
            });
        }
        self.end_op(index);
        if first.id != me.id {
            self.send(&first, Request::Notify { from: me }, Waiter::Nobody);
        }
    }

    /// `dead` did not answer as our successor: drop it and go on.
    fn successor_dead(&mut self, index: usize, dead: NodeRef) {
        self.remember_lost(&dead);
        let member = &mut self.members[index];
        member.forget(dead.id);
        let id = member.me.id;
        // Keep the dead entry as a placeholder while recovering, so that the
        // member stays in the ring (answering `Ping`, and `Pending` to
        // `GetState`) instead of looking dead to its own neighbours.
        let exhausted = member.successors.is_empty();
        if exhausted {
            member.successors.push(dead.clone());
        }
        let alone = member.successors[0].id == id;
        self.notice(Notice::SuccessorDead { member: id, dead });
        // A new operation follows at once; a notification that waited for
        // the old one keeps waiting for the new one.
        self.clear_op(index);
        if exhausted || alone {
            // The list ran out, or came round to us: before concluding that
            // we are alone, make sure nobody we know of ahead of us is alive
            // (lists can skip live members after false suspicions, and a
            // member that wrongly believes itself alone splits the ring).
            self.start_recover(index);
        } else {
            self.start_stabilize(index);
        }
    }

    // ----- recover --------------------------------------------------------

    /// Every successor is dead. Ask the members this process knows of, the
    /// nearest after us first, and adopt the first that answers with a list
    /// that does not name us; stabilize then walks back to the true
    /// successor. Never adopt ourselves unless our own list said the ring
    /// comes round to us and nobody else answers.
    fn start_recover(&mut self, index: usize) {
        let me = self.members[index].me.id;
        let presumed_dead: HashSet<Id> = self.lost.iter().map(|l| l.node.id).collect();
        let placeholder = self.members[index].successors[0].id;
        let mut candidates: Vec<NodeRef> = Vec::new();
        for member in &self.members {
            let own = std::iter::once(&member.me).filter(|_| member.is_joined());
            for entry in own.chain(member.known_entries()) {
                let useless =
                    entry.id == me || entry.id == placeholder || presumed_dead.contains(&entry.id);
                if !useless && !candidates.iter().any(|c| c.id == entry.id) {
                    candidates.push(entry.clone());
                }
            }
        }
        candidates.sort_by_key(|c| me.distance_to(c.id));
        let recovery = Recovery {
            rest: candidates,
            fallback: None,
            busy: Vec::new(),
        };
        self.recover_next(index, recovery);
    }

    fn recover_next(&mut self, index: usize, mut recovery: Recovery) {
        if recovery.rest.is_empty() {
            if let Some(list) = recovery.fallback {
                // Everyone who answered names us among its next successors:
                // the ring really is that small. Take the nearest of them.
                self.finish_stabilize(index, list);
                return;
            }
            let member = &mut self.members[index];
            if member.successors[0].id == member.me.id {
                // The list said the ring comes round to us, and nobody ahead
                // of us answers: we really are alone.
                let me = member.me.clone();
                self.end_op(index);
                self.notice(Notice::SuccessorChanged {
                    member: me.id,
                    from: None,
                    to: me,
                });
                return;
            }
            member.successors.clear();
            member.predecessor = None;
            member.join = JoinProgress::default();
            let id = member.me.id;
            self.end_op(index);
            self.notice(Notice::Orphaned { member: id });
            return;
        }
        let asking = recovery.rest.remove(0);
        let request = self.send(&asking, Request::GetState, Waiter::Member(index));
        self.set_op(
            index,
            Op::Recover {
                asking,
                recovery,
                request,
            },
        );
    }

    // ----- rectify --------------------------------------------------------

    fn rectify(&mut self, index: usize, candidate: NodeRef) {
        if self.is_departed(candidate.id) {
            return; // a notification sent just before its sender left
        }
        let member = &mut self.members[index];
        if candidate.id == member.me.id {
            return;
        }
        match member.predecessor.clone() {
            Some(current) if current.id == candidate.id => {}
            Some(current) if !between_open(current.id, candidate.id, member.me.id) => {
                // Keep the current predecessor unless it is dead.
                if member.op.is_some() {
                    member.deferred_notify = Some(candidate);
                } else {
                    let request = self.send(&current, Request::Ping, Waiter::Member(index));
                    self.set_op(
                        index,
                        Op::Rectify {
                            candidate,
                            checking: current,
                            attempt: 1,
                            request,
                        },
                    );
                }
            }
            _ => self.set_predecessor(index, Some(candidate)),
        }
    }

    /// `dead` did not answer: if it is still our predecessor, replace it.
    fn predecessor_dead(&mut self, index: usize, dead: &NodeRef, replacement: Option<NodeRef>) {
        let member = &self.members[index];
        if member.predecessor.as_ref().is_some_and(|p| p.id == dead.id) {
            self.remember_lost(dead);
            self.set_predecessor(index, replacement);
        }
    }

    fn set_predecessor(&mut self, index: usize, to: Option<NodeRef>) {
        let member = &mut self.members[index];
        let from = std::mem::replace(&mut member.predecessor, to.clone());
        if from.as_ref().map(|f| f.id) != to.as_ref().map(|t| t.id) {
            let id = member.me.id;
            self.notice(Notice::PredecessorChanged {
                member: id,
                from,
                to,
            });
        }
    }

    // ----- lost members -----------------------------------------------------

    /// How long, in stabilize ticks, a member presumed dead is still probed.
    const LOST_TICKS: u32 = 1200;
    const MAX_LOST: usize = 64;
    /// How long a member that announced its departure is refused: long
    /// enough for its last messages in flight to arrive, short enough that
    /// it can restart and rejoin as itself soon after.
    const DEPARTED_TICKS: u32 = 6;
    /// How long a revived member waits to be adopted.
    const REVIVED_TICKS: u32 = 4;

    fn is_departed(&self, id: Id) -> bool {
        self.departed.iter().any(|d| d.node.id == id)
    }

    fn remember_lost(&mut self, node: &NodeRef) {
        if self.members.iter().any(|m| m.me.id == node.id) {
            return;
        }
        self.lost.retain(|l| l.node.id != node.id);
        if self.lost.len() >= Self::MAX_LOST {
            self.lost.remove(0);
        }
        self.lost.push(Lost {
            node: node.clone(),
            ticks_left: Self::LOST_TICKS,
        });
    }

    /// Ages the lost members and pings one of them. A ping does not change
    /// state, so it goes out beside any member's outstanding operation.
    fn probe_lost(&mut self) {
        for lost in &mut self.lost {
            lost.ticks_left = lost.ticks_left.saturating_sub(1);
        }
        self.lost.retain(|l| l.ticks_left > 0);
        for revived in &mut self.revived {
            revived.ticks_left = revived.ticks_left.saturating_sub(1);
        }
        self.revived.retain(|r| r.ticks_left > 0);
        for departed in &mut self.departed {
            departed.ticks_left = departed.ticks_left.saturating_sub(1);
        }
        self.departed.retain(|d| d.ticks_left > 0);
        if self.lost.is_empty() {
            return;
        }
        self.probe_cursor = (self.probe_cursor + 1) % self.lost.len();
        let node = self.lost[self.probe_cursor].node.clone();
        self.send(&node, Request::Ping, Waiter::Probe(node.id));
    }

    fn on_probe_answer(&mut self, id: Id, response: Option<Response>) {
        if response != Some(Response::Pong) {
            return;
        }
        if let Some(position) = self.lost.iter().position(|l| l.node.id == id) {
            let mut lost = self.lost.remove(position);
            lost.ticks_left = Self::REVIVED_TICKS;
            self.revived.push(lost);
        }
    }

    /// A revived member strictly between `me` and `successor`, nearest to
    /// `me`; stabilize queries it before adopting it, like any other.
    fn take_revived_between(&mut self, me: Id, successor: Id) -> Option<NodeRef> {
        let position = self
            .revived
            .iter()
            .enumerate()
            .filter(|(_, r)| between_open(me, r.node.id, successor))
            .min_by_key(|(_, r)| me.distance_to(r.node.id))
            .map(|(position, _)| position)?;
        Some(self.revived.remove(position).node)
    }

    // ----- answers --------------------------------------------------------

    fn on_answer(&mut self, id: RequestId, response: Option<Response>) {
        let Some((waiter, from)) = self.inflight.remove(&id) else {
            return;
        };
        match waiter {
            Waiter::Member(index) => self.on_member_answer(index, id, response),
            Waiter::Lookup(lookup) => {
                if let Some(task) = self.lookups.get_mut(&lookup) {
                    match response {
                        Some(answer) => task.lookup.on_answer(&from, answer),
                        None => task.lookup.on_failure(&from),
                    }
                    task.asking = None;
                    self.drive_lookup(lookup);
                }
            }
            Waiter::Leave => {
                self.leave_pending.remove(&id);
            }
            Waiter::Probe(lost) => self.on_probe_answer(lost, response),
            Waiter::Nobody => {}
        }
    }

    fn on_member_answer(&mut self, index: usize, id: RequestId, response: Option<Response>) {
        let Some(op) = self.members[index].op.clone() else {
            return;
        };
        if op.request() != Some(id) {
            return; // an answer to an operation already abandoned
        }
        // Members that announced their departure are never adopted again,
        // not from a stale list, and not from an answer they sent just
        // before they left.
        let departed = |node: &NodeRef| self.is_departed(node.id);
        let response = match op.asked() {
            Some(asked) if departed(asked) => Some(Response::NotMember),
            _ => response,
        };
        let state = match &response {
            Some(Response::State {
                predecessor,
                successors,
            }) if !successors.is_empty() => Some((
                predecessor.clone().filter(|p| !departed(p)),
                successors
                    .iter()
                    .filter(|s| !departed(s))
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        };
        let me = self.members[index].me.clone();
        let r = self.config.successors;
        match op {
            Op::JoinLocating { .. } => {}
            Op::JoinFetching {
                asking, mut rest, ..
            } => match (state, response) {
                (Some((before, list)), _) => {
                    let successors = successor_list(&me, &asking, &list, r);
                    let member = &mut self.members[index];
                    member.successors = successors;
                    member.join = JoinProgress::default();
                    self.end_op(index);
                    self.notice(Notice::Joined {
                        member: me,
                        successor: asking,
                        before,
                    });
                    // Notify the successor now rather than a tick later.
                    self.start_stabilize(index);
                }
                (None, Some(Response::Pending)) => {
                    self.end_op(index); // busy: try the whole join again next tick
                }
                _ if !rest.is_empty() => {
                    let next = rest.remove(0);
                    self.fetch_for_join(index, next, rest);
                }
                _ => {
                    self.end_op(index);
                    self.join_failed(index, format!("successor {asking} did not answer"));
                }
            },
            Op::StabilizeSuccessor {
                successor, attempt, ..
            } => match (state, response) {
                (Some((predecessor, list)), _) => {
                    let adopted = successor_list(&me, &successor, &list, r);
                    let between = predecessor
                        .filter(|p| between_open(me.id, p.id, successor.id))
                        .or_else(|| self.take_revived_between(me.id, successor.id));
                    match between {
                        Some(p) => {
                            let request = self.send(&p, Request::GetState, Waiter::Member(index));
                            self.set_op(
                                index,
                                Op::StabilizeBetween {
                                    candidate: p,
                                    fallback: adopted,
                                    request,
                                },
                            );
                        }
                        None => self.finish_stabilize(index, adopted),
                    }
                }
                (None, Some(Response::Pending)) => self.end_op(index),
                (None, None) if attempt < self.config.query_attempts => {
                    let request = self.send(&successor, Request::GetState, Waiter::Member(index));
                    self.set_op(
                        index,
                        Op::StabilizeSuccessor {
                            successor,
                            attempt: attempt + 1,
                            request,
                        },
                    );
                }
                _ => self.successor_dead(index, successor),
            },
            Op::StabilizeBetween {
                candidate,
                fallback,
                ..
            } => match (state, response) {
                (Some((_, list)), _) => {
                    let adopted = successor_list(&me, &candidate, &list, r);
                    self.finish_stabilize(index, adopted);
                }
                (None, Some(Response::Pending)) => self.finish_stabilize(index, fallback),
                (None, _) => {
                    // A lone member asks its predecessor; one that does not
                    // answer is dropped, or the member would ask it forever.
                    self.predecessor_dead(index, &candidate, None);
                    self.finish_stabilize(index, fallback);
                }
            },
            Op::Rectify {
                candidate,
                checking,
                attempt,
                ..
            } => match response {
                Some(Response::Pong) => self.end_op(index),
                None if attempt < self.config.query_attempts => {
                    let request = self.send(&checking, Request::Ping, Waiter::Member(index));
                    self.set_op(
                        index,
                        Op::Rectify {
                            candidate,
                            checking,
                            attempt: attempt + 1,
                            request,
                        },
                    );
                }
                _ => {
                    self.predecessor_dead(index, &checking, Some(candidate));
                    self.end_op(index);
                }
            },
            Op::Recover {
                asking,
                mut recovery,
                ..
            } => match (state, response) {
                // A member whose own list names us lies *behind* us (we are
                // among its next successors): adopting it at once could
                // close a small loop that splits the ring, so a member ahead
                // of us that does not name us is preferred; the nearest one
                // that names us is kept in case nobody else answers.
                (Some((_, list)), _) => {
                    let adopted = successor_list(&me, &asking, &list, r);
                    if !list.iter().any(|s| s.id == me.id) {
                        self.finish_stabilize(index, adopted);
                    } else {
                        recovery.fallback.get_or_insert(adopted);
                        self.recover_next(index, recovery);
                    }
                }
                (None, Some(Response::Pending)) => {
                    // Alive but busy: ask again once, after the others.
                    if !recovery.busy.contains(&asking.id) {
                        recovery.busy.push(asking.id);
                        recovery.rest.push(asking);
                    }
                    self.recover_next(index, recovery);
                }
                _ => {
                    self.remember_lost(&asking);
                    self.recover_next(index, recovery);
                }
            },
        }
    }

    fn set_op(&mut self, index: usize, op: Op) {
        let member = &mut self.members[index];
        member.op = Some(op);
        member.op_age = 0;
    }

    /// Forgets the outstanding operation, leaving any deferred notification
    /// for the operation that replaces it.
    fn clear_op(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.op = None;
        member.op_age = 0;
    }

    /// Ends the outstanding operation and handles a notification that
    /// waited for it.
    fn end_op(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.op = None;
        member.op_age = 0;
        if let Some(candidate) = member.deferred_notify.take() {
            if member.is_joined() {
                self.rectify(index, candidate);
            }
        }
    }

    // ----- lookups --------------------------------------------------------

    fn begin_lookup(&mut self, target: Id, purpose: Purpose, seed: Option<Addr>) {
        let max_hops = self.config.max_lookup_hops;
        let lookup = match seed {
            Some(seed) => Lookup::via_seed(target, &self.addr, seed, max_hops),
            None => Lookup::new(target, &self.addr, self.find_step(target), max_hops),
        };
        let id = self.next_lookup;
        self.next_lookup += 1;
        if let Purpose::Join { member } = purpose {
            self.set_op(member, Op::JoinLocating { lookup: id });
        }
        self.lookups.insert(
            id,
            LookupTask {
                lookup,
                purpose,
                asking: None,
            },
        );
        self.drive_lookup(id);
    }

    fn drive_lookup(&mut self, id: u64) {
        let Some(task) = self.lookups.get_mut(&id) else {
            return;
        };
        match task.lookup.next_step() {
            Next::Ask(addr) => {
                task.asking = Some(addr.clone());
                let target = task.lookup.target();
                self.send_to(addr, None, Request::FindStep { target }, Waiter::Lookup(id));
            }
            Next::Done(result) => {
                let task = self.lookups.remove(&id).expect("lookup present");
                self.finish_lookup(id, task.purpose, result);
            }
        }
    }

    fn finish_lookup(
        &mut self,
        id: u64,
        purpose: Purpose,
        result: Result<LookupOutcome, LookupError>,
    ) {
        match purpose {
            Purpose::Client { token } => self.actions.push(Action::LookupDone { token, result }),
            Purpose::Join { member } => {
                let located = matches!(self.members[member].op, Some(Op::JoinLocating { lookup }) if lookup == id);
                if located {
                    self.on_join_located(member, result);
                }
            }
            Purpose::Finger { member, index } => {
                let member = &mut self.members[member];
                member.finger_lookup = false;
                member.next_finger = (index + 1) % Id::BITS;
                if let Ok(outcome) = result {
                    let owner = outcome.owner().clone();
                    if owner.id == member.me.id {
                        member.fingers[index] = None;
                        return;
                    }
                    // Every later finger whose start the owner also covers.
                    let mut next = index;
                    while next < Id::BITS
                        && between_open_closed(
                            member.me.id,
                            member.me.id.finger_start(next),
                            owner.id,
                        )
                    {
                        member.fingers[next] = Some(owner.clone());
                        next += 1;
                    }
                    member.next_finger = next % Id::BITS;
                }
            }
        }
    }

    // ----- sending --------------------------------------------------------

    fn send(&mut self, to: &NodeRef, request: Request, waiter: Waiter) -> RequestId {
        self.send_to(to.addr.clone(), Some(to.id), request, waiter)
    }

    fn send_to(
        &mut self,
        to: Addr,
        member: Option<Id>,
        request: Request,
        waiter: Waiter,
    ) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.inflight.insert(id, (waiter, to.clone()));
        let outgoing = Outgoing {
            id,
            to,
            member,
            request,
        };
        if outgoing.to == self.addr {
            self.local.push_back(outgoing);
        } else {
            self.actions.push(Action::Send(outgoing));
        }
        id
    }

    /// Delivers requests between members of this process without the
    /// network, until none is left.
    fn deliver_local(&mut self) {
        while let Some(outgoing) = self.local.pop_front() {
            let response = self.answer(outgoing.member, outgoing.request);
            self.on_answer(outgoing.id, Some(response));
        }
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
