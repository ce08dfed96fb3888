//! Keeping a joined member's pointers right: stabilize (ask the successor,
//! and any member found between before adopting it), recover (every
//! successor dead: ask whoever this process knows of after us, rather than
//! conclude we are alone) and rectify (a notification changes the
//! predecessor only if it is closer or the current one is dead). Each query
//! and the handling of its answer sit side by side.

use super::answers::{Listing, Op, Waiter};
use super::join::JoinProgress;
use super::message::{NodeRef, Request, Response};
use super::{successor_list, Host, Notice};
use crate::id::{between_open, Id};
use std::collections::HashSet;

/// Progress of a recovery.
#[derive(Clone, Debug)]
pub(super) struct Recovery {
    /// Candidates not asked yet, nearest after us first.
    rest: Vec<NodeRef>,
    /// The list adopted from the nearest candidate that answered but named
    /// us: used only if no candidate ahead of us answers without naming us.
    fallback: Option<Vec<NodeRef>>,
    /// How many times each candidate was asked without a usable answer
    /// (busy, or silent): it is put back after the others until
    /// `query_attempts` asks, the tries a successor gets.
    asked: Vec<(Id, u32)>,
}

impl Recovery {
    /// Counts one more ask of `id` that got no usable answer; the count.
    fn unanswered(&mut self, id: Id) -> u32 {
        match self.asked.iter_mut().find(|(asked, _)| *asked == id) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                self.asked.push((id, 1));
                1
            }
        }
    }
}

impl Host {
    pub(super) fn start_stabilize(&mut self, index: usize) {
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

    /// The successor's answer to [`Host::start_stabilize`]: a member between
    /// us and the successor (its predecessor, or a lost member that came
    /// back) is asked before it is adopted.
    pub(super) fn on_successor_state(
        &mut self,
        index: usize,
        successor: NodeRef,
        attempt: u32,
        state: Option<Listing>,
        response: Option<Response>,
    ) {
        let me = self.members[index].me.clone();
        let r = self.config.successors;
        match (state, response) {
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
        }
    }

    /// The answer of a member found between us and our successor: adopt it
    /// from its own list, or keep the list we had.
    pub(super) fn on_between_state(
        &mut self,
        index: usize,
        candidate: NodeRef,
        fallback: Vec<NodeRef>,
        state: Option<Listing>,
        response: Option<Response>,
    ) {
        let me = self.members[index].me.clone();
        let r = self.config.successors;
        match (state, response) {
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
        }
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
            asked: Vec::new(),
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

    /// One recovery candidate's answer: adopt it, or go on to the next.
    pub(super) fn on_recover_state(
        &mut self,
        index: usize,
        asking: NodeRef,
        mut recovery: Recovery,
        state: Option<Listing>,
        response: Option<Response>,
    ) {
        let me = self.members[index].me.clone();
        let r = self.config.successors;
        match (state, response) {
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
                // Alive but busy: ask again after the others.
                if recovery.unanswered(asking.id) < self.config.query_attempts {
                    recovery.rest.push(asking);
                }
                self.recover_next(index, recovery);
            }
            _ => {
                // No answer: under loss a live member often misses one, and
                // giving up on every member ahead of us too soon would
                // leave only one behind us to adopt (a loop that splits
                // the ring). Ask again after the others, up to the tries a
                // successor gets; only then is it presumed dead.
                if recovery.unanswered(asking.id) < self.config.query_attempts {
                    recovery.rest.push(asking);
                } else {
                    self.remember_lost(&asking);
                }
                self.recover_next(index, recovery);
            }
        }
    }

    // ----- rectify --------------------------------------------------------

    pub(super) fn rectify(&mut self, index: usize, candidate: NodeRef) {
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

    /// The current predecessor's answer to the ping in [`Host::rectify`]:
    /// only a predecessor that stays silent is replaced.
    pub(super) fn on_rectify_ping(
        &mut self,
        index: usize,
        candidate: NodeRef,
        checking: NodeRef,
        attempt: u32,
        response: Option<Response>,
    ) {
        match response {
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

    pub(super) fn set_predecessor(&mut self, index: usize, to: Option<NodeRef>) {
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
}
