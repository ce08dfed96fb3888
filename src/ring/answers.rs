//! Requests and their answers. Every request is remembered with whoever
//! waits for it, so that each answer, or failure, goes back to that one
//! waiter. A member's state-changing query is its one [`Op`]: its answer is
//! checked here once (stale, or from a departed member) and then handed to
//! the phase that asked, which lives in the file that sent the query.

use super::message::{Addr, NodeRef, Outgoing, Request, RequestId, Response};
use super::stabilize::Recovery;
use super::{Action, Host};
use crate::id::Id;

#[derive(Clone, Debug)]
pub(super) enum Op {
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
pub(super) enum Waiter {
    Member(usize),
    Lookup(u64),
    /// Notifications and leave notices: the answer changes nothing.
    Nobody,
    Leave,
    /// A ping to a member presumed dead, to see whether it came back.
    Probe(Id),
}

/// A `State` answer's predecessor and successor list, with departed members
/// left out.
pub(super) type Listing = (Option<NodeRef>, Vec<NodeRef>);

impl Host {
    pub(super) fn send(&mut self, to: &NodeRef, request: Request, waiter: Waiter) -> RequestId {
        self.send_to(to.addr.clone(), Some(to.id), request, waiter)
    }

    pub(super) fn send_to(
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
    pub(super) fn deliver_local(&mut self) {
        while let Some(outgoing) = self.local.pop_front() {
            let response = self.answer(outgoing.member, outgoing.request);
            self.on_answer(outgoing.id, Some(response));
        }
    }

    pub(super) fn on_answer(&mut self, id: RequestId, response: Option<Response>) {
        let Some((waiter, from)) = self.inflight.remove(&id) else {
            return;
        };
        match waiter {
            Waiter::Member(index) => self.on_member_answer(index, id, response),
            Waiter::Lookup(lookup) => self.on_lookup_answer(lookup, &from, response),
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
        match op {
            Op::JoinLocating { .. } => {}
            Op::JoinFetching { asking, rest, .. } => {
                self.on_join_fetched(index, asking, rest, state, response)
            }
            Op::StabilizeSuccessor {
                successor, attempt, ..
            } => self.on_successor_state(index, successor, attempt, state, response),
            Op::StabilizeBetween {
                candidate,
                fallback,
                ..
            } => self.on_between_state(index, candidate, fallback, state, response),
            Op::Rectify {
                candidate,
                checking,
                attempt,
                ..
            } => self.on_rectify_ping(index, candidate, checking, attempt, response),
            Op::Recover {
                asking, recovery, ..
            } => self.on_recover_state(index, asking, recovery, state, response),
        }
    }

    pub(super) fn set_op(&mut self, index: usize, op: Op) {
        let member = &mut self.members[index];
        member.op = Some(op);
        member.op_age = 0;
    }

    /// Forgets the outstanding operation, leaving any deferred notification
    /// for the operation that replaces it.
    pub(super) fn clear_op(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.op = None;
        member.op_age = 0;
    }

    /// Ends the outstanding operation and handles a notification that
    /// waited for it.
    pub(super) fn end_op(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.op = None;
        member.op_age = 0;
        if let Some(candidate) = member.deferred_notify.take() {
            if member.is_joined() {
                self.rectify(index, candidate);
            }
        }
    }
}
