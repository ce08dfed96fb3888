//! Anti-entropy between two in-memory stores: rounds converge to the
//! newest of every record in the arc, touch nothing outside it, and cost
//! what the differences cost, not what the arc holds.

use super::*;
use crate::store::digest as tree;
use crate::store::MemoryEngine;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn store() -> Store<MemoryEngine> {
    Store::new(MemoryEngine::new()).unwrap()
}

fn key(n: u32) -> Vec<u8> {
    format!("key-{n}").into_bytes()
}

/// A record whose content follows from its version, as every real
/// record's does (a version is made once, by one write).
fn record(clock: u64, tombstone: bool) -> Record {
    let version = Version {
        clock,
        writer: 7 + u64::from(tombstone),
    };
    if tombstone {
        Record::tombstone(version, None)
    } else {
        Record::value(version, format!("v{clock}").into_bytes(), None)
    }
}

/// Every record of `store`, by user key.
fn contents(store: &Store<MemoryEngine>) -> BTreeMap<Vec<u8>, Record> {
    let mut all = BTreeMap::new();
    store
        .visit_ids(0, u64::MAX, |key, record| {
            all.insert(key.to_vec(), record);
        })
        .unwrap();
    all
}

fn edge() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), Just(0), Just(u64::MAX), Just(1 << 63)]
}

/// A record's (clock, tombstone), if a side holds it.
type Side = Option<(u64, bool)>;

/// A key, and its record on side A, on side B, or both.
fn sides() -> impl Strategy<Value = Vec<(u32, Side, Side)>> {
    proptest::collection::vec(
        (
            0u32..400,
            proptest::option::of((1u64..5, any::<bool>())),
            proptest::option::of((1u64..5, any::<bool>())),
        ),
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_round_leaves_both_sides_with_the_newest_of_every_record_in_the_arc(
        records in sides(), from in edge(), to in edge(),
    ) {
        let (a, b) = (store(), store());
        for (n, on_a, on_b) in &records {
            if let Some((clock, tombstone)) = on_a {
                a.apply(&key(*n), &record(*clock, *tombstone)).unwrap();
            }
            if let Some((clock, tombstone)) = on_b {
                b.apply(&key(*n), &record(*clock, *tombstone)).unwrap();
            }
        }
        let (before_a, before_b) = (contents(&a), contents(&b));
        let arc = ArcRange::new(Id(from), Id(to));
        sync_in_process(arc, &a, &b, 0).unwrap();
        let (after_a, after_b) = (contents(&a), contents(&b));

        let all_keys: std::collections::BTreeSet<&Vec<u8>> =
            before_a.keys().chain(before_b.keys()).collect();
        for key in all_keys {
            let inside = arc.contains(Id::of_key(key));
            let newest = match (before_a.get(key), before_b.get(key)) {
                (Some(x), Some(y)) => if y.supersedes(x) { y } else { x },
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => unreachable!(),
            };
            if inside {
                prop_assert_eq!(after_a.get(key), Some(newest));
                prop_assert_eq!(after_b.get(key), Some(newest));
            } else {
                prop_assert_eq!(after_a.get(key), before_a.get(key));
                prop_assert_eq!(after_b.get(key), before_b.get(key));
            }
        }
        // And a second round finds nothing to do.
        let again = sync_in_process(arc, &a, &b, 0).unwrap();
        prop_assert!(again.in_sync());
        prop_assert_eq!(again.round_trips, 1);
    }

    #[test]
    fn the_summary_of_an_arc_is_the_sum_over_its_records(
        keys in proptest::collection::btree_set(0u32..5000, 0..400), from in edge(), to in edge(),
    ) {
        let s = store();
        let arc = ArcRange::new(Id(from), Id(to));
        let mut expected = Summary::default();
        for n in &keys {
            let r = record(u64::from(*n), false);
            s.apply(&key(*n), &r).unwrap();
            if arc.contains(Id::of_key(&key(*n))) {
                expected.add(&Summary::of(tree::record_digest(&key(*n), &r)));
            }
        }
        prop_assert_eq!(s.summarize(arc, NodePath::ROOT).unwrap(), expected);
    }
}

#[test]
fn one_difference_among_ten_thousand_moves_one_record_and_a_few_summaries() {
    let (a, b) = (store(), store());
    for n in 0..10_000 {
        a.apply(&key(n), &record(1, false)).unwrap();
        b.apply(&key(n), &record(1, false)).unwrap();
    }
    b.apply(&key(4321), &record(2, false)).unwrap();
    let whole = ArcRange::new(Id(0), Id(0));
    let stats = sync_in_process(whole, &a, &b, 0).unwrap();
    assert_eq!((stats.pushed, stats.pulled), (0, 1));
    // One path from the root to a listed node: 16 children per level.
    assert!(stats.nodes_compared <= 1 + 16 * 4, "{stats:?}");
    assert!(stats.digests_received <= LIST_MAX, "{stats:?}");
    assert_eq!(a.get(&key(4321), 0).unwrap(), Some(record(2, false)));
    assert_eq!(a.tree().root(), b.tree().root());
}

#[test]
fn an_empty_replica_is_sent_everything_without_listing_anything() {
    let (a, b) = (store(), store());
    for n in 0..3000 {
        a.apply(&key(n), &record(1, n % 10 == 0)).unwrap();
    }
    let arc = ArcRange::new(Id(u64::MAX / 3), Id(u64::MAX / 3 * 2));
    let stats = sync_in_process(arc, &a, &b, 0).unwrap();
    assert_eq!(stats.digests_received, 0);
    assert_eq!(stats.pulled, 0);
    assert_eq!(
        stats.pushed,
        a.summarize(arc, NodePath::ROOT).unwrap().count
    );
    assert_eq!(
        a.summarize(arc, NodePath::ROOT).unwrap(),
        b.summarize(arc, NodePath::ROOT).unwrap()
    );
    // Nothing outside the arc went.
    assert_eq!(b.tree().root().count, stats.pushed);
}

#[test]
fn an_expired_record_is_not_sent_to_a_replica_without_the_key_but_beats_an_older_live_one() {
    let (a, b) = (store(), store());
    let expired = Record::value(
        Version {
            clock: 9,
            writer: 1,
        },
        b"old".to_vec(),
        Some(50),
    );
    a.apply(b"gone", &expired).unwrap();
    a.apply(b"shadowed", &expired).unwrap();
    b.apply(b"shadowed", &record(3, false)).unwrap();
    let whole = ArcRange::new(Id(0), Id(0));
    let stats = sync_in_process(whole, &a, &b, 100).unwrap();
    assert_eq!(stats.pushed, 1);
    assert_eq!(b.get(b"gone", 0).unwrap(), None);
    // B's older live value is superseded, so it is gone at B too.
    assert_eq!(b.get(b"shadowed", 100).unwrap(), None);
}

#[test]
fn expired_tombstones_only_the_responder_holds_are_reported_not_pulled() {
    let (a, b) = (store(), store());
    let version = Version {
        clock: 9,
        writer: 1,
    };
    b.apply(b"purged here", &Record::tombstone(version, Some(50)))
        .unwrap();
    b.apply(b"live", &Record::tombstone(version, Some(500)))
        .unwrap();
    let whole = ArcRange::new(Id(0), Id(0));
    let mut session = Session::new(whole, 100);
    while let Step::Send(request) = session.next(&a).unwrap() {
        let reply = respond(&b, request).unwrap();
        session.on_reply(&a, reply).unwrap();
    }
    // The tombstone still within its grace is pulled; the expired one is
    // left where it is, and reported so that the owner can have it forgotten.
    assert_eq!(session.stats().pulled, 1);
    assert_eq!(a.get(b"purged here", 0).unwrap(), None);
    assert_eq!(
        session.take_expired_there(),
        vec![Entry {
            key: b"purged here".to_vec(),
            record: Record::tombstone(version, Some(50)),
        }]
    );
}

#[test]
fn malformed_answers_end_the_round_with_an_error() {
    let a = store();
    for n in 0..200 {
        a.apply(&key(n), &record(1, false)).unwrap();
    }
    let whole = ArcRange::new(Id(0), Id(0));
    let answers = [
        SyncReply::Pushed { applied: 1 },
        SyncReply::Summaries(vec![]),
        SyncReply::Summaries(vec![Summary::default(); 2]),
    ];
    for answer in answers {
        let mut session = Session::new(whole, 0);
        assert!(matches!(session.next(&a).unwrap(), Step::Send(_)));
        let error = session.on_reply(&a, answer).unwrap_err();
        assert!(matches!(error, SyncError::BadReply(_)), "{error}");
    }
    // A pull answered with a record that was not asked for.
    let b = store();
    b.apply(b"other", &record(5, false)).unwrap();
    let mut session = Session::new(whole, 0);
    session.to_pull.push_back(b"mine".to_vec());
    let Step::Send(request) = session.next(&a).unwrap() else {
        panic!()
    };
    assert!(matches!(request, SyncRequest::Pull { .. }));
    let stranger = SyncReply::Pulled {
        entries: vec![Entry {
            key: b"other".to_vec(),
            record: record(5, false),
        }],
        answered: 1,
    };
    assert!(session.on_reply(&a, stranger).is_err());
    assert_eq!(a.get(b"other", 0).unwrap(), None);
}

#[test]
fn digests_outside_the_listed_nodes_are_refused() {
    let a = store();
    let arc = ArcRange::new(Id(0), Id(u64::MAX / 2));
    let node = NodePath {
        depth: 1,
        prefix: 0,
    };
    let mut session = Session::new(arc, 0);
    session.frontier.clear();
    session.to_list.push(node);
    session.next(&a).unwrap();
    // A key whose id is in the upper half of the circle: not under node 0.
    let outside = (0..)
        .map(key)
        .find(|k| Id::of_key(k).0 >> 60 == 0xf)
        .unwrap();
    let reply = SyncReply::Digests(vec![KeyDigest {
        key: outside,
        version: Version::default(),
        tombstone: false,
        expires_at: None,
    }]);
    assert!(session.on_reply(&a, reply).is_err());
}

#[test]
fn arcs_are_cut_into_the_right_segments() {
    assert_eq!(ArcRange::new(Id(5), Id(10)).segments(), vec![(6, 10)]);
    assert_eq!(
        ArcRange::new(Id(10), Id(5)).segments(),
        vec![(11, u64::MAX), (0, 5)]
    );
    assert_eq!(ArcRange::new(Id(u64::MAX), Id(3)).segments(), vec![(0, 3)]);
    assert_eq!(
        ArcRange::new(Id(7), Id(7)).segments(),
        vec![(8, u64::MAX), (0, 7)]
    );
    let half = NodePath {
        depth: 1,
        prefix: 8,
    };
    assert_eq!(
        ArcRange::new(Id(0), Id(u64::MAX)).overlap(half),
        Overlap::Inside
    );
    assert_eq!(
        ArcRange::new(Id(1 << 63), Id(u64::MAX)).overlap(half),
        Overlap::Partial
    );
    assert_eq!(ArcRange::new(Id(0), Id(5)).overlap(half), Overlap::Outside);
}

#[test]
fn a_listing_of_more_records_than_an_answer_may_hold_is_refused() {
    let s = store();
    for n in 0..(MAX_DIGESTS as u32 + 10) {
        s.apply(&key(n), &record(1, false)).unwrap();
    }
    let whole = ArcRange::new(Id(0), Id(0));
    let everything = SyncRequest::Digests {
        arc: whole,
        nodes: vec![NodePath::ROOT],
    };
    assert!(matches!(
        respond(&s, everything),
        Err(SyncError::BadRequest(_))
    ));
    // A small node is answered.
    let leaf = NodePath {
        depth: tree::LEAF_DEPTH,
        prefix: 7,
    };
    let small = SyncRequest::Digests {
        arc: whole,
        nodes: vec![leaf],
    };
    assert!(matches!(respond(&s, small), Ok(SyncReply::Digests(_))));
}

proptest! {
    /// Brute force at the arcs' edges and at random ids: an id is in
    /// exactly one gap when no arc covers it, and in none otherwise.
    #[test]
    fn the_gaps_are_exactly_what_no_arc_covers(
        arcs in proptest::collection::vec((edge(), edge()), 0..6),
        probes in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let covered: Vec<ArcRange> = arcs.iter().map(|&(from, to)| ArcRange::new(Id(from), Id(to))).collect();
        let gaps = ArcRange::gaps(&covered);
        let near = covered.iter().flat_map(|a| {
            [a.from.0, a.to.0].into_iter().flat_map(|x| [x.wrapping_sub(1), x, x.wrapping_add(1)])
        });
        for id in probes.into_iter().chain(near).chain([0, u64::MAX]).map(Id) {
            let in_arcs = covered.iter().any(|a| a.contains(id));
            let in_gaps = gaps.iter().filter(|g| g.contains(id)).count();
            prop_assert_eq!(in_gaps, usize::from(!in_arcs), "{:?} arcs {:?} gaps {:?}", id, covered, gaps);
        }
    }
}

#[test]
fn every_request_of_a_round_keeps_to_its_bounds() {
    // A holds 3,000 records B lacks (300-byte values: the byte bound cuts
    // push batches first) and B 2,000 that A lacks (more than one pull).
    let (a, b) = (store(), store());
    let value = |n: u32| {
        Record::value(
            Version {
                clock: 1,
                writer: 7,
            },
            vec![n as u8; 300],
            None,
        )
    };
    for n in 0..3000 {
        a.apply(&key(n), &value(n)).unwrap();
    }
    for n in 3000..5000 {
        b.apply(&key(n), &value(n)).unwrap();
    }
    let whole = ArcRange::new(Id(0), Id(0));
    let mut session = Session::new(whole, 0);
    let (mut pushes, mut pulls) = (Vec::new(), Vec::new());
    while let Step::Send(request) = session.next(&a).unwrap() {
        match &request {
            SyncRequest::Summaries { nodes, .. } => assert!(nodes.len() <= MAX_SUMMARY_NODES),
            SyncRequest::Digests { nodes, .. } => assert!(nodes.len() <= MAX_LIST_NODES),
            SyncRequest::Pull { keys } => {
                assert!(keys.len() <= MAX_PULL_KEYS);
                pulls.push(keys.len());
            }
            SyncRequest::Push { entries } => {
                let bytes: usize = entries
                    .iter()
                    .map(|e| e.key.len() + e.record.value.len())
                    .sum();
                assert!(entries.len() <= BATCH_RECORDS, "{} records", entries.len());
                // A batch ends at the first record that reaches the bound.
                assert!(bytes < BATCH_BYTES + 400, "{bytes} bytes");
                pushes.push(entries.len());
            }
        }
        let reply = respond(&b, request).unwrap();
        if let SyncReply::Pulled { entries, .. } = &reply {
            let bytes: usize = entries
                .iter()
                .map(|e| e.key.len() + e.record.value.len())
                .sum();
            assert!(bytes < BATCH_BYTES + 400, "pulled {bytes} bytes");
        }
        session.on_reply(&a, reply).unwrap();
    }
    assert_eq!(pushes.iter().sum::<usize>(), 3000);
    assert!(
        pushes.len() > 1 && pushes.iter().all(|n| *n < BATCH_RECORDS),
        "{pushes:?}"
    );
    assert_eq!(pulls.iter().sum::<usize>(), 2000);
    assert!(pulls.contains(&MAX_PULL_KEYS), "{pulls:?}");
    assert_eq!(contents(&a), contents(&b));
}
