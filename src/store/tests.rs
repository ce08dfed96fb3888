//! The two engines, driven by the same random operations, must agree; and
//! the store's own rules (last writer wins, expiry, arc scans) on both.

use super::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Apply {
        key: u8,
        clock: u64,
        tombstone: bool,
        expires_at: Option<u64>,
        value: u8,
    },
    Get {
        key: u8,
        now: u64,
    },
    Scan {
        from: u64,
        to: u64,
        limit: usize,
        now: u64,
    },
    Purge {
        now: u64,
    },
}

fn user_key(key: u8) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0u64..50, any::<bool>(), proptest::option::of(0u64..60), any::<u8>()).prop_map(
            |(key, clock, tombstone, expires_at, value)| Op::Apply { key, clock, tombstone, expires_at, value }
        ),
        2 => (0u8..24, 0u64..60).prop_map(|(key, now)| Op::Get { key, now }),
        // Arc ends biased to the edges of the circle, where wrapping bugs live.
        2 => (edge(), edge(), 1usize..10, 0u64..60).prop_map(|(from, to, limit, now)| Op::Scan { from, to, limit, now }),
        1 => (0u64..60).prop_map(|now| Op::Purge { now }),
    ]
}

fn edge() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), Just(0), Just(u64::MAX), Just(u64::MAX / 2)]
}

/// Runs `op` on a store; the answer as something comparable.
fn run<E: Engine>(store: &Store<E>, op: &Op) -> String {
    match op {
        Op::Apply {
            key,
            clock,
            tombstone,
            expires_at,
            value,
        } => {
            let version = Version {
                clock: *clock,
                writer: 1,
            };
            let record = if *tombstone {
                Record::tombstone(version, None)
            } else {
                Record::value(version, vec![*value], *expires_at)
            };
            format!("{:?}", store.apply(&user_key(*key), &record).unwrap())
        }
        Op::Get { key, now } => format!("{:?}", store.get(&user_key(*key), *now).unwrap()),
        Op::Scan {
            from,
            to,
            limit,
            now,
        } => {
            // Read the arc in pages of `limit`, resuming after the last key.
            let mut all = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = store
                    .scan_arc(Id(*from), Id(*to), after.as_deref(), *limit, *now)
                    .unwrap();
                let done = page.len() < *limit;
                after = page.last().map(|(k, _)| k.clone());
                all.extend(page);
                if done {
                    break;
                }
            }
            format!("{all:?}")
        }
        Op::Purge { now } => format!("{}", store.purge_expired(*now, usize::MAX).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rocksdb_and_memory_engines_give_the_same_answers(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let rocks = Store::new(RocksEngine::open(dir.path()).unwrap()).unwrap();
        let memory = Store::new(MemoryEngine::new()).unwrap();
        for op in &ops {
            prop_assert_eq!(run(&rocks, op), run(&memory, op), "{:?}", op);
        }
    }

    #[test]
    fn an_arc_scan_returns_exactly_the_keys_in_the_arc(from in edge(), to in edge(), keys in proptest::collection::btree_set(0u8..=255, 0..60)) {
        let store = Store::new(MemoryEngine::new()).unwrap();
        for &key in &keys {
            store.apply(&user_key(key), &Record::value(Version { clock: 1, writer: 1 }, vec![key], None)).unwrap();
        }
        let scanned: Vec<Id> = store
            .scan_arc(Id(from), Id(to), None, usize::MAX, 0)
            .unwrap()
            .iter()
            .map(|(k, _)| split_storage_key(k).unwrap().0)
            .collect();
        let mut expected: Vec<Id> = keys
            .iter()
            .map(|&k| Id::of_key(&user_key(k)))
            .filter(|&id| crate::id::between_open_closed(Id(from), id, Id(to)))
            .collect();
        // Ring order, starting just after `from`.
        expected.sort_by_key(|id| Id(from).distance_to(*id).wrapping_sub(1));
        prop_assert_eq!(scanned, expected);
    }
}

#[test]
fn an_older_write_never_replaces_a_newer_one_not_even_a_delete() {
    let store = Store::new(MemoryEngine::new()).unwrap();
    let newer = Record::tombstone(
        Version {
            clock: 10,
            writer: 1,
        },
        None,
    );
    let older = Record::value(
        Version {
            clock: 9,
            writer: 7,
        },
        b"zombie".to_vec(),
        None,
    );
    assert!(store.apply(b"k", &newer).unwrap());
    assert!(!store.apply(b"k", &older).unwrap());
    assert_eq!(store.get(b"k", 0).unwrap(), Some(newer));
}

#[test]
fn expired_records_are_never_returned_and_are_purged() {
    let store = Store::new(MemoryEngine::new()).unwrap();
    let record = Record::value(
        Version {
            clock: 1,
            writer: 1,
        },
        b"v".to_vec(),
        Some(100),
    );
    store.apply(b"k", &record).unwrap();
    assert!(store.get(b"k", 99).unwrap().is_some());
    assert!(store.get(b"k", 100).unwrap().is_none());
    assert!(store
        .scan_arc(Id(0), Id(0), None, 10, 100)
        .unwrap()
        .is_empty());
    assert_eq!(store.purge_expired(100, 10).unwrap(), 1);
    assert!(store.engine().get(&storage_key(b"k")).unwrap().is_none());
}

#[test]
fn data_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let record = Record::value(
        Version {
            clock: 3,
            writer: 2,
        },
        b"kept".to_vec(),
        None,
    );
    {
        let store = Store::new(RocksEngine::open(dir.path()).unwrap()).unwrap();
        store.apply(b"k", &record).unwrap();
    }
    let store = Store::new(RocksEngine::open(dir.path()).unwrap()).unwrap();
    assert_eq!(store.get(b"k", 0).unwrap(), Some(record));
}

#[test]
fn a_second_process_cannot_open_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksEngine::open(dir.path()).unwrap();
    assert!(RocksEngine::open(dir.path()).is_err());
}

#[test]
fn the_clock_never_goes_backwards_and_follows_what_it_observes() {
    let clock = Hlc::default();
    let first = clock.now(1_000);
    let same_ms = clock.now(1_000);
    let wall_went_back = clock.now(900);
    assert!(first < same_ms && same_ms < wall_went_back);
    clock.observe(5_000 << 16);
    assert!(clock.now(1_000) > 5_000 << 16);
}

#[test]
fn an_expired_tombstone_still_shadows_older_writes_until_it_is_purged() {
    let store = Store::new(MemoryEngine::new()).unwrap();
    let version = |clock| Version { clock, writer: 1 };
    let tombstone = Record::tombstone(version(10), Some(100));
    let older = Record::value(version(9), b"zombie".to_vec(), None);
    assert!(store.apply(b"k", &tombstone).unwrap());
    // Past its grace, a tombstone reads as absent, like any tombstone...
    assert_eq!(store.get(b"k", 200).unwrap(), None);
    // ...and an older write arriving late still loses to it.
    assert!(!store.apply(b"k", &older).unwrap());
    // The purge of expired values leaves it: only the replication rule
    // (every replica holds it) forgets it, and only that version.
    assert_eq!(store.purge_expired(200, 10).unwrap(), 0);
    assert!(!store.forget_tombstone(b"k", version(11)).unwrap());
    assert!(store.forget_tombstone(b"k", version(10)).unwrap());
    assert_eq!(store.tree().root().count, 0);
    // Forgotten, it no longer shadows anything: why it must first be on
    // every replica.
    assert!(store.apply(b"k", &older).unwrap());
    assert!(!store.forget_tombstone(b"k", version(9)).unwrap());
}
