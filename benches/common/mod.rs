//! What the benchmarks share: `chordal` processes on loopback ports they
//! pick themselves, killed when dropped, and their memory.
#![allow(dead_code)] // each benchmark uses a different part

use chordal::id::Id;
use chordal::loadgen::{self, Kind, Target, Workload};
use chordal::ops::launch::{Launch, Log, NodeProcess};
use chordal::ops::walk::walk_ring;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `chordal` binary the benchmarks start: this build's, or the one
/// `CHORDAL_BIN` names (to measure another commit's binary beside this
/// one's in the same session).
pub fn chordal_bin() -> std::path::PathBuf {
    std::env::var_os("CHORDAL_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_chordal").into())
}

/// Node processes, killed when dropped.
#[derive(Default)]
pub struct Nodes(pub Vec<NodeProcess>);

/// Starts a node with fast ring maintenance on a port it picks, joining
/// through `bootstrap` (or starting a new ring); its log goes to `log` if
/// given. Returns once the node has reported its address (`.addr`).
pub fn spawn_node(
    bootstrap: Option<&str>,
    data_dir: &Path,
    vnodes: u32,
    log: Option<&Path>,
) -> NodeProcess {
    spawn_node_with(bootstrap, data_dir, vnodes, log, &[])
}

/// [`spawn_node`] with `extra` arguments after the usual ones (started by
/// the library's one launcher, [`chordal::ops::launch`]).
pub fn spawn_node_with(
    bootstrap: Option<&str>,
    data_dir: &Path,
    vnodes: u32,
    log: Option<&Path>,
    extra: &[&str],
) -> NodeProcess {
    let launch = match bootstrap {
        Some(bootstrap) => Launch::new(chordal_bin(), 0, bootstrap, data_dir),
        None => Launch::new_ring(chordal_bin(), data_dir),
    };
    let mut launch = launch
        .vnodes(vnodes)
        .args(&[
            "--stabilize-interval",
            "200ms",
            "--fix-fingers-interval",
            "50ms",
            "-v",
        ])
        .args(extra);
    if let Some(log) = log {
        launch = launch.log_to(Log::File(log.to_path_buf()));
    }
    let mut node = launch.spawn().expect("chordal starts");
    node.wait_for_address(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    node
}

/// Gives `data_dir` the identity (the ids of `vnodes` virtual nodes) a
/// node first advertising `name` would make, before any node runs there:
/// a benchmark can then place records in arcs it knows, and start the
/// node on whatever port it picks, which keeps these ids.
pub fn identity(data_dir: &Path, name: &str, vnodes: u32) -> Vec<Id> {
    chordal::node::data_dir::load_or_create_identity(data_dir, name, vnodes).unwrap()
}

/// Waits until the ring seen from `via` is whole with `members` members.
pub async fn wait_for_ring(via: &str, members: usize) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(walk) = walk_ring(via, Duration::from_secs(2), 100_000).await {
            if walk.closed && walk.ordered && walk.members.len() == members {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "ring did not form"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

pub fn workload(ops: u64, concurrency: usize, mix: &str) -> Workload {
    Workload {
        ops,
        concurrency,
        value_size: 100,
        mix: mix.parse().unwrap(),
        keys: 10_000,
    }
}

/// Preloads every key, then runs the put/get mix at concurrency 1 and 64,
/// printing a table row for each: the same workload for every target.
pub async fn measure(name: &str, target: Arc<dyn Target>, ops: u64) {
    loadgen::run(target.clone(), &workload(10_000, 64, "put:1"), |_| {})
        .await
        .unwrap();
    for (concurrency, ops) in [(1, ops / 10), (64, ops)] {
        let report = loadgen::run(
            target.clone(),
            &workload(ops, concurrency, "put:50,get:50"),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.errors(), 0, "{report}");
        let p = |kind: Kind, q: f64| {
            report
                .kinds
                .iter()
                .find(|k| k.kind == kind)
                .map_or(0, |k| k.latency.value_at_quantile(q))
        };
        println!(
            "| {name} | {concurrency} | {:.0} | {} | {} | {} | {} |",
            report.throughput(),
            p(Kind::Put, 0.5),
            p(Kind::Put, 0.99),
            p(Kind::Get, 0.5),
            p(Kind::Get, 0.99),
        );
    }
}

/// Starts `count` nodes of `vnodes` members each and waits for their ring.
pub async fn start_ring(dir: &Path, count: usize, vnodes: u32) -> (Nodes, Vec<String>) {
    let mut nodes = Nodes::default();
    let mut addrs: Vec<String> = Vec::new();
    for index in 0..count {
        let node = spawn_node(
            addrs.first().map(String::as_str),
            &dir.join(index.to_string()),
            vnodes,
            None,
        );
        addrs.push(node.addr.clone());
        nodes.0.push(node);
    }
    wait_for_ring(&addrs[0], count * vnodes as usize).await;
    (nodes, addrs)
}

/// A number from the environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Which parts of a benchmark to run: those named on the command line
/// (`cargo bench ... -- NAME`), or every one when none is named.
pub fn wanted_parts() -> impl Fn(&str) -> bool {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |name: &str| only.is_empty() || only.iter().any(|o| o == name)
}
