//! The host's lookups in flight. A [`Lookup`] only says whom to ask next;
//! here each step is sent, its answer fed back, and the result handed to
//! whoever started the lookup: a client, a joining member, or a finger.

use super::answers::{Op, Waiter};
use super::lookup::{Lookup, LookupError, LookupOutcome, Next};
use super::message::{Addr, Request, Response};
use super::{Action, Host};
use crate::id::Id;

#[derive(Clone, Debug)]
pub(super) enum Purpose {
    Join { member: usize },
    Finger { member: usize, index: usize },
    Client { token: u64 },
}

#[derive(Clone, Debug)]
pub(super) struct LookupTask {
    lookup: Lookup,
    purpose: Purpose,
    asking: Option<Addr>,
}

impl Host {
    pub(super) fn begin_lookup(&mut self, target: Id, purpose: Purpose, seed: Option<Addr>) {
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

    pub(super) fn on_lookup_answer(
        &mut self,
        lookup: u64,
        from: &Addr,
        response: Option<Response>,
    ) {
        if let Some(task) = self.lookups.get_mut(&lookup) {
            match response {
                Some(answer) => task.lookup.on_answer(from, answer),
                None => task.lookup.on_failure(from),
            }
            task.asking = None;
            self.drive_lookup(lookup);
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
            Purpose::Finger { member, index } => self.on_finger_located(member, index, result),
        }
    }
}
