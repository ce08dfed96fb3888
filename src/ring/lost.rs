//! Members presumed dead are not forgotten at once: they are probed now and
//! then, because after a partition heals a lost member that answers again is
//! how the two rings find each other. Members that announced their departure
//! are kept too, for a few ticks, but to be refused rather than sought.

use super::answers::Waiter;
use super::message::{NodeRef, Request, Response};
use super::Host;
use crate::id::{between_open, Id};

#[derive(Clone, Debug)]
pub(super) struct Lost {
    pub(super) node: NodeRef,
    ticks_left: u32,
}

impl Host {
    /// How long, in stabilize ticks, a member presumed dead is still probed.
    const LOST_TICKS: u32 = 1200;
    const MAX_LOST: usize = 64;
    /// How long a member that announced its departure is refused: long
    /// enough for its last messages in flight to arrive, short enough that
    /// it can restart and rejoin as itself soon after.
    const DEPARTED_TICKS: u32 = 6;
    /// How long a revived member waits to be adopted.
    const REVIVED_TICKS: u32 = 4;

    pub(super) fn is_departed(&self, id: Id) -> bool {
        self.departed.iter().any(|d| d.node.id == id)
    }

    /// `node` told us it is leaving; nothing it sent before may bring it back.
    pub(super) fn remember_departed(&mut self, node: &NodeRef) {
        if !self.is_departed(node.id) {
            self.departed.push(Lost {
                node: node.clone(),
                ticks_left: Self::DEPARTED_TICKS,
            });
            if self.departed.len() > Self::MAX_LOST {
                self.departed.remove(0);
            }
        }
    }

    pub(super) fn remember_lost(&mut self, node: &NodeRef) {
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
    pub(super) fn probe_lost(&mut self) {
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

    pub(super) fn on_probe_answer(&mut self, id: Id, response: Option<Response>) {
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
    pub(super) fn take_revived_between(&mut self, me: Id, successor: Id) -> Option<NodeRef> {
        let position = self
            .revived
            .iter()
            .enumerate()
            .filter(|(_, r)| between_open(me, r.node.id, successor))
            .min_by_key(|(_, r)| me.distance_to(r.node.id))
            .map(|(position, _)| position)?;
        Some(self.revived.remove(position).node)
    }
}
