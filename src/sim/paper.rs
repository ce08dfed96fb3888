//! The Chord paper's experiments, run on the simulator.
//!
//! Stoica et al. (SIGCOMM 2001, ToN 2003) measured three things that any
//! Chord implementation should reproduce: lookup path length (about
//! ½·log2 N hops), correct lookups after a massive simultaneous failure once
//! stabilization has run (successor lists of O(log N) make that 100%), and
//! load balance of keys over nodes, much improved by virtual nodes. These
//! functions build rings the way real processes do (by joining) and return
//! the figures; `benches/paper.rs` prints them as tables.

use super::{Sim, SimConfig};
use crate::id::Id;
use crate::ring;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Builds a converged ring of `hosts` hosts by joins, in waves that at most
/// double the ring (as a ring grows in practice), then lets fix-fingers run
/// until `finger_target` of the fingers are right. Returns the simulator.
pub fn build_ring(config: SimConfig, hosts: usize, finger_target: f64) -> Sim {
    let mut sim = Sim::new(config);
    let mut rng = StdRng::seed_from_u64(sim.config().seed ^ 0x5eed);
    let first = sim.add_first_host();
    let mut addrs = vec![first];
    while addrs.len() < hosts {
        let wave = addrs.len().min(hosts - addrs.len());
        for _ in 0..wave {
            let seed = addrs[rng.random_range(0..addrs.len())].clone();
            addrs.push(sim.add_host(&[seed]));
        }
        let limit = 600_000;
        match sim.run_until_converged(limit, false) {
            Ok(Some(_)) => {}
            _ => panic!(
                "ring of {} hosts did not converge in {limit} simulated ms",
                addrs.len()
            ),
        }
    }
    let deadline = sim.now() + 600_000;
    while sim.finger_accuracy() < finger_target && sim.now() < deadline {
        sim.run_for(sim.config().fix_fingers_ms * 4);
    }
    sim
}

/// Path lengths of lookups in one ring.
#[derive(Clone, Debug)]
pub struct HopStats {
    pub hosts: usize,
    pub lookups: usize,
    pub mean: f64,
    pub p99: usize,
    pub max: usize,
    /// Lookups whose answer was not the true owner.
    pub wrong: usize,
}

/// Runs `lookups` lookups of random keys from random hosts.
pub fn lookup_hops(sim: &mut Sim, lookups: usize, seed: u64) -> HopStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = sim.host_addrs();
    let mut hops = Vec::with_capacity(lookups);
    let mut wrong = 0;
    let owners = sim.owners();
    // In batches, so background traffic is shared but the network is not
    // flooded beyond what a busy ring would see.
    let mut remaining = lookups;
    while remaining > 0 {
        let batch: Vec<(String, Id)> = (0..remaining.min(500))
            .map(|_| {
                (
                    hosts[rng.random_range(0..hosts.len())].clone(),
                    Id(rng.random()),
                )
            })
            .collect();
        remaining -= batch.len();
        for ((_, key), result) in batch.iter().zip(sim.lookup_many(&batch)) {
            match result {
                Ok(outcome) => {
                    hops.push(outcome.hops());
                    if Some(outcome.owner().id) != owners.owner(*key).map(|o| o.id) {
                        wrong += 1;
                    }
                }
                Err(_) => wrong += 1,
            }
        }
    }
    hops.sort_unstable();
    let mean = hops.iter().sum::<usize>() as f64 / hops.len().max(1) as f64;
    let p99 = hops.get(hops.len() * 99 / 100).copied().unwrap_or(0);
    HopStats {
        hosts: hosts.len(),
        lookups,
        mean,
        p99,
        max: hops.last().copied().unwrap_or(0),
        wrong,
    }
}

/// One stabilization round after a mass failure.
#[derive(Clone, Debug)]
pub struct FailureRound {
    pub round: u64,
    /// Lookups that failed or named an owner other than the true live one.
    pub wrong_fraction: f64,
    pub converged: bool,
}

/// Crashes `fraction` of the hosts at once and, round by round, measures the
/// fraction of wrong lookups until the ring has converged and lookups are
/// all right again (or `max_rounds` pass).
pub fn mass_failure(
    sim: &mut Sim,
    fraction: f64,
    lookups_per_round: usize,
    max_rounds: u64,
    seed: u64,
) -> Vec<FailureRound> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = sim.host_addrs();
    let victims = (hosts.len() as f64 * fraction).round() as usize;
    let mut order = hosts.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    for victim in &order[..victims] {
        sim.crash(victim);
    }
    let round_ms = sim.config().stabilize_ms;
    let mut rounds = Vec::new();
    for round in 0..=max_rounds {
        let stats = lookup_hops(sim, lookups_per_round, seed + round);
        let converged = sim.is_converged();
        let wrong_fraction = stats.wrong as f64 / lookups_per_round as f64;
        rounds.push(FailureRound {
            round,
            wrong_fraction,
            converged,
        });
        if converged && stats.wrong == 0 {
            break;
        }
        sim.run_for(round_ms);
    }
    rounds
}

/// Keys per physical node, relative to the mean.
#[derive(Clone, Debug)]
pub struct LoadStats {
    pub vnodes: u32,
    pub mean: f64,
    /// 1st percentile over the mean.
    pub p1_ratio: f64,
    /// 99th percentile over the mean.
    pub p99_ratio: f64,
}

/// Places `keys` keys on `hosts` processes with `vnodes` members each,
/// exactly as the ring assigns them (owner = successor of blake3(key)).
pub fn key_load(hosts: usize, vnodes: u32, keys: usize) -> LoadStats {
    let mut members: Vec<(Id, usize)> = Vec::with_capacity(hosts * vnodes as usize);
    for host in 0..hosts {
        let addr = format!(
            "10.{}.{}.{}:7000",
            host >> 16,
            (host >> 8) & 255,
            host & 255
        );
        for index in 0..vnodes {
            members.push((Id::of_vnode(&addr, index), host));
        }
    }
    members.sort_unstable();
    let mut load = vec![0usize; hosts];
    for k in 0..keys {
        let key = Id::of_key(format!("key-{k}").as_bytes());
        let position = members.partition_point(|(id, _)| *id < key);
        load[members[position % members.len()].1] += 1;
    }
    load.sort_unstable();
    let mean = keys as f64 / hosts as f64;
    LoadStats {
        vnodes,
        mean,
        p1_ratio: load[hosts / 100] as f64 / mean,
        p99_ratio: load[hosts * 99 / 100] as f64 / mean,
    }
}

/// A simulator configuration for the experiments: one member per host,
/// successor lists of `r`.
pub fn experiment_config(seed: u64, r: usize) -> SimConfig {
    SimConfig {
        seed,
        ring: ring::Config {
            successors: r,
            ..ring::Config::default()
        },
        ..SimConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_in_a_grown_ring_are_short_and_right() {
        let mut sim = build_ring(experiment_config(1, 4), 64, 0.95);
        let stats = lookup_hops(&mut sim, 300, 2);
        assert_eq!(stats.wrong, 0);
        // log2(64) = 6: a correct finger table never needs more.
        assert!(stats.max <= 8, "{stats:?}");
        assert!(stats.mean < 6.0, "{stats:?}");
    }

    #[test]
    fn lookups_are_right_again_after_half_the_ring_fails() {
        let mut sim = build_ring(experiment_config(3, 12), 64, 0.95);
        let rounds = mass_failure(&mut sim, 0.5, 100, 200, 4);
        let last = rounds.last().unwrap();
        assert!(last.converged && last.wrong_fraction == 0.0, "{rounds:?}");
    }

    #[test]
    fn virtual_nodes_even_out_the_load() {
        let one = key_load(1000, 1, 100_000);
        let twenty = key_load(1000, 20, 100_000);
        assert!(one.p99_ratio > twenty.p99_ratio, "{one:?} vs {twenty:?}");
        assert!(twenty.p1_ratio > one.p1_ratio, "{one:?} vs {twenty:?}");
    }
}
