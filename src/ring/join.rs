//! Joining: find the member's place by looking up its own id, then adopt the
//! list of the first live successor there, and only from that successor's
//! own answer. Failures move on to the next seed or back off, so a process
//! started before its seeds still joins once they are up.

use super::answers::{Listing, Op, Waiter};
use super::lookup::{LookupError, LookupOutcome};
use super::lookup_tasks::Purpose;
use super::message::{NodeRef, Request, Response};
use super::{successor_list, Host, Member, Notice};

#[derive(Clone, Debug, Default)]
pub(super) struct JoinProgress {
    failures: u32,
    wait_ticks: u32,
    /// Index into the host's remote seeds of the next one to try.
    seed_cursor: usize,
}

impl Host {
    pub(super) fn try_join(&mut self, index: usize) {
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

    pub(super) fn on_join_located(
        &mut self,
        index: usize,
        result: Result<LookupOutcome, LookupError>,
    ) {
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

    /// The answer to [`Host::fetch_for_join`]: the successor's own list is
    /// the only one a joining member adopts.
    pub(super) fn on_join_fetched(
        &mut self,
        index: usize,
        asking: NodeRef,
        mut rest: Vec<NodeRef>,
        state: Option<Listing>,
        response: Option<Response>,
    ) {
        let me = self.members[index].me.clone();
        let r = self.config.successors;
        match (state, response) {
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
        }
    }
}
