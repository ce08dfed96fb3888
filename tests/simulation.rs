//! Scenario tests of the ring protocol in the deterministic simulator.
//!
//! Each test is one story: a ring is formed, something happens to it, and
//! the invariants of the corrected protocol are checked after *every* event
//! (one ordered ring, every live member with a live successor), then the
//! ring must converge to exactly the right successor lists and predecessors.
//! A failing test prints its seed and the command that replays it; the
//! same seed replays the same run.

mod common;

use chordal::id::Id;
use chordal::ring::{self, Addr};
use chordal::sim::{Sim, SimConfig};
use common::assert_a_failure_prints_its_replay_command;

/// Simulated milliseconds allowed for convergence in these small rings.
const CONVERGE_MS: u64 = 120_000;

/// Each scenario's seed: its own, or `CHORDAL_SIM_SEED`'s (to replay a
/// failure, or to explore more runs:
/// `for n in $(seq 100); do CHORDAL_SIM_SEED=$n cargo test --test simulation || break; done`).
/// A failing scenario prints the command that replays it.
fn config(seed: u64, r: usize) -> SimConfig {
    let seed = seed_for(seed);
    SEED.with(|s| s.set(Some(seed)));
    static REPLAY_HINT: std::sync::Once = std::sync::Once::new();
    REPLAY_HINT.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            // The test harness names each test's thread after the test.
            let test = std::thread::current().name().map(String::from);
            if let (Some(seed), Some(test)) = (SEED.with(|s| s.get()), test) {
                eprintln!(
                    "simulation failed with seed {seed}; replay it with:\n    CHORDAL_SIM_SEED={seed} cargo test --test simulation {test}"
                );
            }
        }));
    });
    chordal::sim::paper::experiment_config(seed, r)
}

fn seed_for(own: u64) -> u64 {
    std::env::var("CHORDAL_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(own)
}

thread_local! {
    /// The seed of the scenario running on this thread.
    static SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Starts `hosts` hosts one after the other (each after the previous joined)
/// and waits until the ring has converged, checking invariants throughout.
fn grown_ring(config: SimConfig, hosts: usize) -> (Sim, Vec<Addr>) {
    let mut sim = Sim::new(config);
    let first = sim.add_first_host();
    let mut addrs = vec![first.clone()];
    converge(&mut sim, "the first host");
    for _ in 1..hosts {
        addrs.push(sim.add_host(std::slice::from_ref(&first)));
        sim.run_for_checked(2_000, |sim| sim.check_ring().map(drop))
            .unwrap_or_else(|v| panic!("while joining: {v}"));
    }
    converge(&mut sim, "the grown ring");
    (sim, addrs)
}

/// Runs until the ring has converged, checking its invariants at every
/// step; then until every finger is right, which a converged ring owes
/// within two sweeps of fix-fingers (one finger lookup a tick, at most
/// one per finger). Returns the time the ring took.
fn converge(sim: &mut Sim, what: &str) -> u64 {
    let seed = sim.config().seed;
    let took = match sim.run_until_converged(CONVERGE_MS, true) {
        Ok(Some(ms)) => ms,
        Ok(None) => panic!("{what} did not converge in {CONVERGE_MS} ms (seed {seed})"),
        Err(violation) => panic!("{what}: invariant broken: {violation} (seed {seed})"),
    };
    fingers_settle(sim, what);
    took
}

/// Runs until every finger is right, checking the ring at every step,
/// within two sweeps of fix-fingers of a converged ring.
fn fingers_settle(sim: &mut Sim, what: &str) {
    let seed = sim.config().seed;
    let deadline = sim.now() + 2 * Id::BITS as u64 * sim.config().fix_fingers_ms;
    while let Err(wrong) = sim.check_fingers() {
        assert!(
            sim.now() < deadline,
            "{what}: converged, but two sweeps of fix-fingers later {wrong} (seed {seed})"
        );
        sim.run_for_checked(sim.config().fix_fingers_ms, |sim| {
            sim.check_ring().map(drop)
        })
        .unwrap_or_else(|v| panic!("{what}: invariant broken: {v} (seed {seed})"));
    }
}

fn ids_of(sim: &Sim, addr: &str) -> Vec<Id> {
    sim.host(addr)
        .unwrap()
        .members()
        .iter()
        .map(|m| m.id())
        .collect()
}

/// Every key looked up from every host reaches its true owner.
fn assert_lookups_reach_owners(sim: &mut Sim, keys: usize) {
    let hosts = sim.host_addrs();
    for k in 0..keys {
        let key = Id::of_key(format!("key-{k}").as_bytes());
        let from = &hosts[k % hosts.len()];
        let outcome = sim
            .lookup(from, key)
            .unwrap_or_else(|e| panic!("lookup of {key} from {from}: {e}"));
        let owner = sim.true_owner(key).expect("a live member");
        assert_eq!(outcome.owner().id, owner.id, "lookup of {key} from {from}");
    }
}

#[test]
fn a_one_host_ring_owns_every_key() {
    let (mut sim, _) = grown_ring(config(1, 3), 1);
    assert_eq!(sim.live_members().len(), 1);
    assert_lookups_reach_owners(&mut sim, 20);
}

#[test]
fn two_and_three_host_rings_converge_and_two_shrink_to_one() {
    for hosts in [2, 3] {
        let (mut sim, addrs) = grown_ring(config(hosts as u64, 3), hosts);
        let shape = sim.check_ring().unwrap();
        assert_eq!(shape.cycle.len(), hosts);
        assert_lookups_reach_owners(&mut sim, 50);
        if hosts == 2 {
            // The other member dies: the survivor is a ring of one again,
            // owning every key.
            sim.crash(&addrs[1]);
            converge(&mut sim, "a ring of two losing one");
            assert_eq!(sim.check_ring().unwrap().cycle.len(), 1);
            assert_lookups_reach_owners(&mut sim, 20);
        }
    }
}

#[test]
fn virtual_nodes_form_one_ring_of_all_members() {
    let config = SimConfig {
        vnodes: 4,
        ..config(3, 4)
    };
    let (mut sim, _) = grown_ring(config, 5);
    assert_eq!(sim.check_ring().unwrap().cycle.len(), 20);
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn thirty_hosts_joining_at_once_converge() {
    let mut sim = Sim::new(config(4, 4));
    let first = sim.add_first_host();
    converge(&mut sim, "the first host");
    for _ in 0..30 {
        sim.add_host(std::slice::from_ref(&first));
    }
    converge(&mut sim, "concurrent joins");
    assert_eq!(sim.live_members().len(), 31);
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn a_crash_of_r_minus_one_consecutive_members_is_repaired() {
    let r = 4;
    let (mut sim, _) = grown_ring(config(5, r), 20);
    let members = sim.live_members();
    // r - 1 members in a row, starting at a random-looking place.
    for victim in members.iter().cycle().skip(7).take(r - 1) {
        sim.crash(&victim.addr);
    }
    converge(&mut sim, "after the crash");
    assert_eq!(sim.live_members().len(), 20 - (r - 1));
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn the_ring_stays_correct_under_twenty_percent_message_loss() {
    // Seed 501 as well: with a recovery that asked each candidate once, it
    // split the ring in two (docs/ring.md).
    for own in [6, 501] {
        stays_correct_under_twenty_percent_message_loss(own);
    }
}

fn stays_correct_under_twenty_percent_message_loss(own: u64) {
    let (mut sim, addrs) = grown_ring(config(own, 4), 12);
    sim.set_loss(0.2);
    // Joins, a crash and lookups, all while one message in five is lost.
    for _ in 0..3 {
        sim.add_host(&addrs[..1]);
    }
    sim.run_for_checked(20_000, |sim| sim.check_ring().map(drop))
        .unwrap_or_else(|v| panic!("under loss: {v}"));
    sim.crash(&addrs[5]);
    sim.run_for_checked(20_000, |sim| sim.check_ring().map(drop))
        .unwrap_or_else(|v| panic!("under loss: {v}"));
    sim.set_loss(0.0);
    converge(&mut sim, "after the loss ended");
    assert_eq!(sim.live_members().len(), 14);
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn a_partition_that_heals_leaves_one_ring() {
    let (mut sim, addrs) = grown_ring(config(7, 4), 16);
    let (left, right): (Vec<Addr>, Vec<Addr>) = addrs.iter().cloned().partition(|a| {
        let id = sim.host(a).unwrap().members()[0].id();
        id.0 % 2 == 0
    });
    sim.partition(&[left.clone(), right.clone()]);
    let joined = |sim: &Sim, side: &[Addr]| {
        side.iter()
            .flat_map(|a| sim.host(a).unwrap().members())
            .filter(|m| m.is_joined())
            .count()
    };
    // Each side repairs itself into a ring of its own members. A member
    // whose every known member fell on the other side leaves, and can
    // rejoin only through its bootstrap; on the bootstrap's side that
    // works, so every member there is back in.
    let seed_side = if left.contains(&addrs[0]) {
        &left
    } else {
        &right
    };
    let deadline = sim.now() + CONVERGE_MS;
    while !(sim.is_side_converged(&left)
        && sim.is_side_converged(&right)
        && joined(&sim, seed_side) == seed_side.len())
    {
        assert!(
            sim.now() < deadline,
            "the two sides did not each converge (seed {})",
            sim.config().seed
        );
        assert!(sim.step(), "the simulation ran dry");
    }
    // ...and each stays one while the partition lasts: every joined member
    // of a side on its one ordered cycle, each with a successor on its
    // side, and nobody else leaves.
    let counts = (joined(&sim, &left), joined(&sim, &right));
    eprintln!(
        "while split: {} of {} and {} of {} hosts' members joined",
        counts.0,
        left.len(),
        counts.1,
        right.len()
    );
    let whole_side = |sim: &Sim, side: &[Addr], count: usize| {
        let shape = sim.check_side(side).map_err(|v| v.to_string())?;
        let now = joined(sim, side);
        if shape.cycle.len() == now && now == count {
            Ok(())
        } else {
            Err(format!(
                "{} members on the side's ring, {now} joined, {count} when it converged",
                shape.cycle.len()
            ))
        }
    };
    sim.run_for_checked(20_000, |sim| {
        whole_side(sim, &left, counts.0)?;
        whole_side(sim, &right, counts.1)
    })
    .unwrap_or_else(|v| panic!("while split: {v} (seed {})", sim.config().seed));
    sim.heal();
    // Merging breaks the one-ring invariant until it completes, so the
    // checks start again once the ring has converged.
    let merged = sim.run_until_converged(CONVERGE_MS, false).unwrap();
    assert!(
        merged.is_some(),
        "the two rings did not merge (seed {})",
        sim.config().seed
    );
    sim.run_for_checked(10_000, |sim| sim.check_ring().map(drop))
        .unwrap();
    fingers_settle(&mut sim, "the merged ring");
    assert_eq!(sim.live_members().len(), 16);
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn a_member_whose_whole_successor_list_dies_routes_around_without_collapsing() {
    let r = 3;
    let (mut sim, _) = grown_ring(config(8, r), 20);
    let members = sim.live_members();
    let survivor = members[4].clone();
    let predecessor = members[3].clone();
    // All r successors of the survivor die at once: the failure assumption
    // is broken on purpose, while its predecessor lives.
    for victim in &members[5..5 + r] {
        sim.crash(&victim.addr);
    }
    let deadline = sim.now() + CONVERGE_MS;
    while !sim.is_converged() {
        assert!(
            sim.now() < deadline,
            "did not converge after losing a whole successor list"
        );
        assert!(sim.step(), "the simulation ran dry");
        sim.check_ring_tolerating_detached()
            .unwrap_or_else(|v| panic!("{v} (seed {})", sim.config().seed));
        let member = sim
            .host(&survivor.addr)
            .and_then(|h| h.member(survivor.id))
            .expect("alive");
        assert!(
            member.successor().is_none_or(|s| s.id != survivor.id),
            "{survivor} collapsed onto itself"
        );
    }
    assert!(sim.host(&predecessor.addr).is_some());
    assert_eq!(sim.live_members().len(), 20 - r);
    assert_lookups_reach_owners(&mut sim, 100);
}

#[test]
fn a_restarted_host_rejoins_with_its_old_identity() {
    let (mut sim, addrs) = grown_ring(config(9, 4), 8);
    let victim = addrs[3].clone();
    let ids = ids_of(&sim, &victim);
    sim.crash(&victim);
    converge(&mut sim, "without the victim");
    assert_eq!(sim.live_members().len(), 7);
    sim.restart(&victim);
    converge(&mut sim, "after the restart");
    let back = ids_of(&sim, &victim);
    assert_eq!(ids, back);
    assert_eq!(sim.live_members().len(), 8);
}

#[test]
fn a_graceful_leave_is_repaired_without_waiting_for_timeouts() {
    let (mut sim, addrs) = grown_ring(config(10, 4), 8);
    let members = sim.live_members();
    let position = members.iter().position(|m| m.addr == addrs[2]).unwrap();
    let leaver = members[position].clone();
    let predecessor = members[(position + members.len() - 1) % members.len()].clone();
    let successor = members[(position + 1) % members.len()].clone();
    sim.leave(&leaver.addr);
    // The neighbours were told: they let go of the leaver at once, before
    // any stabilize round or timeout could have taught them.
    let member = |sim: &Sim, node: &ring::NodeRef| {
        sim.host(&node.addr)
            .unwrap()
            .member(node.id)
            .unwrap()
            .clone()
    };
    assert!(member(&sim, &predecessor)
        .successors()
        .iter()
        .all(|s| s.id != leaver.id));
    assert!(member(&sim, &successor)
        .predecessor()
        .is_none_or(|p| p.id != leaver.id));
    converge(&mut sim, "after the leave");
    assert_eq!(sim.live_members().len(), 7);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let config = chordal::sim::paper::experiment_config(seed, 4);
        let (mut sim, addrs) = grown_ring(config, 6);
        sim.set_loss(0.1);
        sim.crash(&addrs[2]);
        sim.run_for(10_000);
        (
            sim.stats.messages_sent,
            sim.stats.messages_lost,
            sim.stats.timeouts,
            sim.live_members(),
        )
    };
    let seed = config(11, 4).seed;
    assert_eq!(run(seed), run(seed));
    assert_ne!(run(seed), run(seed + 1), "the seed drives the run");
}

#[test]
fn a_thousand_members_survive_churn_with_every_step_checked() {
    // 250 processes with 4 virtual nodes each, grown by joins.
    let config = SimConfig {
        vnodes: 4,
        ..config(13, 6)
    };
    let mut sim = chordal::sim::paper::build_ring(config, 250, 0.9);
    assert_eq!(sim.live_members().len(), 1000);
    let hosts = sim.host_addrs();
    // 5% of the processes crash while 5 new ones join, and every event is
    // followed by the full invariant check.
    for victim in hosts.iter().step_by(20) {
        sim.crash(victim);
    }
    for _ in 0..5 {
        sim.add_host(&hosts[1..2]);
    }
    sim.run_for_checked(5_000, |sim| sim.check_ring().map(drop))
        .unwrap_or_else(|v| panic!("under churn: {v} (seed {})", sim.config().seed));
    let converged = sim.run_until_converged(CONVERGE_MS, false).unwrap();
    assert!(converged.is_some(), "did not converge");
    assert_eq!(sim.live_members().len(), (250 - 13 + 5) * 4);
    assert_lookups_reach_owners(&mut sim, 200);
}

/// Not a scenario: one that fails on purpose, run only by
/// [`a_failing_scenario_prints_the_command_that_replays_it`] in a process
/// of its own.
#[test]
#[ignore = "fails on purpose; a_failing_scenario_prints_the_command_that_replays_it runs it"]
fn fails_on_purpose_to_show_the_replay_line() {
    let sim = Sim::new(config(1, 3));
    panic!("seed {}: failing on purpose", sim.config().seed);
}

#[test]
fn a_failing_scenario_prints_the_command_that_replays_it() {
    assert_a_failure_prints_its_replay_command("simulation");
}
