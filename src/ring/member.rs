//! A member is one virtual node's tables and nothing more: the protocol that
//! changes them belongs to the host, which alone sees every sibling member
//! and every request in flight.

use super::answers::Op;
use super::join::JoinProgress;
use super::message::NodeRef;
use crate::id::Id;
use std::collections::HashSet;

/// One virtual node: a full ring member.
#[derive(Clone, Debug)]
pub struct Member {
    pub(super) me: NodeRef,
    /// Empty until joined.
    pub(super) successors: Vec<NodeRef>,
    pub(super) predecessor: Option<NodeRef>,
    pub(super) fingers: Vec<Option<NodeRef>>,
    pub(super) next_finger: usize,
    pub(super) finger_lookup: bool,
    /// The one outstanding state-changing query.
    pub(super) op: Option<Op>,
    /// Stabilize ticks the current operation has been outstanding.
    pub(super) op_age: u32,
    /// A notification that arrived while `op` was busy.
    pub(super) deferred_notify: Option<NodeRef>,
    pub(super) join: JoinProgress,
    pub(super) leaving: bool,
}

impl Member {
    pub(super) fn new(me: NodeRef) -> Member {
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

    pub(super) fn known_entries(&self) -> impl Iterator<Item = &NodeRef> {
        self.successors
            .iter()
            .chain(self.predecessor.iter())
            .chain(self.fingers.iter().flatten())
    }

    pub(super) fn forget(&mut self, id: Id) {
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
