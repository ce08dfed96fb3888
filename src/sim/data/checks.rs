//! What the data scenarios check: who should hold a key on the live ring,
//! what each process holds, and the keys whose holders disagree.

use super::DataSim;
use crate::id::Id;
use crate::replica::{preference_from, Quorum, Quorums, FALLBACKS};
use crate::ring::NodeRef;
use crate::store::Record;
use std::collections::BTreeMap;

impl DataSim {
    /// The owner of `key` and the processes holding its copies, in
    /// preference order, on the ring of the live processes.
    pub fn holders(&self, key: &[u8]) -> Vec<String> {
        let net = self.net();
        let Some(viewer) = net.members.keys().find(|a| net.up.contains(*a)).cloned() else {
            return Vec::new();
        };
        let ring = net.ring_seen_by(&viewer);
        drop(net);
        let id = Id::of_key(key);
        let at = super::net::owner_index(&ring, id);
        let owner = ring[at].clone();
        let after: Vec<NodeRef> = ring[at + 1..].iter().chain(&ring[..=at]).cloned().collect();
        let preference = preference_from(
            &owner,
            &after,
            self.config.replicas.saturating_sub(1) + FALLBACKS,
        );
        let quorum = Quorums::effective(self.config.replicas, Quorum::Default(1), &preference);
        std::iter::once(owner.addr.clone())
            .chain(
                preference
                    .replicas(quorum.copies)
                    .iter()
                    .map(|m| m.addr.clone()),
            )
            .collect()
    }

    /// Keys held anywhere whose holders on the live ring do not all hold the
    /// same newest record: empty when the group has converged.
    pub fn divergent_keys(&self) -> Vec<Vec<u8>> {
        let held: BTreeMap<String, BTreeMap<Vec<u8>, Record>> = self
            .live()
            .into_iter()
            .map(|addr| {
                let records = self.held_by(&addr);
                (addr, records)
            })
            .collect();
        let mut newest: BTreeMap<&[u8], &Record> = BTreeMap::new();
        for records in held.values() {
            for (key, record) in records {
                let slot = newest.entry(key).or_insert(record);
                if record.supersedes(slot) {
                    *slot = record;
                }
            }
        }
        newest
            .into_iter()
            .filter(|(key, record)| {
                self.holders(key).iter().any(|addr| {
                    held.get(addr).and_then(|records| records.get(*key)) != Some(*record)
                })
            })
            .map(|(key, _)| key.to_vec())
            .collect()
    }

    /// The records process `addr` holds, by key.
    pub fn held_by(&self, addr: &str) -> BTreeMap<Vec<u8>, Record> {
        let mut held = BTreeMap::new();
        self.node(addr)
            .store()
            .visit_ids(0, u64::MAX, |key, record| {
                held.insert(key.to_vec(), record);
            })
            .expect("memory store");
        held
    }

    /// The keys `addr` should hold a copy of, among `keys`.
    pub fn should_hold(&self, addr: &str, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        keys.iter()
            .filter(|key| self.holders(key).iter().any(|a| a == addr))
            .cloned()
            .collect()
    }

    /// Hints held on the live processes.
    pub fn hints_held(&self) -> u64 {
        self.live().iter().map(|a| self.node(a).hints_held()).sum()
    }

    /// Hints held by process `addr`.
    pub fn hints_held_by(&self, addr: &str) -> u64 {
        self.node(addr).hints_held()
    }

    /// Each holder of `key` on the live ring and its copy: what a failure
    /// message shows of a key that differs.
    pub fn copies_of(&self, key: &[u8]) -> Vec<(String, Option<Record>)> {
        self.holders(key)
            .into_iter()
            .map(|addr| {
                let copy = self.held_by(&addr).remove(key);
                (addr, copy)
            })
            .collect()
    }
}
