//! What the ring scenarios check, at any step: the ring's shape (one
//! cycle, ordered, every live member with a live successor, appendages),
//! the stronger eventual property that it has converged, the true owner of
//! a key, and how right the fingers are. While a partition splits the
//! hosts, the same checks apply to each side on its own.

use super::{Sim, SimHost};
use crate::id::{between_open_closed, Id};
use crate::ring::{self, Addr, Host, NodeRef};
use std::collections::HashMap;

/// The shape of the ring at one instant, from [`Sim::check_ring`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingShape {
    /// Ids of the members on the one cycle, in ring order from the lowest.
    pub cycle: Vec<Id>,
    /// Live joined members not on the cycle (appendages).
    pub appendages: usize,
    /// Live joined members with no live successor (only legal while the
    /// failure assumption is broken).
    pub detached: usize,
}

/// A violation of the ring's invariants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("no ring: no live joined member")]
    NoRing,
    #[error("{0} separate rings")]
    ManyRings(usize),
    #[error("the ring is not ordered: it goes round the circle {laps} times over {len} members")]
    Unordered { laps: String, len: usize },
    #[error("member {0} has no live successor")]
    NoLiveSuccessor(NodeRef),
    #[error("member {member} has a successor list that is not in ring order: {list:?}")]
    UnorderedList { member: NodeRef, list: Vec<NodeRef> },
    #[error("member {member}'s finger {index} is {finger:?}, but its start is owned by {owner}")]
    WrongFinger {
        member: NodeRef,
        index: usize,
        finger: Option<NodeRef>,
        owner: NodeRef,
    },
}

/// The live members sorted by id: the owner of a key is the first member at
/// or after it, wrapping round.
#[derive(Clone, Debug)]
pub struct Owners {
    members: Vec<NodeRef>,
}

impl Owners {
    pub(super) fn new(members: Vec<NodeRef>) -> Owners {
        Owners { members }
    }

    pub fn owner(&self, key: Id) -> Option<&NodeRef> {
        let position = self.members.partition_point(|m| m.id < key);
        self.members.get(position).or(self.members.first())
    }
}

/// Whether `list`, seen from `me`, goes clockwise and at most once round:
/// each entry strictly further than the one before, and `me` itself only as
/// the last entry (where a small ring's list comes back round).
pub fn list_in_ring_order(me: Id, list: &[NodeRef]) -> bool {
    let mut previous: u128 = 0;
    for (index, entry) in list.iter().enumerate() {
        let position = match me.distance_to(entry.id) {
            0 if index + 1 == list.len() => 1u128 << 64,
            0 => return false,
            distance => distance as u128,
        };
        if position <= previous {
            return false;
        }
        previous = position;
    }
    true
}

impl Sim {
    /// Addresses of live hosts.
    pub fn host_addrs(&self) -> Vec<Addr> {
        self.hosts.keys().cloned().collect()
    }

    pub fn host(&self, addr: &str) -> Option<&Host> {
        self.hosts.get(addr).map(|h| &h.host)
    }

    /// The live hosts a check covers: all of them, or those of one side
    /// of a partition.
    fn in_scope<'a>(&'a self, side: Option<&'a [Addr]>) -> impl Iterator<Item = &'a SimHost> {
        self.hosts
            .iter()
            .filter(move |(addr, _)| side.is_none_or(|side| side.contains(addr)))
            .map(|(_, host)| host)
    }

    /// Every joined member of every live host, sorted by id.
    pub fn live_members(&self) -> Vec<NodeRef> {
        self.members_in(None)
    }

    /// Every joined member of the live hosts in scope, sorted by id.
    fn members_in(&self, side: Option<&[Addr]>) -> Vec<NodeRef> {
        let mut members: Vec<NodeRef> = self
            .in_scope(side)
            .flat_map(|h| {
                h.host
                    .members()
                    .iter()
                    .filter(|m| m.is_joined())
                    .map(|m| m.me().clone())
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }

    /// The live member that owns `key` (its successor among live members).
    pub fn true_owner(&self, key: Id) -> Option<NodeRef> {
        Owners::new(self.live_members()).owner(key).cloned()
    }

    /// A snapshot of who owns what, for answering many `owner` questions
    /// about a ring that is not changing.
    pub fn owners(&self) -> Owners {
        Owners::new(self.live_members())
    }

    /// Checks the invariants that must hold after every step: one ring,
    /// ordered, every live member with a live successor, every successor
    /// list in ring order. (A lone member that is its own successor while
    /// newcomers hang off it is a legal state: it is how every ring begins.)
    pub fn check_ring(&self) -> Result<RingShape, Violation> {
        self.ring_shape(true, None)
    }

    /// [`Sim::check_ring`] for one side of a partition, as if the hosts in
    /// `side` were all there is: one ring of its own members, ordered,
    /// each with a successor on its side.
    pub fn check_side(&self, side: &[Addr]) -> Result<RingShape, Violation> {
        self.ring_shape(true, Some(side))
    }

    /// As [`Sim::check_ring`], but members whose whole successor list is dead
    /// are tolerated (counted as detached): for scenarios that deliberately
    /// break the failure assumption.
    pub fn check_ring_tolerating_detached(&self) -> Result<RingShape, Violation> {
        self.ring_shape(false, None)
    }

    fn ring_shape(&self, strict: bool, side: Option<&[Addr]>) -> Result<RingShape, Violation> {
        // Index every live joined member; the check runs after every event
        // of rings of thousands, so it works on indices, not clones.
        let mut nodes: Vec<&ring::Member> = Vec::new();
        for sim_host in self.in_scope(side) {
            nodes.extend(sim_host.host.members().iter().filter(|m| m.is_joined()));
        }
        let index_of: HashMap<Id, usize> =
            nodes.iter().enumerate().map(|(i, m)| (m.id(), i)).collect();
        let live = |entry: &NodeRef| {
            index_of
                .get(&entry.id)
                .filter(|&&i| nodes[i].me().addr == entry.addr)
                .copied()
        };
        let mut best: Vec<Option<usize>> = Vec::with_capacity(nodes.len());
        let mut detached = 0;
        for member in &nodes {
            if !list_in_ring_order(member.id(), member.successors()) {
                let list = member.successors().to_vec();
                return Err(Violation::UnorderedList {
                    member: member.me().clone(),
                    list,
                });
            }
            let successor = member.successors().iter().find_map(&live);
            if successor.is_none() {
                if strict {
                    return Err(Violation::NoLiveSuccessor(member.me().clone()));
                }
                detached += 1;
            }
            best.push(successor);
        }
        if nodes.is_empty() {
            return Err(Violation::NoRing);
        }
        // Walk the functional graph of best successors and find its cycles.
        const UNSEEN: u8 = 0;
        const ON_WALK: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![UNSEEN; nodes.len()];
        let mut cycles: Vec<Vec<usize>> = Vec::new();
        let mut walk: Vec<usize> = Vec::new();
        for start in 0..nodes.len() {
            if state[start] != UNSEEN {
                continue;
            }
            walk.clear();
            let mut cursor = Some(start);
            while let Some(at) = cursor {
                match state[at] {
                    ON_WALK => {
                        let from = walk.iter().position(|&n| n == at).expect("on the walk");
                        cycles.push(walk[from..].to_vec());
                        break;
                    }
                    DONE => break,
                    _ => {}
                }
                state[at] = ON_WALK;
                walk.push(at);
                cursor = best[at]; // None: detached, the walk ends here
            }
            for &node in &walk {
                state[node] = DONE;
            }
        }
        match cycles.len() {
            // Every path ends at a detached member: legal only while the
            // failure assumption is broken, until it recovers.
            0 if !strict && detached > 0 => {
                return Ok(RingShape {
                    cycle: Vec::new(),
                    appendages: nodes.len() - detached,
                    detached,
                });
            }
            0 => return Err(Violation::NoRing),
            1 => {}
            n => return Err(Violation::ManyRings(n)),
        }
        let cycle = cycles.pop().expect("one");
        let laps: u128 = cycle
            .iter()
            .enumerate()
            .map(|(position, &node)| {
                let next = cycle[(position + 1) % cycle.len()];
                match nodes[node].id().distance_to(nodes[next].id()) {
                    0 => 1u128 << 64,
                    gap => gap as u128,
                }
            })
            .sum();
        if laps != 1u128 << 64 {
            let laps = format!("{:.3}", laps as f64 / 2f64.powi(64));
            return Err(Violation::Unordered {
                laps,
                len: cycle.len(),
            });
        }
        let mut cycle: Vec<Id> = cycle.iter().map(|&i| nodes[i].id()).collect();
        let lowest = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, id)| **id)
            .map(|(i, _)| i)
            .expect("non-empty");
        cycle.rotate_left(lowest);
        let appendages = nodes.len() - cycle.len() - detached;
        Ok(RingShape {
            cycle,
            appendages,
            detached,
        })
    }

    /// The eventual goal: one ordered ring of every live member, with every
    /// successor list the next `r` members and every predecessor right.
    pub fn is_converged(&self) -> bool {
        self.converged_in(None)
    }

    /// [`Sim::is_converged`] for one side of a partition: its joined
    /// members make one ring with exact successor lists and predecessors.
    /// A member waiting to rejoin is outside it: one whose every known
    /// member fell on the other side leaves and can only rejoin through
    /// its bootstrap nodes, which may be over there too, until the heal.
    pub fn is_side_converged(&self, side: &[Addr]) -> bool {
        self.converged_in(Some(side))
    }

    fn converged_in(&self, side: Option<&[Addr]>) -> bool {
        let members = self.members_in(side);
        let joined_everyone = side.is_some()
            || self
                .hosts
                .values()
                .all(|h| h.host.members().iter().all(|m| m.is_joined()));
        if members.is_empty() || !joined_everyone {
            return false;
        }
        let n = members.len();
        let r = self.config.ring.successors;
        for (index, node) in members.iter().enumerate() {
            let member = self.hosts[&node.addr].host.member(node.id).expect("live");
            let expected: Vec<Id> = (1..=r.min(n))
                .map(|k| members[(index + k) % n].id)
                .collect();
            let actual: Vec<Id> = member.successors().iter().map(|s| s.id).collect();
            if actual != expected {
                return false;
            }
            // A lone member's predecessor is itself or none: never a
            // member that no longer answers.
            let predecessor = member.predecessor().map(|p| p.id);
            let right = if n > 1 {
                predecessor == Some(members[(index + n - 1) % n].id)
            } else {
                predecessor.is_none_or(|p| p == node.id)
            };
            if !right {
                return false;
            }
        }
        true
    }

    /// Every finger of every live member right: naming the true owner of
    /// its start, or empty where that owner is the member itself. A finger
    /// is a lookup's answer, so this holds once the ring has converged and
    /// every member has refreshed each finger since; the first wrong one
    /// otherwise.
    pub fn check_fingers(&self) -> Result<(), Violation> {
        let members = self.live_members();
        let owners = Owners::new(members.clone());
        for node in &members {
            let member = self.hosts[&node.addr].host.member(node.id).expect("live");
            for (index, finger) in member.fingers().iter().enumerate() {
                let owner = owners
                    .owner(node.id.finger_start(index))
                    .expect("non-empty");
                if !finger_names(node, finger.as_ref(), owner) {
                    return Err(Violation::WrongFinger {
                        member: node.clone(),
                        index,
                        finger: finger.clone(),
                        owner: owner.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fraction of fingers, over all live members, that point at the true
    /// owner of their start (fingers the successor list covers aside).
    pub fn finger_accuracy(&self) -> f64 {
        let members = self.live_members();
        let owners = Owners::new(members.clone());
        let (mut right, mut total) = (0u64, 0u64);
        for node in &members {
            let member = self.hosts[&node.addr].host.member(node.id).expect("live");
            let successor = member.successor().expect("joined").id;
            for (index, finger) in member.fingers().iter().enumerate() {
                let start = node.id.finger_start(index);
                if between_open_closed(node.id, start, successor) {
                    continue; // covered by the successor list
                }
                total += 1;
                let owner = owners.owner(start).expect("non-empty");
                if finger_names(node, finger.as_ref(), owner) {
                    right += 1;
                }
            }
        }
        if total == 0 {
            1.0
        } else {
            right as f64 / total as f64
        }
    }
}

/// Whether `member`'s finger is right for a start `owner` owns: it names
/// the owner, or is empty where the owner is the member itself (a member
/// keeps no finger to itself).
fn finger_names(member: &NodeRef, finger: Option<&NodeRef>, owner: &NodeRef) -> bool {
    match finger {
        Some(finger) => finger.id == owner.id && finger.addr == owner.addr,
        None => owner.id == member.id,
    }
}
