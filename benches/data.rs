//! The key-value store on real processes: put/get throughput and latency on
//! a 5-node loopback ring, on a single node, and on RocksDB called directly
//! in-process with the same workload; the speed of a join hand-off beside a
//! bare gRPC stream of the same bytes; and resident memory per million keys.
//!
//!     cargo bench --profile dev --bench data
//!     CHORDAL_BENCH_OPS=20000 CHORDAL_HANDOFF_MIB=1024 cargo bench --profile dev --bench data
//!
//! CHORDAL_BENCH_OPS is the operation count at concurrency 64 (a tenth of it
//! runs at concurrency 1); CHORDAL_HANDOFF_MIB the size of the arc handed
//! over, in 1 KiB values (0 skips the hand-off).

mod common;

use chordal::data::TransferStats;
use chordal::id::{between_open_closed, Id};
use chordal::loadgen::{Kind, RingTarget, Target};
use chordal::store::{Hlc, Record, RocksEngine, Store, Version};
use common::*;
use rand::RngCore;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// RocksDB in this process, written the way an owner writes: read, new
/// version, write, under the key's stripe lock.
struct InProcess {
    store: Store<RocksEngine>,
    hlc: Hlc,
}

#[tonic::async_trait]
impl Target for InProcess {
    async fn run(&self, _: usize, kind: Kind, key: &[u8], value: &[u8]) -> chordal::Result<bool> {
        let now = wall_ms();
        let version = |existing: Option<&Record>| {
            if let Some(existing) = existing {
                self.hlc.observe(existing.version.clock);
            }
            Version {
                clock: self.hlc.now(now),
                writer: 1,
            }
        };
        let outcome = match kind {
            Kind::Put => self
                .store
                .update(key, |e| Record::value(version(e), value.to_vec(), None))
                .map(|_| true),
            Kind::Delete => self
                .store
                .update(key, |e| Record::tombstone(version(e), None))
                .map(|(previous, _)| previous.is_some_and(|p| !p.tombstone)),
            Kind::Get => self
                .store
                .get(key, now)
                .map(|r| r.is_some_and(|r| !r.tombstone)),
        };
        outcome.map_err(|e| chordal::Error::Unavailable(e.to_string()))
    }
}

async fn throughput(ops: u64) -> u64 {
    println!("## put/get, 100-byte values, 10,000 keys, mix put:50,get:50\n");
    println!(
        "| target | concurrency | ops/s | put p50 µs | put p99 µs | get p50 µs | get p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(RocksEngine::open(&dir.path().join("in-process")).unwrap()).unwrap();
    let in_process = Arc::new(InProcess {
        store,
        hlc: Hlc::default(),
    });
    measure("RocksDB in-process", in_process, ops).await;

    let (single, addrs) = start_ring(&dir.path().join("single"), 1, 4).await;
    let target = RingTarget::connect(&addrs, 4, Duration::from_secs(15))
        .await
        .unwrap();
    measure("1 node", Arc::new(target), ops).await;
    drop(single);

    let (ring, addrs) = start_ring(&dir.path().join("ring"), 5, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // fingers settle
    let idle = ring
        .0
        .iter()
        .map(|c| rss_kib(c.pid().unwrap()))
        .sum::<u64>()
        / 5;
    let target = RingTarget::connect(&addrs, 1, Duration::from_secs(15))
        .await
        .unwrap();
    measure("5 nodes", Arc::new(target), ops).await;
    println!();
    idle
}

/// Fills `data_dir`'s database with `records` random 1 KiB values whose
/// ids fall in `(from, to]`.
fn fill_arc(data_dir: &Path, from: Id, to: Id, records: u64) {
    let store = Store::new(RocksEngine::open(&data_dir.join("db")).unwrap()).unwrap();
    let mut rng = rand::rng();
    let mut value = vec![0u8; 1024];
    let (mut written, mut candidate) = (0, 0u64);
    let clock = wall_ms() << 16;
    while written < records {
        candidate += 1;
        let key = format!("handoff-{candidate:010}");
        if !between_open_closed(from, Id::of_key(key.as_bytes()), to) {
            continue;
        }
        rng.fill_bytes(&mut value);
        let version = Version { clock, writer: 1 };
        store
            .apply(key.as_bytes(), &Record::value(version, value.clone(), None))
            .unwrap();
        written += 1;
    }
}

/// Parses "took over the arc: N records, X MiB in T" from a node's log.
fn took_over(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("took over the arc"))?;
    Some(line[line.find("took over the arc")?..].to_string())
}

async fn hand_off(mib: u64, idle_rss_kib: u64) {
    let records = mib * 1024;
    println!("## join hand-off of {records} records of 1 KiB ({mib} MiB of values)\n");
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    // Both identities first; then A's database is filled with records
    // that all belong to B once B joins.
    let (id_a, id_b) = (identity(&dir_a, "a", 1)[0], identity(&dir_b, "b", 1)[0]);
    let filling = Instant::now();
    fill_arc(&dir_a, id_a, id_b, records);
    println!(
        "(filled A's database in {:.1} s)",
        filling.elapsed().as_secs_f64()
    );
    let mut nodes = Nodes::default();
    nodes.0.push(spawn_node(None, &dir_a, 1, None));
    let addr_a = nodes.0[0].addr.clone();
    wait_for_ring(&addr_a, 1).await;
    let log_b = dir.path().join("b.log");
    let started = Instant::now();
    nodes
        .0
        .push(spawn_node(Some(&addr_a), &dir_b, 1, Some(&log_b)));
    let line = loop {
        if let Some(line) = took_over(&log_b) {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "no hand-off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wall = started.elapsed();
    println!("B's log: {line}");
    println!(
        "B started to hand-off done: {:.1} s (includes joining)",
        wall.as_secs_f64()
    );
    let rss_b = rss_kib(nodes.0[1].pid().unwrap());
    let rss_a = rss_kib(nodes.0[0].pid().unwrap());
    let baseline = chordal::rpc::stream_baseline(records, 18, 1024)
        .await
        .unwrap();
    let rate = |stats: &TransferStats| {
        let secs = stats.elapsed.as_secs_f64();
        format!(
            "{:.0} keys/s, {:.1} MB/s",
            stats.records as f64 / secs,
            stats.bytes as f64 / secs / 1e6
        )
    };
    println!(
        "bare loopback gRPC stream of the same batches: {}",
        rate(&baseline)
    );
    println!();
    println!("## resident memory\n");
    println!(
        "idle node (5-node ring, no data): {:.1} MiB",
        idle_rss_kib as f64 / 1024.0
    );
    println!(
        "A holding the {records} records it handed over: {:.1} MiB; B after taking them over: {:.1} MiB",
        rss_a as f64 / 1024.0,
        rss_b as f64 / 1024.0
    );
    println!(
        "B: {:.1} MiB more than an idle node per million keys stored",
        (rss_b.saturating_sub(idle_rss_kib)) as f64 / 1024.0 / (records as f64 / 1e6)
    );
}

#[tokio::main]
async fn main() {
    let ops = env_or("CHORDAL_BENCH_OPS", 20_000);
    let mib = env_or("CHORDAL_HANDOFF_MIB", 1024);
    let idle = throughput(ops).await;
    if mib > 0 {
        hand_off(mib, idle).await;
    }
}
