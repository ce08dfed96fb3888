//! Fingers are only shortcuts for lookups; the ring stays correct without
//! them. Each tick a member refreshes one finger, filling those before its
//! successor for free and looking up the rest.

use super::lookup::{LookupError, LookupOutcome};
use super::lookup_tasks::Purpose;
use super::Host;
use crate::id::{between_open_closed, Id};

impl Host {
    pub(super) fn on_fix_fingers_tick(&mut self) {
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

    /// The lookup started by [`Host::on_fix_fingers_tick`] finished.
    pub(super) fn on_finger_located(
        &mut self,
        member: usize,
        index: usize,
        result: Result<LookupOutcome, LookupError>,
    ) {
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
                && between_open_closed(member.me.id, member.me.id.finger_start(next), owner.id)
            {
                member.fingers[next] = Some(owner.clone());
                next += 1;
            }
            member.next_finger = next % Id::BITS;
        }
    }
}
