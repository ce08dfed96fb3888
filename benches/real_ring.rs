//! Lookups on a ring of real `chordal` processes on loopback: latency by
//! number of hops (and so the cost of one hop), and the memory of idle nodes.
//!
//!     cargo bench --profile dev --bench real_ring
//!     CHORDAL_BENCH_NODES=32 cargo bench --profile dev --bench real_ring
//!
//! Each process hosts 4 virtual nodes. Lookups are sequential (one at a
//! time), so the figures are latencies on an otherwise idle ring.

mod common;

use chordal::rpc::ApiClient;
use common::*;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("CHORDAL_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let vnodes = 4;
    let lookups = 3000;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (nodes, addrs) = start_ring(dir.path(), count, vnodes as u32).await;
    // Let fix-fingers finish a few rounds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "ring of {count} processes x {vnodes} virtual nodes formed in {:.1} s (from the first start, each node started once the one before had bound its port, plus 10 s for fix-fingers)",
        started.elapsed().as_secs_f64()
    );

    let rss: Vec<u64> = nodes.0.iter().map(|c| rss_kib(c.pid().unwrap())).collect();
    println!(
        "idle RSS per node: mean {:.1} MiB, max {:.1} MiB",
        rss.iter().sum::<u64>() as f64 / rss.len() as f64 / 1024.0,
        *rss.iter().max().unwrap() as f64 / 1024.0
    );

    let mut conns = Vec::new();
    for addr in &addrs {
        conns.push(
            ApiClient::connect(addr, Duration::from_secs(5))
                .await
                .unwrap(),
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut by_hops: Vec<Vec<f64>> = Vec::new();
    for _ in 0..lookups {
        let conn = &mut conns[rng.random_range(0..count)];
        let key: u64 = rng.random();
        let begin = Instant::now();
        let answer = conn.lookup(key.to_string().as_bytes()).await.unwrap();
        let micros = begin.elapsed().as_secs_f64() * 1e6;
        let hops = answer.path.len();
        if by_hops.len() <= hops {
            by_hops.resize(hops + 1, Vec::new());
        }
        by_hops[hops].push(micros);
    }
    println!();
    println!("| hops | lookups | mean µs | p50 µs | p99 µs |");
    println!("|---:|---:|---:|---:|---:|");
    let (mut sx, mut sy, mut sxx, mut sxy, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut total_hops = 0usize;
    for (hops, samples) in by_hops.iter_mut().enumerate() {
        if samples.is_empty() {
            continue;
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        println!(
            "| {hops} | {} | {mean:.0} | {:.0} | {:.0} |",
            samples.len(),
            samples[samples.len() / 2],
            samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
        );
        for &y in samples.iter() {
            let x = hops as f64;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            n += 1.0;
        }
        total_hops += hops * samples.len();
    }
    let slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    let intercept = (sy - slope * sx) / n;
    println!();
    println!(
        "mean hops per lookup: {:.2}",
        total_hops as f64 / lookups as f64
    );
    println!("least-squares fit: {intercept:.0} µs + {slope:.0} µs per hop");
}
