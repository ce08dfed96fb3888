//! Hinted hand-off: writes held for a replica that could not be reached.
//!
//! A hint is a record and the member it was meant for, kept in its own
//! column family (never mixed with the ring's records, so it is neither
//! served nor counted in the digest tree) under `target address || 0 ||
//! sequence number`: the hints of one target are one contiguous range, in
//! arrival order. The holder retries each target with growing pauses and
//! deletes a hint once the target acknowledged it. Hints are bounded per
//! process in number and bytes; past the bound a new hint is refused and
//! anti-entropy repairs what it would have carried.

use crate::id::Id;
use crate::ring::NodeRef;
use crate::store::{Engine, Entry, Record, StoreError, StoreResult, BATCH_BYTES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most hints one process holds.
pub const MAX_HINTS: u64 = 1_000_000;
/// Most bytes of hints one process holds.
pub const MAX_HINT_BYTES: u64 = 256 * 1024 * 1024;

/// One held write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    stored_key: Vec<u8>,
    bytes: u64,
    pub target: NodeRef,
    pub entry: Entry,
}

/// The hints of one process.
pub struct Hints<E> {
    engine: E,
    /// Hints held and their bytes.
    held: Mutex<(u64, u64)>,
    sequence: AtomicU64,
    /// Most hints and bytes held ([`MAX_HINTS`], [`MAX_HINT_BYTES`]).
    bounds: (u64, u64),
}

fn damaged(key: &[u8], why: &str) -> StoreError {
    StoreError::Engine(format!("hint under {key:?} is damaged: {why}"))
}

impl<E: Engine> Hints<E> {
    /// Opens the hints in `engine`, counting those already there.
    pub fn open(engine: E) -> StoreResult<Hints<E>> {
        Hints::open_bounded(engine, MAX_HINTS, MAX_HINT_BYTES)
    }

    /// [`Hints::open`] holding at most `max_hints` hints of `max_bytes` in
    /// all (tests use small bounds).
    pub fn open_bounded(engine: E, max_hints: u64, max_bytes: u64) -> StoreResult<Hints<E>> {
        let hints = Hints {
            engine,
            held: Mutex::new((0, 0)),
            sequence: AtomicU64::new(0),
            bounds: (max_hints, max_bytes),
        };
        let mut cursor = Vec::new();
        let (mut count, mut bytes, mut last_sequence) = (0, 0, 0);
        loop {
            let page = hints.engine.scan(&cursor, None, 1024)?;
            for (key, value) in &page {
                count += 1;
                bytes += (key.len() + value.len()) as u64;
                if let Some(tail) = key.len().checked_sub(8) {
                    let sequence = u64::from_be_bytes(key[tail..].try_into().expect("8 bytes"));
                    last_sequence = last_sequence.max(sequence);
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == 1024 => {
                    cursor = last.clone();
                    cursor.push(0);
                }
                _ => break,
            }
        }
        *hints.held.lock().expect("hints lock") = (count, bytes);
        hints.sequence.store(last_sequence + 1, Ordering::SeqCst);
        Ok(hints)
    }

    /// Hints held now.
    pub fn len(&self) -> u64 {
        self.held.lock().expect("hints lock").0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `entry` for `target`. Returns false, storing nothing, when the
    /// bound on hints is reached.
    pub fn add(&self, target: &NodeRef, entry: &Entry) -> StoreResult<bool> {
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        let mut key = target.addr.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&sequence.to_be_bytes());
        let record = entry.record.encode();
        let mut value = Vec::with_capacity(12 + entry.key.len() + record.len());
        value.extend_from_slice(&target.id.0.to_be_bytes());
        value.extend_from_slice(&(entry.key.len() as u32).to_be_bytes());
        value.extend_from_slice(&entry.key);
        value.extend_from_slice(&record);
        let size = (key.len() + value.len()) as u64;
        let mut held = self.held.lock().expect("hints lock");
        if held.0 + 1 > self.bounds.0 || held.1 + size > self.bounds.1 {
            return Ok(false);
        }
        self.engine.put(&key, &value)?;
        held.0 += 1;
        held.1 += size;
        Ok(true)
    }

    /// The addresses hints are held for.
    pub fn targets(&self) -> StoreResult<Vec<String>> {
        let mut targets = Vec::new();
        let mut cursor = Vec::new();
        while let Some((key, _)) = self.engine.scan(&cursor, None, 1)?.pop() {
            let end = key
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| damaged(&key, "no address"))?;
            let addr = String::from_utf8_lossy(&key[..end]).into_owned();
            // Addresses hold no byte below 0x21: this skips all of them.
            cursor = key[..end].to_vec();
            cursor.push(1);
            targets.push(addr);
        }
        Ok(targets)
    }

    /// Up to `limit` hints held for `addr`, oldest first, cut once they
    /// hold [`BATCH_BYTES`] (one at least): what one message may carry.
    pub fn batch(&self, addr: &str, limit: usize) -> StoreResult<Vec<Hint>> {
        let mut start = addr.as_bytes().to_vec();
        start.push(0);
        let mut end = addr.as_bytes().to_vec();
        end.push(1);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (key, value) in self.engine.scan(&start, Some(&end), limit)? {
            if !batch.is_empty() && bytes + value.len() > BATCH_BYTES {
                break;
            }
            bytes += value.len();
            batch.push(decode(key, &value)?);
        }
        Ok(batch)
    }

    /// Forgets hints that were delivered.
    pub fn remove(&self, delivered: &[Hint]) -> StoreResult<()> {
        for hint in delivered {
            self.engine.delete(&hint.stored_key)?;
            let mut held = self.held.lock().expect("hints lock");
            held.0 = held.0.saturating_sub(1);
            held.1 = held.1.saturating_sub(hint.bytes);
        }
        Ok(())
    }
}

fn decode(stored_key: Vec<u8>, value: &[u8]) -> StoreResult<Hint> {
    let end = stored_key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| damaged(&stored_key, "no address"))?;
    let addr = String::from_utf8_lossy(&stored_key[..end]).into_owned();
    if value.len() < 12 {
        return Err(damaged(&stored_key, "too short"));
    }
    let id = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
    let key_len = u32::from_be_bytes(value[8..12].try_into().expect("4 bytes")) as usize;
    let key = value
        .get(12..12 + key_len)
        .ok_or_else(|| damaged(&stored_key, "key cut short"))?
        .to_vec();
    let record =
        Record::decode(&value[12 + key_len..]).map_err(|e| damaged(&stored_key, &e.to_string()))?;
    Ok(Hint {
        bytes: (stored_key.len() + value.len()) as u64,
        stored_key,
        target: NodeRef::new(Id(id), addr),
        entry: Entry { key, record },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryEngine, Version};

    fn entry(n: u64) -> Entry {
        Entry {
            key: format!("k{n}").into_bytes(),
            record: Record::value(
                Version {
                    clock: n,
                    writer: 1,
                },
                vec![7; 10],
                None,
            ),
        }
    }

    #[test]
    fn hints_are_kept_per_target_in_order_and_forgotten_once_delivered() {
        let hints = Hints::open(MemoryEngine::new()).unwrap();
        let a = NodeRef::new(Id(1), "10.0.0.1:1");
        let b = NodeRef::new(Id(2), "10.0.0.1:10");
        for n in 0..5 {
            assert!(hints.add(&a, &entry(n)).unwrap());
            assert!(hints.add(&b, &entry(100 + n)).unwrap());
        }
        assert_eq!(hints.len(), 10);
        assert_eq!(hints.targets().unwrap(), vec!["10.0.0.1:1", "10.0.0.1:10"]);
        let for_a = hints.batch("10.0.0.1:1", 3).unwrap();
        assert_eq!(for_a.len(), 3);
        assert_eq!(for_a[0].target, a);
        assert_eq!(
            for_a.iter().map(|h| h.entry.clone()).collect::<Vec<_>>(),
            (0..3).map(entry).collect::<Vec<_>>()
        );
        hints.remove(&for_a).unwrap();
        assert_eq!(hints.batch("10.0.0.1:1", 10).unwrap().len(), 2);
        assert_eq!(hints.len(), 7);
        let rest: Vec<Hint> = hints
            .batch("10.0.0.1:1", 10)
            .unwrap()
            .into_iter()
            .chain(hints.batch("10.0.0.1:10", 10).unwrap())
            .collect();
        hints.remove(&rest).unwrap();
        assert!(hints.is_empty());
        assert!(hints.targets().unwrap().is_empty());
    }

    #[test]
    fn hints_survive_reopening_and_new_ones_follow_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let target = NodeRef::new(Id(9), "h:1");
        {
            let engine = crate::store::RocksEngine::open(dir.path()).unwrap();
            let hints = Hints::open(engine.hints()).unwrap();
            hints.add(&target, &entry(1)).unwrap();
        }
        let engine = crate::store::RocksEngine::open(dir.path()).unwrap();
        let hints = Hints::open(engine.hints()).unwrap();
        assert_eq!(hints.len(), 1);
        hints.add(&target, &entry(2)).unwrap();
        let held = hints.batch("h:1", 10).unwrap();
        assert_eq!(held[0].entry, entry(1));
        assert_eq!(held[1].entry, entry(2));
        // The ring's records are elsewhere: the default family is empty.
        assert!(engine.scan(&[], None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_batch_holds_what_one_message_may_carry_and_at_least_one_hint() {
        let hints = Hints::open(MemoryEngine::new()).unwrap();
        let target = NodeRef::new(Id(1), "10.0.0.1:1");
        let big = |n: u64| Entry {
            key: format!("k{n}").into_bytes(),
            record: Record::value(
                Version {
                    clock: n,
                    writer: 1,
                },
                vec![7; BATCH_BYTES / 3],
                None,
            ),
        };
        for n in 0..5 {
            hints.add(&target, &big(n)).unwrap();
        }
        // Three values of a third of the bound each do not fit with their
        // keys and versions: two go in a batch, whatever the count limit.
        let batch = hints.batch("10.0.0.1:1", 256).unwrap();
        assert_eq!(batch.len(), 2);
        let huge = Entry {
            record: Record::value(
                Version {
                    clock: 9,
                    writer: 1,
                },
                vec![7; 2 * BATCH_BYTES],
                None,
            ),
            ..big(9)
        };
        let other = NodeRef::new(Id(2), "10.0.0.2:1");
        hints.add(&other, &huge).unwrap();
        assert_eq!(hints.batch("10.0.0.2:1", 256).unwrap().len(), 1);
    }

    #[test]
    fn past_either_bound_a_hint_is_refused_until_delivered_ones_make_room() {
        let target = NodeRef::new(Id(1), "10.0.0.1:1");
        // By count: three at most.
        let hints = Hints::open_bounded(MemoryEngine::new(), 3, u64::MAX).unwrap();
        for n in 0..3 {
            assert!(hints.add(&target, &entry(n)).unwrap());
        }
        assert!(!hints.add(&target, &entry(3)).unwrap(), "a fourth was kept");
        assert_eq!(hints.len(), 3);
        let first = hints.batch("10.0.0.1:1", 1).unwrap();
        hints.remove(&first).unwrap();
        assert!(hints.add(&target, &entry(3)).unwrap());
        // By bytes: room for two of these, not three.
        let one = {
            let probe = Hints::open(MemoryEngine::new()).unwrap();
            probe.add(&target, &entry(0)).unwrap();
            let bytes = probe.held.lock().unwrap().1;
            bytes
        };
        let hints = Hints::open_bounded(MemoryEngine::new(), u64::MAX, 2 * one + one / 2).unwrap();
        assert!(hints.add(&target, &entry(0)).unwrap());
        assert!(hints.add(&target, &entry(1)).unwrap());
        assert!(
            !hints.add(&target, &entry(2)).unwrap(),
            "past the byte bound"
        );
        assert_eq!(hints.len(), 2);
    }
}
