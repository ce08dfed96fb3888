//! What the benchmarks share: `chordal` processes on free loopback ports,
//! killed when dropped, and their memory.
#![allow(dead_code)] // each benchmark uses a different part

use chordal::admin::walk_ring;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHORDAL: &str = env!("CARGO_BIN_EXE_chordal");

/// Node processes, killed when dropped.
#[derive(Default)]
pub struct Nodes(pub Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a node with fast ring maintenance; its log goes to `log` if given.
pub fn spawn_node(
    port: u16,
    bootstrap: &str,
    data_dir: &Path,
    vnodes: u32,
    log: Option<&Path>,
) -> Child {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    Command::new(CHORDAL)
        .args([
            "--port",
            &port.to_string(),
            "--bootstrap",
            bootstrap,
            "--vnodes",
            &vnodes.to_string(),
        ])
        .args([
            "--stabilize-interval",
            "200ms",
            "--fix-fingers-interval",
            "50ms",
            "-v",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("chordal starts")
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
