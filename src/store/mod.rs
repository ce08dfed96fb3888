//! Storage: records laid out by ring position, behind a small engine trait.
//! Depends on `id` only.
//!
//! A stored key is the 8 big-endian bytes of the user key's ring id followed
//! by the user key itself, so byte order is ring order and the keys of an
//! arc `(a, b]` are one contiguous range (two when the arc wraps past zero).
//! [`Engine`] is the few byte-level operations a store needs; [`RocksEngine`]
//! keeps them on disk and [`MemoryEngine`] in memory for simulation, and a
//! test drives both with the same random operations and demands the same
//! answers. [`Store`] adds what every engine shares: the key layout,
//! last-writer-wins application of [`Record`]s, expiry, resumable arc
//! scans for hand-off, and the [`DigestTree`] of every record held, kept
//! up to date by every write for anti-entropy.

pub mod digest;
mod memory;
mod record;
mod rocks;

pub use memory::MemoryEngine;
pub use record::{DecodeError, Record, Version};
pub use rocks::RocksEngine;

/// Longest accepted user key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Rejects empty and oversized keys.
pub fn validate_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    Ok(())
}

use crate::id::Id;
use digest::{record_digest, DigestTree};
use std::sync::Mutex;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("stored record under {key:?} is damaged: {error}")]
    Damaged { key: Vec<u8>, error: DecodeError },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every batch of records that leaves a store (a hand-off's, an
/// anti-entropy push or pull, a hint delivery) is cut once it holds this
/// many bytes of records (it always holds at least one record)...
pub const BATCH_BYTES: usize = 256 * 1024;
/// ... or this many records.
pub const BATCH_RECORDS: usize = 1024;

/// The byte-level operations a store needs from an engine.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()>;
    fn delete(&self, key: &[u8]) -> StoreResult<()>;
    /// Up to `limit` entries with `start <= key`, and `key < end` when an
    /// end is given, in key order.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Whether calls may wait on a disk: callers then run long work on a
    /// blocking thread. The memory engine answers at once, so the
    /// simulator runs everything on its one thread, in a replayable order.
    fn blocks(&self) -> bool {
        true
    }
    /// Bytes of data files on disk, for metrics; 0 when there are none.
    fn stored_bytes(&self) -> u64 {
        0
    }
}

/// An engine shared by a store and whoever else needs it (the hint store
/// of the same database; a simulated process restarted on the same one).
pub type SharedEngine = std::sync::Arc<dyn Engine>;

impl<E: Engine + ?Sized> Engine for std::sync::Arc<E> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        (**self).get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        (**self).put(key, value)
    }
    fn delete(&self, key: &[u8]) -> StoreResult<()> {
        (**self).delete(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).scan(start, end, limit)
    }
    fn blocks(&self) -> bool {
        (**self).blocks()
    }
    fn stored_bytes(&self) -> u64 {
        (**self).stored_bytes()
    }
}

/// The stored key of `user_key`: its ring id, big-endian, then the key.
pub fn storage_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Id::of_key(user_key).to_be_bytes().to_vec();
    key.extend_from_slice(user_key);
    key
}

/// The ring id and user key of a stored key.
pub fn split_storage_key(key: &[u8]) -> Option<(Id, &[u8])> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((Id(id), &key[8..]))
}

/// A hybrid logical clock: readings are wall-clock milliseconds in the top
/// 48 bits and a counter in the low 16, never going backwards and always
/// after any reading observed from elsewhere. The wall clock is an input.
#[derive(Debug, Default)]
pub struct Hlc {
    last: Mutex<u64>,
}

impl Hlc {
    /// A reading for a new write at wall-clock time `wall_ms`.
    pub fn now(&self, wall_ms: u64) -> u64 {
        let mut last = self.last.lock().expect("clock lock");
        *last = (wall_ms << 16).max(*last + 1);
        *last
    }

    /// Takes note of a reading made elsewhere, so later readings follow it.
    pub fn observe(&self, remote: u64) {
        let mut last = self.last.lock().expect("clock lock");
        *last = (*last).max(remote);
    }
}

/// One record with its user key: the unit of every transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub record: Record,
}

/// Records in an engine, with last-writer-wins and expiry.
pub struct Store<E> {
    engine: E,
    /// Striped locks making read-compare-write of one key atomic.
    stripes: Vec<Mutex<()>>,
    /// Every stored record's digest, expired ones included until purged.
    tree: DigestTree,
}

impl<E: Engine> Store<E> {
    /// Opens a store on `engine`, reading every record once to build the
    /// digest tree.
    pub fn new(engine: E) -> StoreResult<Store<E>> {
        let store = Store {
            engine,
            stripes: (0..64).map(|_| Mutex::new(())).collect(),
            tree: DigestTree::new(),
        };
        store.visit_ids(0, u64::MAX, |key, record| {
            store
                .tree
                .insert(Id::of_key(key), record_digest(key, &record));
        })?;
        Ok(store)
    }

    /// The digest tree of every record held.
    pub fn tree(&self) -> &DigestTree {
        &self.tree
    }

    /// Keeps the digest tree in step with one write of `user_key`.
    fn retally(&self, user_key: &[u8], old: Option<&Record>, new: Option<&Record>) {
        let id = Id::of_key(user_key);
        if let Some(old) = old {
            self.tree.remove(id, record_digest(user_key, old));
        }
        if let Some(new) = new {
            self.tree.insert(id, record_digest(user_key, new));
        }
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The same store over a shared engine (the data layer holds its store
    /// so, whatever the engine).
    pub fn into_shared(self) -> Store<SharedEngine> {
        Store {
            engine: std::sync::Arc::new(self.engine),
            stripes: self.stripes,
            tree: self.tree,
        }
    }

    fn decode(key: &[u8], bytes: &[u8]) -> StoreResult<Record> {
        Record::decode(bytes).map_err(|error| StoreError::Damaged {
            key: key.to_vec(),
            error,
        })
    }

    /// The record under `user_key`, tombstones included, unless missing or
    /// expired at `now_ms`.
    pub fn get(&self, user_key: &[u8], now_ms: u64) -> StoreResult<Option<Record>> {
        let key = storage_key(user_key);
        match self.engine.get(&key)? {
            Some(bytes) => {
                let record = Self::decode(&key, &bytes)?;
                Ok((!record.is_expired(now_ms)).then_some(record))
            }
            None => Ok(None),
        }
    }

    /// Stores `record` under `user_key` unless what is there already
    /// supersedes it. Returns whether it was stored.
    pub fn apply(&self, user_key: &[u8], record: &Record) -> StoreResult<bool> {
        let key = storage_key(user_key);
        let _guard = self.stripe(&key).lock().expect("stripe lock");
        let existing = match self.engine.get(&key)? {
            Some(bytes) => Some(Self::decode(&key, &bytes)?),
            None => None,
        };
        if existing.as_ref().is_some_and(|e| !record.supersedes(e)) {
            return Ok(false);
        }
        self.engine.put(&key, &record.encode())?;
        self.retally(user_key, existing.as_ref(), Some(record));
        Ok(true)
    }

    /// Deletes the record under `user_key` if its version is `version`
    /// (a purged tombstone). Returns whether it was deleted.
    pub fn remove_version(&self, user_key: &[u8], version: Version) -> StoreResult<bool> {
        let key = storage_key(user_key);
        let _guard = self.stripe(&key).lock().expect("stripe lock");
        let Some(bytes) = self.engine.get(&key)? else {
            return Ok(false);
        };
        let existing = Self::decode(&key, &bytes)?;
        if existing.version != version {
            return Ok(false);
        }
        self.engine.delete(&key)?;
        self.retally(user_key, Some(&existing), None);
        Ok(true)
    }

    /// Deletes the tombstone under `user_key` if its version is `version`:
    /// a tombstone every replica holds, purged. Returns whether it was.
    pub fn forget_tombstone(&self, user_key: &[u8], version: Version) -> StoreResult<bool> {
        let key = storage_key(user_key);
        let _guard = self.stripe(&key).lock().expect("stripe lock");
        let Some(bytes) = self.engine.get(&key)? else {
            return Ok(false);
        };
        let existing = Self::decode(&key, &bytes)?;
        if !existing.tombstone || existing.version != version {
            return Ok(false);
        }
        self.engine.delete(&key)?;
        self.retally(user_key, Some(&existing), None);
        Ok(true)
    }

    /// Replaces the record under `user_key` with `make(existing)`, where
    /// `existing` is what is stored (expired or not), atomically with
    /// respect to every other write of the key. Returns the previous record
    /// and the new one. The owner of a key writes through this, so that a
    /// new version is always made after seeing the one it replaces.
    pub fn update(
        &self,
        user_key: &[u8],
        make: impl FnOnce(Option<&Record>) -> Record,
    ) -> StoreResult<(Option<Record>, Record)> {
        let key = storage_key(user_key);
        let _guard = self.stripe(&key).lock().expect("stripe lock");
        let existing = match self.engine.get(&key)? {
            Some(bytes) => Some(Self::decode(&key, &bytes)?),
            None => None,
        };
        let record = make(existing.as_ref());
        self.engine.put(&key, &record.encode())?;
        self.retally(user_key, existing.as_ref(), Some(&record));
        Ok((existing, record))
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        &self.stripes[(key[7] as usize) % self.stripes.len()]
    }

    /// Up to `limit` records whose ids lie in the arc `(from, to]`, in ring
    /// order from `from`, each with its stored key; with `after`, resumes
    /// just past that stored key. Expired records are skipped.
    pub fn scan_arc(
        &self,
        from: Id,
        to: Id,
        after: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<Vec<(Vec<u8>, Record)>> {
        let mut out = Vec::new();
        let segments = arc_segments(from, to);
        // The segment holding the resume point, in ring order.
        let resume_in = after.and_then(|after| {
            segments.iter().position(|(start, end)| {
                after >= start.as_slice() && end.as_deref().is_none_or(|end| after < end)
            })
        });
        for (index, (start, end)) in segments.into_iter().enumerate() {
            let mut cursor = match (after, resume_in) {
                (Some(_), Some(at)) if index < at => continue,
                (Some(after), Some(at)) if index == at => {
                    let mut next = after.to_vec();
                    next.push(0);
                    next
                }
                _ => start,
            };
            while out.len() < limit {
                let wanted = limit - out.len();
                let batch = self.engine.scan(&cursor, end.as_deref(), wanted)?;
                let exhausted = batch.len() < wanted;
                if let Some((last, _)) = batch.last() {
                    cursor = last.clone();
                    cursor.push(0);
                }
                for (key, bytes) in batch {
                    let record = Self::decode(&key, &bytes)?;
                    if !record.is_expired(now_ms) {
                        out.push((key, record));
                    }
                }
                if exhausted {
                    break;
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes up to `limit` expired values; returns how many. Expired
    /// tombstones stay: only the replication rule that knows every replica
    /// holds one may remove it ([`Store::forget_tombstone`]).
    pub fn purge_expired(&self, now_ms: u64, limit: usize) -> StoreResult<usize> {
        let mut purged = 0;
        let mut cursor = Vec::new();
        loop {
            let batch = self.engine.scan(&cursor, None, 1024)?;
            let Some((last, _)) = batch.last() else {
                return Ok(purged);
            };
            cursor = last.clone();
            cursor.push(0);
            for (key, bytes) in &batch {
                let record = Self::decode(key, bytes)?;
                if record.is_expired(now_ms) && !record.tombstone {
                    let _guard = self.stripe(key).lock().expect("stripe lock");
                    // A write may have replaced it since the scan.
                    match self.engine.get(key)? {
                        Some(now_there) if now_there == *bytes => {}
                        _ => continue,
                    }
                    self.engine.delete(key)?;
                    if let Some((_, user_key)) = split_storage_key(key) {
                        self.retally(user_key, Some(&record), None);
                    }
                    purged += 1;
                    if purged == limit {
                        return Ok(purged);
                    }
                }
            }
        }
    }

    /// Calls `visit` with the user key and record of every record whose id
    /// lies in `[low, high]`, expired ones included, in ring order.
    pub fn visit_ids(
        &self,
        low: u64,
        high: u64,
        mut visit: impl FnMut(&[u8], Record),
    ) -> StoreResult<()> {
        self.visit_ids_while(low, high, |key, record| {
            visit(key, record);
            true
        })
    }

    /// [`Store::visit_ids`] until `visit` returns false.
    pub fn visit_ids_while(
        &self,
        low: u64,
        high: u64,
        mut visit: impl FnMut(&[u8], Record) -> bool,
    ) -> StoreResult<()> {
        const PAGE: usize = 256;
        let mut cursor = low.to_be_bytes().to_vec();
        let end = high.checked_add(1).map(|end| end.to_be_bytes().to_vec());
        loop {
            let page = self.engine.scan(&cursor, end.as_deref(), PAGE)?;
            for (key, bytes) in &page {
                let record = Self::decode(key, bytes)?;
                let (_, user_key) = split_storage_key(key).ok_or_else(|| StoreError::Damaged {
                    key: key.clone(),
                    error: DecodeError::Short(key.len()),
                })?;
                if !visit(user_key, record) {
                    return Ok(());
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => {
                    cursor = last.clone();
                    cursor.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}

/// The stored-key ranges `[start, end)` of the arc `(from, to]`, in ring
/// order: one range, or two when the arc wraps past zero (`end` of `None`
/// is "to the last key").
fn arc_segments(from: Id, to: Id) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let bound = |id: Id| id.to_be_bytes().to_vec();
    // Stored keys with ids after `id` start at bound(id + 1); none follow MAX.
    let after = |id: Id| (id.0 != u64::MAX).then(|| bound(id.next()));
    if from.0 < to.0 {
        return vec![(after(from).expect("from < MAX"), after(to))];
    }
    // Wraps past zero (from == to: the whole circle).
    let mut segments = Vec::new();
    if let Some(start) = after(from) {
        segments.push((start, None));
    }
    segments.push((bound(Id(0)), after(to)));
    segments
}

#[cfg(test)]
mod tests;
