//! Scenario tests of replication in the deterministic simulator: quorum
//! writes and reads, hints and anti-entropy over a network that loses
//! messages, with processes that crash, restart and lose their disks.
//! Each test is one story; a failing one prints its seed, and the same
//! seed replays the same run.

use chordal::sim::replication::{ReplicaSim, ReplicaSimConfig};
use chordal::store::Version;
use std::collections::BTreeMap;

fn seed(base: u64) -> u64 {
    let shift: u64 = std::env::var("CHORDAL_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    base + shift * 1000
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// Rounds of anti-entropy without loss until every key's preference list
/// agrees; the number of rounds it took.
fn converge(sim: &mut ReplicaSim, what: &str) -> usize {
    for round in 1..=5 {
        sim.anti_entropy();
        if sim.divergent_keys().is_empty() {
            return round;
        }
    }
    panic!(
        "{what}: {} keys still differ after 5 rounds",
        sim.divergent_keys().len()
    );
}

/// Every acknowledged write reads back at its version or a newer one.
fn check_acknowledged(sim: &mut ReplicaSim, acked: &BTreeMap<Vec<u8>, Version>, when: &str) {
    for (key, version) in acked {
        let found = sim
            .read(key)
            .unwrap_or_else(|e| panic!("{when}: read of {key:?} failed: {e:?}"));
        let found = found.unwrap_or_else(|| panic!("{when}: {key:?} lost"));
        assert!(
            found.version >= *version,
            "{when}: {key:?} went back from {version:?} to {:?}",
            found.version
        );
    }
}

#[test]
fn acknowledged_writes_survive_one_crash_under_message_loss() {
    let seed = seed(11);
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed,
        loss: 0.1,
        ..ReplicaSimConfig::default()
    });
    let mut acked = BTreeMap::new();
    let mut write = |sim: &mut ReplicaSim, i: usize| {
        // Every fifth operation deletes an earlier key.
        let outcome = if i % 5 == 4 {
            sim.delete(&key(i / 2)).map(|v| (key(i / 2), v))
        } else {
            sim.write(&key(i), format!("value {i}").as_bytes())
                .map(|v| (key(i), v))
        };
        if let Ok((key, version)) = outcome {
            acked.insert(key, version);
        }
    };
    for i in 0..1000 {
        write(&mut sim, i);
    }
    let victim = sim.pick();
    sim.crash(&victim);
    for i in 1000..2000 {
        write(&mut sim, i);
    }
    assert!(
        sim.stats.writes_refused > 0 && sim.stats.writes_acknowledged > 1500,
        "seed {seed}: {:?}",
        sim.stats
    );
    // With one process down and nothing repaired yet, every acknowledged
    // write is still found by a quorum read.
    sim.set_loss(0.0);
    check_acknowledged(&mut sim, &acked, &format!("seed {seed}, {victim} down"));

    // It comes back; hints and anti-entropy under loss, then without.
    sim.restart(&victim);
    sim.set_loss(0.1);
    for _ in 0..3 {
        sim.deliver_hints();
        sim.anti_entropy();
    }
    assert!(
        sim.stats.rounds_failed > 0,
        "seed {seed}: loss fails rounds"
    );
    sim.set_loss(0.0);
    converge(&mut sim, &format!("seed {seed}"));
    check_acknowledged(&mut sim, &acked, &format!("seed {seed}, after repair"));
}

#[test]
fn a_wiped_replica_is_rebuilt_by_anti_entropy_alone() {
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed: seed(12),
        ..ReplicaSimConfig::default()
    });
    let keys: Vec<Vec<u8>> = (0..3000).map(key).collect();
    for k in &keys {
        sim.write(k, b"v").unwrap();
    }
    let victim = sim.pick();
    let expected = sim.should_hold(&victim, &keys);
    assert!(!expected.is_empty());
    sim.wipe(&victim);
    assert!(sim.held_by(&victim).is_empty());
    assert_eq!(sim.hints_held(), 0, "no hint can help");

    let rounds = converge(&mut sim, "after the wipe");
    assert_eq!(rounds, 1, "one round restores everything");
    let held: Vec<Vec<u8>> = sim.held_by(&victim).into_keys().collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(held, expected);
    // Exactly what it lacked was sent; nothing twice.
    assert_eq!(
        sim.stats.sync.pushed + sim.stats.sync.pulled,
        expected.len() as u64
    );
}

#[test]
fn hints_alone_bring_replicas_that_missed_writes_up_to_date() {
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed: seed(13),
        loss: 0.3,
        ..ReplicaSimConfig::default()
    });
    for i in 0..1000 {
        sim.write(&key(i), b"v").ok();
    }
    assert!(sim.hints_held() > 0);
    assert!(
        !sim.divergent_keys().is_empty(),
        "loss left replicas behind"
    );
    sim.set_loss(0.0);
    sim.deliver_hints();
    assert_eq!(sim.hints_held(), 0);
    assert!(
        sim.divergent_keys().is_empty(),
        "{} keys differ",
        sim.divergent_keys().len()
    );
    assert_eq!(sim.stats.rounds, 0, "no anti-entropy was needed");
}

#[test]
fn a_delete_is_never_undone_by_repair() {
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed: seed(14),
        loss: 0.2,
        ..ReplicaSimConfig::default()
    });
    sim.set_loss(0.0);
    for i in 0..300 {
        sim.write(&key(i), b"alive").unwrap();
    }
    // Deletes under loss: some replicas keep the live value for now.
    sim.set_loss(0.2);
    let mut deleted = Vec::new();
    for i in 0..300 {
        if sim.delete(&key(i)).is_ok() {
            deleted.push(key(i));
        }
    }
    sim.set_loss(0.0);
    converge(&mut sim, "after deletes");
    for k in &deleted {
        let record = sim.read(k).unwrap().expect("the tombstone is kept");
        assert!(record.tombstone, "{k:?} came back to life");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = ReplicaSim::new(ReplicaSimConfig {
            seed,
            loss: 0.2,
            ..ReplicaSimConfig::default()
        });
        for i in 0..500 {
            sim.write(&key(i), b"v").ok();
        }
        sim.anti_entropy();
        format!("{:?}", sim.stats)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}
