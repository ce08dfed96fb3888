//! What a round reads and writes of a store: summaries of an arc's part
//! of a tree node, key digests, records, expired tombstones.

use super::{ArcRange, KeyDigest, Overlap};
use crate::store::digest::{record_digest, NodePath, Summary, LEAF_DEPTH};
use crate::store::{Engine, Entry, Store, StoreResult, BATCH_BYTES, BATCH_RECORDS};

impl<E: Engine> Store<E> {
    /// Up to `limit` tombstones in `arc` that expired at or before `by_ms`.
    pub fn expired_tombstones(
        &self,
        arc: ArcRange,
        by_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let mut found = Vec::new();
        for (low, high) in arc.segments() {
            self.visit_ids_while(low, high, |key, record| {
                if record.tombstone && record.expires_at.is_some_and(|at| at <= by_ms) {
                    found.push(Entry {
                        key: key.to_vec(),
                        record,
                    });
                }
                found.len() < limit
            })?;
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The summary of `node` cut to `arc`.
    pub fn summarize(&self, arc: ArcRange, node: NodePath) -> StoreResult<Summary> {
        match arc.overlap(node) {
            Overlap::Outside => Ok(Summary::default()),
            Overlap::Inside if node.depth <= LEAF_DEPTH => Ok(self.tree().stored([node])[0]),
            _ if node.depth >= LEAF_DEPTH => {
                let mut sum = Summary::default();
                for (low, high) in arc.cut(node) {
                    self.visit_ids(low, high, |key, record| {
                        sum.add(&Summary::of(record_digest(key, &record)))
                    })?;
                }
                Ok(sum)
            }
            _ => {
                let mut sum = Summary::default();
                for child in node.children() {
                    sum.add(&self.summarize(arc, child)?);
                }
                Ok(sum)
            }
        }
    }

    /// Every record under `nodes` cut to `arc`, as digests, in ring order;
    /// `None` if there are more than `limit`.
    pub fn digests(
        &self,
        arc: ArcRange,
        nodes: &[NodePath],
        limit: usize,
    ) -> StoreResult<Option<Vec<KeyDigest>>> {
        let mut out = Vec::new();
        for node in nodes {
            for (low, high) in arc.cut(*node) {
                self.visit_ids_while(low, high, |key, record| {
                    out.push(KeyDigest::of(key, &record));
                    out.len() <= limit
                })?;
                if out.len() > limit {
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// [`Store::digests`] of nodes the caller knows to be small.
    pub(super) fn digests_of_small(
        &self,
        arc: ArcRange,
        nodes: &[NodePath],
    ) -> StoreResult<Vec<KeyDigest>> {
        Ok(self.digests(arc, nodes, usize::MAX)?.unwrap_or_default())
    }

    /// The records of the first keys of `keys` that fit in a batch (at
    /// least one key is always answered), expired ones included: an expired
    /// record still supersedes an older live one. Returns the records found
    /// and how many keys were answered.
    pub fn records(&self, keys: &[Vec<u8>]) -> StoreResult<(Vec<Entry>, usize)> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut answered = 0;
        for key in keys {
            if answered > 0 && (bytes >= BATCH_BYTES || entries.len() >= BATCH_RECORDS) {
                break;
            }
            answered += 1;
            if let Some(record) = self.get(key, 0)? {
                bytes += key.len() + record.value.len() + 32;
                entries.push(Entry {
                    key: key.clone(),
                    record,
                });
            }
        }
        Ok((entries, answered))
    }

    /// Applies received records, last writer wins; returns how many were
    /// newer than what was held.
    pub fn apply_all(&self, entries: &[Entry]) -> StoreResult<u64> {
        let mut applied = 0;
        for entry in entries {
            if self.apply(&entry.key, &entry.record)? {
                applied += 1;
            }
        }
        Ok(applied)
    }
}
