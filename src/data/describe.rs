//! What a process reports about itself (`Describe`): its members' routing
//! state, filled in by the node, and what the data layer knows without
//! asking anyone: records held, hints, and per member the records of its
//! arc and how the last rounds with its replicas went.

use super::{DataNode, ReplicaHealth};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::digest::NodePath;
use crate::sync::ArcRange;

/// A member's full routing state, as `Describe` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub me: NodeRef,
    pub joined: bool,
    pub predecessor: Option<NodeRef>,
    pub successors: Vec<NodeRef>,
    pub fingers: Vec<NodeRef>,
    /// Records in the member's arc.
    pub owned_records: u64,
    /// The other processes holding its arc, and the last rounds with them.
    pub replicas: Vec<ReplicaHealth>,
}

/// One process as `Describe` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub addr: String,
    pub members: Vec<MemberInfo>,
    /// Records stored, owned and replicas, tombstones included.
    pub records: u64,
    /// Writes held for replicas that could not be reached.
    pub hints: u64,
    /// `N`, `W` and `R` as this node is configured.
    pub replicas: u32,
    pub write_quorum: u32,
    pub read_quorum: u32,
    /// The process's onion key, for chat relays.
    pub onion_key: Option<[u8; 32]>,
}

impl DataNode {
    /// Adds what the data layer knows to a process's `Describe`: records
    /// held, hints, and per member its records and replicas' health.
    pub fn describe_replication(&self, info: &mut ProcessInfo) {
        info.records = self.store.tree().root().count;
        info.hints = self.hints_held();
        let replication = &self.config.replication;
        info.replicas = replication.replicas as u32;
        info.write_quorum = replication.write_quorum as u32;
        info.read_quorum = replication.read_quorum as u32;
        for member in &mut info.members {
            let (owned, replicas) = self.replication_health(member.me.id);
            member.owned_records = owned;
            member.replicas = replicas;
        }
    }

    /// Records held in `member`'s arc, and the health of its replicas as
    /// the last rounds found it (from what is known without asking anyone).
    pub fn replication_health(&self, member: Id) -> (u64, Vec<ReplicaHealth>) {
        let Some(member) = self.member(member).filter(|m| m.joined) else {
            return (0, Vec::new());
        };
        let owned = member.predecessor.as_ref().map_or(0, |p| {
            self.store
                .summarize(ArcRange::new(p.id, member.me.id), NodePath::ROOT)
                .map(|summary| summary.count)
                .unwrap_or(0)
        });
        let replicas = self.config.replication.replicas;
        let preference = self.cached_preference(&member, false).unwrap_or_else(|| {
            crate::replica::preference_from(&member.me, &member.successors, replicas)
        });
        let now = self.clock.now();
        let health = preference
            .replicas(replicas)
            .iter()
            .map(|replica| {
                let last = self.rounds.get(member.me.id, &replica.addr);
                ReplicaHealth {
                    replica: replica.clone(),
                    last_round_ago: last.as_ref().map(|l| now.duration_since(l.ended)),
                    in_sync: last
                        .as_ref()
                        .is_some_and(|l| l.error.is_none() && l.stats.in_sync()),
                    pushed: last.as_ref().map_or(0, |l| l.stats.pushed),
                    pulled: last.as_ref().map_or(0, |l| l.stats.pulled),
                    error: last.and_then(|l| l.error),
                }
            })
            .collect();
        (owned, health)
    }
}
