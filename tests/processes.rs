//! Real `chordal` processes on loopback, checked with `chordal ring` and
//! `chordal lookup` exactly as an operator would.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CHORDAL: &str = env!("CARGO_BIN_EXE_chordal");
/// Generous: the machines running the tests are shared and slow.
const SETTLE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node process, killed when dropped.
struct Node {
    addr: String,
    port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(port: u16, bootstrap: &str, data_dir: &Path, vnodes: u32) -> Node {
        let child = Command::new(CHORDAL)
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
                "100ms",
                "--rpc-timeout",
                "500ms",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("-vv")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data_dir.with_extension("log")).unwrap(),
            ))
            .spawn()
            .expect("chordal starts");
        Node {
            addr: format!("127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            child: Some(child),
        }
    }

    fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM",
                self.addr
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn chordal(args: &[&str]) -> Output {
    Command::new(CHORDAL)
        .args(args)
        .output()
        .expect("chordal runs")
}

/// What `chordal ring --via ADDR` showed.
#[derive(Debug)]
struct RingView {
    whole: bool,
    summary: String,
    /// (id, address) of every member, in the order printed.
    members: Vec<(String, String)>,
}

impl RingView {
    fn processes(&self) -> BTreeSet<String> {
        self.members.iter().map(|(_, addr)| addr.clone()).collect()
    }

    fn ids_of(&self, addr: &str) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, a)| a == addr)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn ring_via(addr: &str) -> RingView {
    let output = chordal(&["ring", "--via", addr, "--timeout", "2s"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let members = stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next()?;
            let addr = words.next()?;
            (id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| (id.to_string(), addr.to_string()))
        })
        .collect();
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    RingView {
        whole: output.status.success(),
        summary,
        members,
    }
}

/// Waits until the ring seen from every one of `nodes` is whole and holds
/// exactly their processes with `vnodes` members each.
fn wait_for_ring(nodes: &[&Node], vnodes: usize) -> RingView {
    let expected: BTreeSet<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let deadline = Instant::now() + SETTLE;
    loop {
        let views: Vec<RingView> = nodes.iter().map(|n| ring_via(&n.addr)).collect();
        let good = views.iter().all(|v| {
            v.whole && v.processes() == expected && v.members.len() == expected.len() * vnodes
        });
        if good {
            return views.into_iter().next().unwrap();
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {}\n{}", n.addr, tail(&n.log())))
                .collect();
            panic!(
                "ring did not settle: {:#?}\n{}",
                views.iter().map(|v| &v.summary).collect::<Vec<_>>(),
                logs.join("\n")
            );
        }
        sleep(Duration::from_millis(300));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn start_ring(dir: &Path, count: usize, vnodes: u32) -> Vec<Node> {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let bootstrap = format!("127.0.0.1:{}", ports[0]);
    ports
        .iter()
        .map(|&port| {
            let node = Node::start(port, &bootstrap, &dir.join(format!("node-{port}")), vnodes);
            if port == ports[0] {
                sleep(Duration::from_millis(300));
            }
            node
        })
        .collect()
}

#[test]
fn five_processes_form_one_ring_and_route_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_ring(dir.path(), 5, 2);
    let view = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    assert_eq!(view.members.len(), 10);
    assert!(
        view.summary.contains("closed and ordered"),
        "{}",
        view.summary
    );

    // Every node names the same owner for a key, and that owner is a member.
    let owners: BTreeSet<String> = nodes
        .iter()
        .map(|node| {
            let output = chordal(&["lookup", "some-key", "--via", &node.addr]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert!(view.processes().contains(owners.iter().next().unwrap()));
}

#[test]
fn a_killed_node_is_repaired_and_a_restart_rejoins_with_its_old_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_ring(dir.path(), 5, 2);
    let before = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);

    let victim = nodes.remove(2);
    let (victim_port, victim_dir, victim_addr) =
        (victim.port, victim.data_dir.clone(), victim.addr.clone());
    let old_ids = before.ids_of(&victim_addr);
    assert_eq!(old_ids.len(), 2);
    let mut victim = victim;
    victim.kill_9();
    let without = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    assert!(!without.processes().contains(&victim_addr));

    let bootstrap = nodes[0].addr.clone();
    let restarted = Node::start(victim_port, &bootstrap, &victim_dir, 2);
    nodes.push(restarted);
    let after = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    assert_eq!(
        after.ids_of(&victim_addr),
        old_ids,
        "same ring ids after the restart"
    );
}

#[test]
fn the_bootstrap_node_restarted_rejoins_its_old_ring_instead_of_starting_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_ring(dir.path(), 3, 1);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    // Let the bootstrap node record its peers (every 20 stabilize ticks).
    sleep(Duration::from_secs(5));
    let first = nodes.remove(0);
    let (port, data_dir, addr) = (first.port, first.data_dir.clone(), first.addr.clone());
    let mut first = first;
    first.kill_9();
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    // Its bootstrap is itself, but its data directory knows the old ring.
    nodes.insert(0, Node::start(port, &addr, &data_dir, 1));
    let view = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    assert_eq!(view.processes().len(), 3);
}

#[test]
fn sigterm_leaves_gracefully_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_ring(dir.path(), 4, 1);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    let mut leaver = nodes.remove(3);
    let status = leaver.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        leaver.log().contains("leaving the ring"),
        "{}",
        leaver.log()
    );
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
}

#[test]
fn an_unreachable_bootstrap_is_reported_and_retried_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut node = Node::start(free_port(), &nowhere, &dir.path().join("lonely"), 1);
    let deadline = Instant::now() + SETTLE;
    while !node.log().contains("cannot join the ring") {
        assert!(
            Instant::now() < deadline,
            "no clear message: {}",
            node.log()
        );
        sleep(Duration::from_millis(200));
    }
    assert!(
        node.log().contains(&nowhere),
        "the message names the bootstrap: {}",
        node.log()
    );
    assert!(node.log().contains("retrying in"), "{}", node.log());
    // Not joined: `ring` says so and fails; the process is still alive.
    let output = chordal(&["ring", "--via", &node.addr]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has not joined"));
    assert!(node.terminate().success());
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (&["--successors", "1"], "--successors must be between 2"),
        (&["--vnodes", "0"], "--vnodes must be between 1"),
        (&["--bootstrap", "nowhere"], "host:port"),
        (&["--stabilize-interval", "soon"], "invalid value"),
    ];
    for (args, expected) in cases {
        let output = chordal(args);
        assert!(!output.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = chordal(&[
        "lookup",
        "key",
        "--via",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}
