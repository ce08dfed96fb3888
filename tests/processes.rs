//! Real `chordal` processes on loopback, checked with `chordal ring` and
//! `chordal lookup` exactly as an operator would.

mod common;

use chordal::id::Id;
use common::*;
use std::thread::sleep;
use std::time::{Duration, Instant};

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
    // The summary says every arc is on N = 3 processes once each member
    // knows its replicas (its successor lists may need a moment more
    // than the walk).
    let deadline = Instant::now() + SETTLE;
    loop {
        let summary = ring_via(&nodes[0].addr).summary;
        if summary.contains("N=3 W=2 R=2, every arc on 3 processes") {
            break;
        }
        assert!(Instant::now() < deadline, "{summary}");
        sleep(Duration::from_millis(200));
    }

    // Every node names the owner of each key that the members' ids say,
    // worked out here from the processes' addresses alone: member v of a
    // process is blake3(address, v), and a key's owner is the first member
    // at or after the key's id, round the circle.
    let mut members: Vec<(Id, String)> = nodes
        .iter()
        .flat_map(|node| (0..2).map(|v| (Id::of_vnode(&node.addr, v), node.addr.clone())))
        .collect();
    members.sort();
    for i in 0..20 {
        let key = format!("some-key-{i}");
        let id = Id::of_key(key.as_bytes());
        let expected = members
            .iter()
            .find(|(member, _)| *member >= id)
            .unwrap_or(&members[0])
            .1
            .clone();
        for node in &nodes {
            let output = chordal(&["lookup", &key, "--via", &node.addr]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let owner = String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap()
                .to_string();
            assert_eq!(owner, expected, "{key} looked up via {}", node.addr);
        }
    }
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
    // The bootstrap node records its peers every 20 stabilize ticks: wait
    // until its peers file names the other two.
    let peers_file = nodes[0].data_dir.join("peers");
    let others: Vec<String> = nodes[1..].iter().map(|n| n.addr.clone()).collect();
    let deadline = Instant::now() + SETTLE;
    loop {
        let peers = std::fs::read_to_string(&peers_file).unwrap_or_default();
        if others
            .iter()
            .all(|addr| peers.lines().any(|line| line == addr))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saved its peers: {peers:?}",
            peers_file.display()
        );
        sleep(Duration::from_millis(100));
    }
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
    let gone = format!("@{}", leaver.addr);
    let from = format!("{gone})");
    let status = leaver.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        leaver.log().contains("leaving the ring"),
        "{}",
        leaver.log()
    );
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    // Its predecessor dropped it on being told, not by failure detection:
    // some neighbour logged its successor changing away from the leaver,
    // and wherever the leaver was also presumed dead (a query already on
    // its way to it when the news came fails afterwards), the drop came
    // first. A missed leave shows the death first, then the change.
    let dropped = |line: &str| {
        line.contains("successor changed") && line.contains("from=Some(") && line.contains(&from)
    };
    let presumed_dead = |line: &str| line.contains("presumed dead") && line.contains(&gone);
    let logs = || nodes.iter().map(|n| plain(&n.log())).collect::<Vec<_>>();
    let deadline = Instant::now() + SETTLE;
    while !logs().iter().any(|log| log.lines().any(dropped)) {
        assert!(
            Instant::now() < deadline,
            "no neighbour dropped {gone}:\n{}",
            logs()
                .iter()
                .map(|l| tail(l))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        sleep(Duration::from_millis(100));
    }
    for log in logs() {
        let lines: Vec<&str> = log.lines().collect();
        if let Some(death) = lines.iter().position(|l| presumed_dead(l)) {
            let drop = lines.iter().position(|l| dropped(l));
            assert!(
                drop.is_some_and(|drop| drop < death),
                "the leaver was presumed dead before being dropped as told:\n{}",
                tail(&log)
            );
        }
    }
}

#[test]
fn an_unreachable_bootstrap_is_reported_and_retried_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::join(NOWHERE, &dir.path().join("lonely"), 1, &[]);
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
        node.log().contains(NOWHERE),
        "the message names the bootstrap: {}",
        node.log()
    );
    assert!(node.log().contains("retrying in"), "{}", node.log());
    // Not joined: `ring` says so and fails; the process is still alive,
    // and reports NOT_SERVING to the gRPC health protocol (exit 1), for the
    // process and for its member alike.
    let output = chordal(&["ring", "--via", &node.addr]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has not joined"));
    let health = chordal(&["health", "--addr", &node.addr]);
    assert_eq!(health.status.code(), Some(1), "{health:?}");
    let member = format!("chordal.member.{}", Id::of_vnode(&node.addr, 0));
    let health = chordal(&["health", "--addr", &node.addr, "--service", &member]);
    assert_eq!(health.status.code(), Some(1), "{member}: {health:?}");
    // The server itself is up: the "" service is SERVING.
    let health = chordal(&["health", "--addr", &node.addr, "--service", ""]);
    assert!(health.status.success(), "{health:?}");
    assert!(node.is_running());
    // The same check answers SERVING (exit 0) once a node is in a ring.
    let joined = Node::start_new_ring(&dir.path().join("ring"), 1, &[]);
    let deadline = Instant::now() + SETTLE;
    while !chordal(&["health", "--addr", &joined.addr])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{}", tail(&joined.log()));
        sleep(Duration::from_millis(100));
    }
    let member = format!("chordal.member.{}", Id::of_vnode(&joined.addr, 0));
    let health = chordal(&["health", "--addr", &joined.addr, "--service", &member]);
    assert!(health.status.success(), "{member}: {health:?}");
    assert!(node.terminate().success());
    // Bootstraps are tried in the order given: past one that does not
    // answer, the next one lets a node join.
    let second = Node::join(
        NOWHERE,
        &dir.path().join("second"),
        1,
        &["--bootstrap", &joined.addr],
    );
    wait_for_ring(&[&joined, &second], 1);
}

#[test]
fn ring_reports_a_ring_that_does_not_close_and_exits_one() {
    // Deadlines long enough that the first process still names the second
    // as its successor for many seconds after the second stops answering.
    let dir = tempfile::tempdir().unwrap();
    let slow = ["--rpc-timeout", "5s"];
    let nodes = start_nodes(dir.path(), 2, None, 1, &slow);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    nodes[1].pause();
    // Two seconds to connect and ask each process: the paused one takes
    // them all, well inside the first one's five-second deadline.
    let output = chordal(&["ring", "--via", &nodes[0].addr, "--timeout", "2s"]);
    nodes[1].resume();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("the ring is not whole"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}, which cannot be reached", nodes[1].addr)),
        "{stderr}"
    );
    assert!(stdout.contains("NOT WHOLE"), "{stdout}");
    // Answering again, the ring is whole.
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
}

#[test]
fn a_node_saves_its_peers_when_it_shuts_down() {
    // Stabilizing every 10 s, the first process would save its peers
    // periodically only after 20 ticks: a file there after SIGTERM was
    // written by the shutdown.
    let dir = tempfile::tempdir().unwrap();
    let mut first = Node::start_new_ring(
        &dir.path().join("first"),
        1,
        &["--stabilize-interval", "10s"],
    );
    let second = Node::join(&first.addr, &dir.path().join("second"), 1, &[]);
    wait_for_ring(&[&first, &second], 1);
    let peers_file = first.data_dir.join("peers");
    assert!(!peers_file.exists(), "saved before the shutdown");
    assert!(first.terminate().success(), "{}", tail(&first.log()));
    let peers = std::fs::read_to_string(&peers_file).unwrap_or_default();
    assert!(
        peers.lines().any(|line| line == second.addr),
        "{} does not name {}: {peers:?}",
        peers_file.display(),
        second.addr
    );
}

#[test]
fn a_node_restarted_under_another_address_keeps_its_ids_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let mut before = Node::start_new_ring(&data_dir, 2, &[]);
    let ids = wait_for_ring(&[&before], 2).ids_of(&before.addr);
    assert!(before.terminate().success());
    let after = Node::start_new_ring(&data_dir, 2, &[]);
    assert_ne!(after.addr, before.addr, "port 0 gave the same port twice");
    assert_eq!(wait_for_ring(&[&after], 2).ids_of(&after.addr), ids);
    let warning = format!(
        "data directory was created for {}; now advertising {} with the same ids",
        before.addr, after.addr
    );
    assert!(
        plain(&after.log()).contains(&warning),
        "{}",
        tail(&after.log())
    );
}

/// Runs `chordal --port 0 --vnodes 1 ARGS` (with `--new-ring` unless ARGS
/// name a bootstrap) with the environment `env` until its log shows
/// `until`, stops it with SIGTERM, and returns its log (stderr) and the
/// data directory its first line names.
fn run_until(args: &[&str], env: &[(&str, String)], until: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr");
    let mut command = std::process::Command::new(CHORDAL);
    command
        .args(["--port", "0", "--vnodes", "1"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("XDG_DATA_HOME")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    if !args.contains(&"--bootstrap") {
        command.arg("--new-ring");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + SETTLE;
    while !log().contains(until) {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("{args:?}: no {until:?} in the log: {}", tail(&log()));
        }
        sleep(Duration::from_millis(50));
    }
    let status = signal_and_wait(&mut child, nix::sys::signal::Signal::SIGTERM)
        .unwrap_or_else(|| panic!("{args:?}: still running after SIGTERM: {}", tail(&log())));
    assert!(status.success(), "{}", tail(&log()));
    let log = log();
    let data_dir = log
        .lines()
        .find_map(|line| line.split("; data in ").nth(1))
        .unwrap_or_else(|| panic!("no data directory in the log: {log}"))
        .to_string();
    (log, data_dir)
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[test]
fn the_data_directory_defaults_under_xdg_data_home_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let (xdg, home) = (dir.path().join("xdg"), dir.path().join("home"));
    let (log, data_dir) = run_until(
        &[],
        &[("XDG_DATA_HOME", path(&xdg)), ("HOME", path(&home))],
        "data in",
    );
    let port = log
        .split("node 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no address in the log: {log}"));
    let expected = xdg.join("chordal").join(format!("127.0.0.1-{port}"));
    assert_eq!(std::path::Path::new(&data_dir), expected);
    assert!(expected.join("identity").exists(), "{log}");
    // Without XDG_DATA_HOME: under $HOME/.local/share.
    let (log, data_dir) = run_until(&[], &[("HOME", path(&home))], "data in");
    assert!(
        data_dir.starts_with(&home.join(".local/share/chordal").display().to_string()),
        "{data_dir}: {log}"
    );
    assert!(std::path::Path::new(&data_dir).join("identity").exists());
}

#[test]
fn each_v_shows_one_more_level_of_the_log_and_rust_log_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let data = |name: &str| dir.path().join(name);
    let args = |name: &str, extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["--data-dir".to_string(), data(name).display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: &[String], env: &[(&str, String)], until: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_until(&args, env, until).0
    };
    // Plain: warnings only, and the lines the command itself writes.
    let log = run(&args("quiet", &[]), &[], "data in");
    assert!(!log.contains(" INFO ") && !log.contains(" DEBUG "), "{log}");
    // -v: joins and deaths (info), nothing finer.
    let log = run(&args("v", &["-v"]), &[], " INFO ");
    assert!(
        !log.contains(" DEBUG ") && !log.contains(" TRACE "),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colours in a log that is not a terminal: {log}"
    );
    // -vv: every change of successor or predecessor (debug). Joining a
    // ring, the process sends ring requests, which only trace shows.
    let ring = Node::start_new_ring(&data("ring"), 1, &[]);
    let mut joining = args("vv", &["-vv"]);
    joining.extend(["--bootstrap".to_string(), ring.addr.clone()]);
    let log = run(&joining, &[], " DEBUG ");
    assert!(!log.contains(" TRACE "), "{log}");
    // -vvv: every ring request in and out (trace).
    let mut joining = args("vvv", &["-vvv"]);
    joining.extend(["--bootstrap".to_string(), ring.addr.clone()]);
    let log = run(&joining, &[], "request out");
    assert!(log.contains(" TRACE "), "{log}");
    // RUST_LOG overrides -v.
    let filter = ("RUST_LOG", "chordal=trace".to_string());
    let mut joining = args("env", &["-v"]);
    joining.extend(["--bootstrap".to_string(), ring.addr.clone()]);
    let log = run(&joining, &[filter], "request out");
    assert!(log.contains(" TRACE "), "{log}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["--host", "0.0.0.0"], "pass --advertise"),
        (&["--host", "::"], "pass --advertise"),
        (&["--successors", "1"], "--successors must be between 2"),
        (&["--vnodes", "0"], "--vnodes must be between 1"),
        (&["--bootstrap", "nowhere"], "host:port"),
        (&["--stabilize-interval", "soon"], "invalid value"),
        (
            &["--max-value-size", "67108865"],
            "--max-value-size must be between 1 byte and 64 MiB",
        ),
    ];
    for (args, expected) in cases {
        let output = chordal(args);
        assert!(!output.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = chordal(&["lookup", "key", "--via", NOWHERE]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn a_node_on_port_zero_reports_the_port_it_bound_and_serves_there() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_new_ring(&dir.path().join("zero"), 1, &[]);
    assert_ne!(node.port, 0);
    assert_eq!(node.addr, format!("127.0.0.1:{}", node.port));
    // The address file and the start-up line agree, and the node answers there.
    let file = std::fs::read_to_string(node.data_dir.join("address")).unwrap();
    assert_eq!(file.trim(), node.addr);
    let view = wait_for_ring(&[&node], 1);
    assert_eq!(view.processes(), [node.addr.clone()].into_iter().collect());
    assert!(
        node.log()
            .contains(&format!("node {} with 1 virtual nodes", node.addr)),
        "{}",
        tail(&node.log())
    );
    // --advertise cannot name a port not yet picked.
    let refused = chordal(&["--port", "0", "--advertise", "10.0.0.1:1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--port 0"));
}

#[test]
fn chordal_local_starts_a_ring_and_ctrl_c_makes_every_node_leave() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("local.log");
    let mut local = Command::new(CHORDAL)
        .args(["local", "--nodes", "3", "--base-port", "0", "--vnodes", "1"])
        .args(["--watch", "0s", "--data-dir"])
        .arg(dir.path().join("ring"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The addresses it prints, up to its last line of instructions.
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = local.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut addrs = Vec::new();
    loop {
        let line = printed.recv_timeout(SETTLE).unwrap_or_else(|_| {
            panic!(
                "chordal local printed no instructions: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        if let Some(addr) = line.trim().strip_prefix("127.0.0.1:") {
            let port = addr.split_whitespace().next().unwrap();
            addrs.push(format!("127.0.0.1:{port}"));
        }
        if line.contains("Ctrl-C stops every node") {
            break;
        }
    }
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    // One ring of the three.
    let deadline = Instant::now() + SETTLE;
    loop {
        let view = ring_via(&addrs[0]);
        if view.whole && view.processes() == addrs.iter().cloned().collect() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", view.summary);
        sleep(Duration::from_millis(200));
    }
    // Ctrl-C: every node leaves the ring, and `local` exits 0.
    let status = signal_and_wait(&mut local, nix::sys::signal::Signal::SIGINT)
        .expect("chordal local did not stop");
    assert!(status.success(), "{status}");
    let log = plain(&std::fs::read_to_string(&log).unwrap());
    for addr in &addrs {
        assert!(
            log.contains(&format!("node {addr} left the ring")),
            "{addr} did not leave:\n{}",
            tail(&log)
        );
    }
}
