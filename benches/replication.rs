//! Replication on real processes:
//!
//! * `entropy`: one anti-entropy round between two replicas of a million
//!   keys that differ in 0, 1, 100 and 10,000 keys, beside shipping the
//!   whole range (the same round against a replica that lost everything);
//! * `recovery`: the time from `kill -9` of one node until every key is
//!   back on N = 3 live processes;
//! * `compare`: put/get throughput and latency at N=3, W=2, R=2 on 3-node
//!   and 5-node rings, beside a 3-member etcd cluster and a 3-master Redis
//!   Cluster (started by `scripts/other-stores.sh`), same workload.
//!
//! Run it with:
//!
//!     cargo bench --profile dev --bench replication                # all three
//!     cargo bench --profile dev --bench replication -- entropy     # or one
//!     CHORDAL_AE_KEYS=100000 cargo bench --profile dev --bench replication -- entropy

mod common;

use chordal::id::{between_open_closed, Id};
use chordal::loadgen::{Kind, RingTarget, Target};
use chordal::rpc::ApiClient;
use chordal::store::{Record, RocksEngine, Store, Version};
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod etcd {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

fn kill(node: &mut chordal::ops::launch::NodeProcess) {
    node.kill_9().ok();
}

// ----- anti-entropy ------------------------------------------------------------------

/// `count` keys whose ids fall in `(from, to]`, in a fixed order.
fn keys_in_arc(from: Id, to: Id, count: u64) -> Vec<String> {
    (0u64..)
        .map(|i| format!("ae-{i:09}"))
        .filter(|k| between_open_closed(from, Id::of_key(k.as_bytes()), to))
        .take(count as usize)
        .collect()
}

/// Writes `keys` into the database of `data_dir` with version `clock`.
fn write_records(data_dir: &Path, keys: &[&String], clock: u64) {
    let store = Store::new(RocksEngine::open(&data_dir.join("db")).unwrap()).unwrap();
    let value = vec![7u8; 100];
    for key in keys {
        let version = Version { clock, writer: 1 };
        store
            .apply(key.as_bytes(), &Record::value(version, value.clone(), None))
            .unwrap();
    }
}

/// Starts A and B (one member each, rounds only on demand), runs a repair
/// at A and returns its one round's report.
async fn repair_round(dir: &Path) -> chordal::data::RoundReport {
    let extra = ["--anti-entropy-interval", "0", "--replicas", "2"];
    let mut a = spawn_node_with(None, &dir.join("a"), 1, None, &extra);
    wait_for_ring(&a.addr, 1).await;
    let mut b = spawn_node_with(Some(&a.addr), &dir.join("b"), 1, None, &extra);
    wait_for_ring(&a.addr, 2).await;
    let mut conn = ApiClient::connect(&a.addr, Duration::from_secs(600))
        .await
        .unwrap();
    let reports = conn.repair().await.unwrap();
    // No graceful leave: that would hand the arc over.
    kill(&mut a);
    kill(&mut b);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = reports.into_iter().next().unwrap();
    assert!(report.error.is_none(), "{report:?}");
    report
}

async fn entropy() {
    let count = env_or("CHORDAL_AE_KEYS", 1_000_000);
    println!("## anti-entropy between two replicas of {count} keys (100-byte values)\n");
    let dir = tempfile::tempdir().unwrap();
    // A owns (B, A]: every key goes there. The ids are chosen before
    // either process runs; each keeps them on whatever port it picks.
    let (id_a, id_b) = (
        identity(&dir.path().join("a"), "a", 1)[0],
        identity(&dir.path().join("b"), "b", 1)[0],
    );
    let keys = keys_in_arc(id_b, id_a, count);
    let all: Vec<&String> = keys.iter().collect();
    let filling = Instant::now();
    write_records(&dir.path().join("a"), &all, 1 << 16);
    write_records(&dir.path().join("b"), &all, 1 << 16);
    println!(
        "(filled both databases in {:.1} s)\n",
        filling.elapsed().as_secs_f64()
    );
    println!("| replicas differ in | round trips | tree nodes compared | digests received | records moved | bytes on the wire | time ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut next_clock = 2 << 16;
    for differing in [0u64, 1, 100, 10_000] {
        // B gets newer versions of `differing` keys spread over the arc.
        let changed: Vec<&String> = (0..differing)
            .map(|i| &keys[(i * (count / differing.max(1))) as usize])
            .collect();
        write_records(&dir.path().join("b"), &changed, next_clock);
        next_clock += 1 << 16;
        let report = repair_round(dir.path()).await;
        let moved = report.stats.pushed + report.stats.pulled;
        assert_eq!(moved, differing, "{report:?}");
        print_round(&format!("{differing} keys"), &report);
    }
    // The whole range: B lost everything, so every record goes, in
    // batches, with no listing.
    std::fs::remove_dir_all(dir.path().join("b").join("db")).unwrap();
    let report = repair_round(dir.path()).await;
    print_round("whole range shipped (replica empty)", &report);
    println!();
}

fn print_round(label: &str, report: &chordal::data::RoundReport) {
    let s = report.stats;
    println!(
        "| {label} | {} | {} | {} | {} | {} | {:.0} |",
        s.round_trips,
        s.nodes_compared,
        s.digests_received,
        s.pushed + s.pulled,
        s.bytes_sent + s.bytes_received,
        report.elapsed.as_secs_f64() * 1000.0
    );
}

// ----- recovery after a crash --------------------------------------------------------

/// Keys, among `keys`, not yet on every one of their holders; `None` while
/// the ring seen from `view_from` is not whole. Reads every copy, 64 at a
/// time.
async fn under_replicated(view_from: &str, keys: &[String]) -> Option<usize> {
    use futures::StreamExt;
    let walk = chordal::ops::walk::walk_ring(view_from, Duration::from_secs(2), 100_000)
        .await
        .ok()?;
    if !walk.closed || !walk.ordered {
        return None;
    }
    let members: Vec<chordal::ring::NodeRef> = walk.members.iter().map(|m| m.me.clone()).collect();
    let mut conns = std::collections::HashMap::new();
    for member in &members {
        if !conns.contains_key(&member.addr) {
            let conn = ApiClient::connect(&member.addr, Duration::from_secs(2))
                .await
                .ok()?;
            conns.insert(member.addr.clone(), conn);
        }
    }
    let checks = keys.iter().flat_map(|key| {
        let target = Id::of_key(key.as_bytes());
        let at = members.iter().position(|m| m.id >= target).unwrap_or(0);
        let after: Vec<_> = members[at + 1..]
            .iter()
            .chain(&members[..=at])
            .cloned()
            .collect();
        let owner = &members[at];
        let preference = chordal::replica::preference_from(owner, &after, 2);
        std::iter::once(owner.addr.clone())
            .chain(preference.others.into_iter().map(|m| m.addr))
            .map(move |holder| (key.clone(), holder))
            .collect::<Vec<_>>()
    });
    let missing = futures::stream::iter(checks)
        .map(|(key, holder)| {
            let mut conn = conns[&holder].clone();
            async move { conn.get(key.as_bytes(), true).await.is_err().then_some(key) }
        })
        .buffer_unordered(64)
        .filter_map(|missing| async move { missing })
        .collect::<std::collections::HashSet<String>>()
        .await;
    Some(missing.len())
}

async fn recovery() {
    let count = env_or("CHORDAL_RECOVERY_KEYS", 5_000);
    println!("## back to N = 3 copies after kill -9 (5 nodes x 4 virtual nodes, {count} keys)\n");
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = start_ring(dir.path(), 5, 4).await;
    let keys: Vec<String> = (0..count).map(|i| format!("recovery-{i}")).collect();
    let mut conn = ApiClient::connect(&addrs[0], Duration::from_secs(15))
        .await
        .unwrap();
    for key in &keys {
        conn.put(key.as_bytes(), vec![1; 100], Duration::ZERO)
            .await
            .unwrap();
    }
    while under_replicated(&addrs[0], &keys).await != Some(0) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("every key on 3 processes; killing {}", addrs[2]);
    let killed = Instant::now();
    kill(&mut nodes.0[2]);
    let mut ring_repaired = None;
    let mut pass = Duration::ZERO;
    loop {
        let began = Instant::now();
        let missing = under_replicated(&addrs[0], &keys).await;
        pass = pass.max(began.elapsed());
        if missing.is_some() && ring_repaired.is_none() {
            ring_repaired = Some(killed.elapsed());
        }
        if missing == Some(0) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(300),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let recovered = killed.elapsed();
    println!(
        "ring whole again (4 processes) after {:.1} s; every key on 3 live processes after {:.1} s",
        ring_repaired.unwrap().as_secs_f64(),
        recovered.as_secs_f64()
    );
    println!(
        "(checked by reading every key's copy at each holder: the figure is late by up to one pass, {} ms at most here)\n",
        pass.as_millis()
    );
}

// ----- beside etcd and Redis Cluster ----------------------------------------------------

/// A 3-member etcd cluster through its gRPC KV API; worker i talks to
/// member i mod 3. Reads are etcd's default, linearizable.
struct EtcdTarget {
    clients: Vec<etcd::kv_client::KvClient<tonic::transport::Channel>>,
}

#[tonic::async_trait]
impl Target for EtcdTarget {
    async fn run(
        &self,
        worker: usize,
        kind: Kind,
        key: &[u8],
        value: &[u8],
    ) -> chordal::Result<bool> {
        let mut client = self.clients[worker % self.clients.len()].clone();
        let failed = |e: tonic::Status| chordal::Error::Unavailable(e.to_string());
        match kind {
            Kind::Put => {
                client
                    .put(etcd::PutRequest {
                        key: key.to_vec(),
                        value: value.to_vec(),
                        lease: 0,
                    })
                    .await
                    .map_err(failed)?;
                Ok(true)
            }
            Kind::Get => {
                let reply = client
                    .range(etcd::RangeRequest {
                        key: key.to_vec(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failed)?;
                Ok(!reply.into_inner().kvs.is_empty())
            }
            Kind::Delete => Err(chordal::Error::InvalidArgument("not measured".into())),
        }
    }
}

/// A 3-master Redis Cluster through a cluster-aware client.
struct RedisTarget {
    conn: redis::cluster_async::ClusterConnection,
}

#[tonic::async_trait]
impl Target for RedisTarget {
    async fn run(&self, _: usize, kind: Kind, key: &[u8], value: &[u8]) -> chordal::Result<bool> {
        let mut conn = self.conn.clone();
        let failed = |e: redis::RedisError| chordal::Error::Unavailable(e.to_string());
        match kind {
            Kind::Put => {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(failed)?;
                Ok(true)
            }
            Kind::Get => {
                let found: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(failed)?;
                Ok(found.is_some())
            }
            Kind::Delete => Err(chordal::Error::InvalidArgument("not measured".into())),
        }
    }
}

async fn chordal_ring(dir: &Path, count: usize) -> (Nodes, Vec<String>) {
    let ring = start_ring(dir, count, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // fingers settle
    ring
}

/// Runs `scripts/other-stores.sh COMMAND DIR`.
fn other_stores(command: &str, dir: &Path) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/other-stores.sh");
    Command::new(script)
        .arg(command)
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

async fn compare(ops: u64) {
    println!("## put/get at N=3, W=2, R=2 beside etcd and Redis Cluster");
    println!("100-byte values, 10,000 keys, mix put:50,get:50, clients spread over every node\n");
    println!(
        "| target | concurrency | ops/s | put p50 µs | put p99 µs | get p50 µs | get p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    for count in [3, 5] {
        let (ring, addrs) = chordal_ring(&dir.path().join(format!("ring{count}")), count).await;
        let target = RingTarget::connect(&addrs, 2, Duration::from_secs(15))
            .await
            .unwrap();
        measure(&format!("Chordal, {count} nodes"), Arc::new(target), ops).await;
        drop(ring);
    }
    let others = dir.path().join("others");
    if !other_stores("start", &others) {
        println!("\n(etcd and Redis Cluster could not be started; see scripts/other-stores.sh)");
        return;
    }
    let mut clients = Vec::new();
    for port in [23791, 23792, 23793] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(etcd::kv_client::KvClient::new(channel));
    }
    measure("etcd, 3 members", Arc::new(EtcdTarget { clients }), ops).await;
    let client = redis::cluster::ClusterClient::new(vec![
        "redis://127.0.0.1:17001",
        "redis://127.0.0.1:17002",
        "redis://127.0.0.1:17003",
    ])
    .unwrap();
    let conn = client.get_async_connection().await.unwrap();
    measure(
        "Redis Cluster, 3 masters",
        Arc::new(RedisTarget { conn }),
        ops,
    )
    .await;
    other_stores("stop", &others);
    println!();
}

#[tokio::main]
async fn main() {
    let wanted = wanted_parts();
    if wanted("entropy") {
        entropy().await;
    }
    if wanted("recovery") {
        recovery().await;
    }
    if wanted("compare") {
        compare(env_or("CHORDAL_BENCH_OPS", 20_000)).await;
    }
}
