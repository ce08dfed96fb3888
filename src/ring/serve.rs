//! Answering requests, from other hosts and from sibling members alike (a
//! sibling's request is delivered without the network but answered the same
//! way). Only two requests change anything: a notification, which goes
//! through rectify, and a neighbour's leave notice, the one thing that makes
//! a member drop pointers without checking them first.

use super::message::{NodeRef, Request, Response};
use super::{Host, Notice};
use crate::id::{between_open_closed, Id};

impl Host {
    pub(super) fn answer(&mut self, member: Option<Id>, request: Request) -> Response {
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
    pub(super) fn find_step(&self, target: Id) -> Response {
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
        self.remember_departed(&leaving);
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
        let mut new_head = None;
        if remaining.first().is_some_and(|head| head.id != me) {
            let from = member.successors.first().cloned();
            member.successors = remaining;
            let to = member.successors[0].clone();
            if from.as_ref().map(|f| f.id) != Some(to.id) {
                new_head = Some((from, to));
            }
        }
        for finger in &mut member.fingers {
            if finger.as_ref().is_some_and(|f| f.id == leaving.id) {
                *finger = None;
            }
        }
        // Said like any other change of successor, so the log and the
        // dashboard's events show a leave being taken in.
        if let Some((from, to)) = new_head {
            self.notice(Notice::SuccessorChanged {
                member: me,
                from,
                to,
            });
        }
        if was_predecessor {
            self.set_predecessor(index, None);
        }
        if self.members[index].op.is_none() && self.members[index].is_joined() {
            self.start_stabilize(index);
        }
    }
}
