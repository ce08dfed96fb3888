//! The Chord paper's experiments on the simulator, printed as tables.
//!
//!     cargo bench --profile dev --bench paper            # everything
//!     cargo bench --profile dev --bench paper -- hops    # one experiment
//!
//! Experiments: `hops` (path length against ½·log2 N for N = 2^6 .. 2^14),
//! `failure` (lookups after 50% of 1024 hosts fail at once, r = 2·log2 N),
//! `load` (keys per physical node with 1 to 20 virtual nodes).

use chordal::sim::paper::{build_ring, experiment_config, key_load, lookup_hops, mass_failure};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    if wanted("hops") {
        hops();
    }
    if wanted("failure") {
        failure();
    }
    if wanted("load") {
        load();
    }
}

fn hops() {
    let max_exponent: u32 = std::env::var("CHORDAL_HOPS_MAX_EXP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    println!("## Lookup path length (hops per lookup), one member per host, r = 4");
    println!();
    println!("| N | ½·log2 N | mean hops | p99 hops | max | wrong | build (wall s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for exponent in 6..=max_exponent {
        let n = 1usize << exponent;
        let started = Instant::now();
        let mut sim = build_ring(experiment_config(exponent as u64, 4), n, 0.99);
        let build = started.elapsed().as_secs_f64();
        let stats = lookup_hops(&mut sim, 10_000, 7);
        println!(
            "| 2^{exponent} = {n} | {:.1} | {:.2} | {} | {} | {} | {build:.0} |",
            exponent as f64 / 2.0,
            stats.mean,
            stats.p99,
            stats.max,
            stats.wrong
        );
    }
    println!();
}

fn failure() {
    let n = 1024;
    let r = 2 * 10;
    println!("## 50% of {n} hosts fail at once (r = 2·log2 N = {r}); 1000 lookups per stabilization round");
    println!();
    let mut sim = build_ring(experiment_config(99, r), n, 0.99);
    let rounds = mass_failure(&mut sim, 0.5, 1000, 400, 5);
    println!("| round | wrong or failed lookups | ring converged |");
    println!("|---:|---:|:---:|");
    for round in &rounds {
        if round.round < 10
            || round.round % 10 == 0
            || round.wrong_fraction == 0.0
            || round.converged
        {
            println!(
                "| {} | {:.2}% | {} |",
                round.round,
                round.wrong_fraction * 100.0,
                if round.converged { "yes" } else { "no" }
            );
        }
    }
    let first_right = rounds
        .iter()
        .find(|r| r.wrong_fraction == 0.0)
        .map(|r| r.round);
    let converged = rounds.iter().find(|r| r.converged).map(|r| r.round);
    println!();
    println!("first round with every lookup right: {first_right:?}; ring fully converged at round: {converged:?}");
    println!();
}

fn load() {
    let hosts = 10_000;
    let keys = 1_000_000;
    println!("## Keys per physical node: {hosts} hosts, {keys} keys");
    println!();
    println!("| virtual nodes | mean keys | 1st pct / mean | 99th pct / mean |");
    println!("|---:|---:|---:|---:|");
    for vnodes in [1, 2, 5, 10, 20] {
        let stats = key_load(hosts, vnodes, keys);
        println!(
            "| {vnodes} | {:.0} | {:.2} | {:.2} |",
            stats.mean, stats.p1_ratio, stats.p99_ratio
        );
    }
    println!();
}
