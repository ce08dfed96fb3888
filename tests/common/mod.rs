//! What the process tests share: starting `chordal` nodes on free loopback
//! ports, and reading the ring as `chordal ring` shows it.
#![allow(dead_code)] // each test binary uses a different part

use chordal::ops::launch::{Launch, Log, NodeProcess};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const CHORDAL: &str = env!("CARGO_BIN_EXE_chordal");
/// An address nobody answers at: port 1 on loopback (tcpmux, which no
/// test machine runs), refused at once. A free port picked at random
/// could be taken by another test's node.
pub const NOWHERE: &str = "127.0.0.1:1";

/// Generous: the machines running the tests are shared and slow.
pub const SETTLE: Duration = Duration::from_secs(60);

/// The runtime the process tests drive their clients with.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A node process, killed when dropped (started by the library's one
/// launcher, [`chordal::ops::launch`]).
pub struct Node {
    pub addr: String,
    pub port: u16,
    pub data_dir: PathBuf,
    process: NodeProcess,
}

/// The flags every test node runs with: fast maintenance, short deadlines,
/// and a debug log.
const TEST_FLAGS: &[&str] = &[
    "--stabilize-interval",
    "200ms",
    "--fix-fingers-interval",
    "100ms",
    "--rpc-timeout",
    "500ms",
    "-vv",
];

impl Node {
    pub fn start(port: u16, bootstrap: &str, data_dir: &Path, vnodes: u32) -> Node {
        Node::start_with(port, bootstrap, data_dir, vnodes, &[])
    }

    /// Starts a node with `extra` arguments after the usual ones.
    pub fn start_with(
        port: u16,
        bootstrap: &str,
        data_dir: &Path,
        vnodes: u32,
        extra: &[&str],
    ) -> Node {
        Node::spawn(
            Launch::new(CHORDAL, port, bootstrap, data_dir),
            vnodes,
            extra,
        )
    }

    /// Starts a node listening on `host` inside network namespace
    /// `netns` (`ip netns exec` replaces itself with the node, so the
    /// child is the node).
    pub fn start_in_netns(
        netns: &str,
        host: &str,
        port: u16,
        bootstrap: &str,
        data_dir: &Path,
        vnodes: u32,
        extra: &[&str],
    ) -> Node {
        let launch = Launch::new(CHORDAL, port, bootstrap, data_dir)
            .host(host)
            .wrapped(&["ip", "netns", "exec", netns]);
        Node::spawn(launch, vnodes, extra)
    }

    /// Starts a node on a free port that starts a new ring; returns once
    /// it has reported the port it got.
    pub fn start_new_ring(data_dir: &Path, vnodes: u32, extra: &[&str]) -> Node {
        Node::spawn(Launch::new_ring(CHORDAL, data_dir), vnodes, extra)
    }

    /// Starts a node on a free port that joins through `bootstrap`; returns
    /// once it has reported the port it got.
    pub fn join(bootstrap: &str, data_dir: &Path, vnodes: u32, extra: &[&str]) -> Node {
        Node::spawn(Launch::new(CHORDAL, 0, bootstrap, data_dir), vnodes, extra)
    }

    fn spawn(launch: Launch, vnodes: u32, extra: &[&str]) -> Node {
        let log = Log::File(launch.data_dir.with_extension("log"));
        let launch = launch
            .vnodes(vnodes)
            .args(TEST_FLAGS)
            .args(extra)
            .log_to(log);
        let mut process = launch.spawn().expect("chordal starts");
        if launch.port == 0 {
            // The port is the node's to pick: no other process can take it
            // between a test choosing it and the node binding it.
            process
                .wait_for_address(SETTLE)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        Node {
            addr: process.addr.clone(),
            port: process.port,
            data_dir: launch.data_dir.clone(),
            process,
        }
    }

    /// Whether the process was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    pub fn kill_9(&mut self) {
        assert!(self.is_running(), "{} is not running", self.addr);
        self.process.kill_9().unwrap(); // SIGKILL
    }

    /// Stops the process where it is (`SIGSTOP`): its port still accepts
    /// connections, but nothing is answered until [`Node::resume`].
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        send_signal(self.process.pid().expect("the node is running"), signal);
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process
            .terminate(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// The address of the node's admin port, once it serves one (started
    /// with `--admin-port 0`, it picks the port and writes it down).
    pub fn admin_addr(&mut self) -> String {
        self.process
            .wait_for_admin_address(SETTLE)
            .unwrap_or_else(|e| panic!("{e}: {}", tail(&self.log())))
    }
}

pub fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("{signal} to process {pid}: {e}"));
}

/// Sends `signal` to `child` and waits up to [`SETTLE`] for it to exit.
/// A child still running then is killed, and `None` returned.
pub fn signal_and_wait(
    child: &mut std::process::Child,
    signal: nix::sys::signal::Signal,
) -> Option<std::process::ExitStatus> {
    send_signal(child.id(), signal);
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return Some(status);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Whether a test whose prerequisite `what` is missing may be skipped:
/// never where `CI` is set (CI runs with `CI=true`: a missing prerequisite
/// fails the run), and elsewhere only when `CHORDAL_SKIP_MISSING=1` says so,
/// with the skip printed. Otherwise the test fails, naming what to install.
/// Returns true when the test should go on.
pub fn prerequisite(available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let opted_out = std::env::var("CHORDAL_SKIP_MISSING").is_ok_and(|v| v == "1");
    if opted_out && !ci {
        eprintln!("SKIPPED (CHORDAL_SKIP_MISSING=1): this test needs {what}");
        return false;
    }
    panic!(
        "this test needs {what}, which this machine lacks: {install}\n\
         (to skip such tests outside CI, set CHORDAL_SKIP_MISSING=1)"
    );
}

/// A log without its colours (ANSI escape sequences), to match words in.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn chordal(args: &[&str]) -> Output {
    Command::new(CHORDAL)
        .args(args)
        .output()
        .expect("chordal runs")
}

/// What `chordal ring --via ADDR` showed.
#[derive(Debug)]
pub struct RingView {
    pub whole: bool,
    pub summary: String,
    /// (id, address) of every member, in the order printed.
    pub members: Vec<(String, String)>,
}

impl RingView {
    pub fn processes(&self) -> BTreeSet<String> {
        self.members.iter().map(|(_, addr)| addr.clone()).collect()
    }

    pub fn ids_of(&self, addr: &str) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, a)| a == addr)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

pub fn ring_via(addr: &str) -> RingView {
    RingView::from_output(&chordal(&["ring", "--via", addr, "--timeout", "2s"]))
}

impl RingView {
    /// What a `chordal ring` run printed.
    pub fn from_output(output: &Output) -> RingView {
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
}

/// Waits until the ring seen from every one of `nodes` is whole and holds
/// exactly their processes with `vnodes` members each.
pub fn wait_for_ring(nodes: &[&Node], vnodes: usize) -> RingView {
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

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts `count` nodes on ports they pick, with `extra` arguments, one
/// after the other: joining through `bootstrap`, or with `None`, the first
/// starting a new ring and the others joining it. Data directories are
/// `dir/node-N`, N unique within this test process.
pub fn start_nodes(
    dir: &Path,
    count: usize,
    bootstrap: Option<&str>,
    vnodes: u32,
    extra: &[&str],
) -> Vec<Node> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut nodes: Vec<Node> = Vec::new();
    let mut bootstrap = bootstrap.map(String::from);
    for _ in 0..count {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data_dir = dir.join(format!("node-{n}"));
        let node = match &bootstrap {
            Some(bootstrap) => Node::join(bootstrap, &data_dir, vnodes, extra),
            None => Node::start_new_ring(&data_dir, vnodes, extra),
        };
        bootstrap.get_or_insert_with(|| node.addr.clone());
        nodes.push(node);
    }
    nodes
}

/// The body of the answer to `GET path` from the HTTP server at `addr`,
/// if it answered 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the sample named exactly `sample` (name and labels) in a
/// Prometheus metrics page.
pub fn metric(page: &str, sample: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// A ring of `count` nodes on ports they pick: the first starts it, the
/// others join through it ([`start_nodes`] with no extra arguments).
pub fn start_ring(dir: &Path, count: usize, vnodes: u32) -> Vec<Node> {
    start_nodes(dir, count, None, vnodes, &[])
}

/// The addresses of the processes that should hold `key`: its owner and
/// the next `replicas - 1` distinct processes, on the ring `view` shows.
pub fn holders(view: &RingView, key: &[u8], replicas: usize) -> Vec<String> {
    use chordal::id::Id;
    use chordal::ring::NodeRef;
    let members: Vec<NodeRef> = view
        .members
        .iter()
        .map(|(id, addr)| NodeRef::new(id.parse::<Id>().unwrap(), addr.clone()))
        .collect();
    let target = Id::of_key(key);
    let at = members.iter().position(|m| m.id >= target).unwrap_or(0);
    let owner = &members[at];
    let after: Vec<NodeRef> = members[at + 1..]
        .iter()
        .chain(&members[..=at])
        .cloned()
        .collect();
    let preference = chordal::replica::preference_from(owner, &after, replicas - 1);
    std::iter::once(owner.addr.clone())
        .chain(preference.others.into_iter().map(|m| m.addr))
        .collect()
}

/// The copies that are not `latest`'s value on some holder of its key
/// (owner and next `replicas - 1` distinct processes on the ring `view`
/// shows), read from each holder's own store: one line each, and one line
/// for a holder that cannot be reached (its keys not asked again). `reach`
/// gives the address to reach a holder at (a container's published port,
/// say) from its address on the ring, if it has one now.
pub fn stale_copies(
    rt: &tokio::runtime::Runtime,
    view: &RingView,
    latest: &std::collections::BTreeMap<String, Vec<u8>>,
    replicas: usize,
    reach: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    use chordal::rpc::ApiClient;
    rt.block_on(async {
        let mut conns = std::collections::BTreeMap::new();
        let mut unreachable = BTreeSet::new();
        let mut stale = Vec::new();
        for (key, value) in latest {
            for holder in holders(view, key.as_bytes(), replicas) {
                if unreachable.contains(&holder) {
                    continue;
                }
                if !conns.contains_key(&holder) {
                    let connected = match reach(&holder) {
                        Some(addr) => ApiClient::connect(&addr, Duration::from_secs(5))
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("no address to reach it at".to_string()),
                    };
                    match connected {
                        Ok(conn) => conns.insert(holder.clone(), conn),
                        Err(e) => {
                            stale.push(format!("{holder}: {e}"));
                            unreachable.insert(holder);
                            continue;
                        }
                    };
                }
                let conn = conns.get_mut(&holder).expect("connected");
                match conn.get(key.as_bytes(), true).await {
                    Ok(got) if got.value == *value => {}
                    Ok(got) => stale.push(format!(
                        "{key} on {holder}: {:?}",
                        String::from_utf8_lossy(&got.value)
                    )),
                    Err(e) => stale.push(format!("{key} on {holder}: {e}")),
                }
            }
        }
        stale
    })
}

/// Waits until [`stale_copies`] finds none, or fails after [`SETTLE`]
/// with `what` and the first few it still finds.
pub fn wait_for_fresh_copies(
    rt: &tokio::runtime::Runtime,
    view: &RingView,
    latest: &std::collections::BTreeMap<String, Vec<u8>>,
    reach: impl Fn(&str) -> Option<String>,
    what: &str,
) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let stale = stale_copies(rt, view, latest, 3, &reach);
        if stale.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} copies {what}, first {:?}",
            stale.len(),
            &stale[..stale.len().min(5)]
        );
        sleep(Duration::from_secs(1));
    }
}

/// Which of `keys` the node at `addr` holds in its own store (a local read
/// of each, no routing).
pub fn held_locally(rt: &tokio::runtime::Runtime, addr: &str, keys: &[String]) -> Vec<String> {
    rt.block_on(async {
        let mut conn = chordal::rpc::ApiClient::connect(addr, SETTLE)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let mut held = Vec::new();
        for key in keys {
            if conn.get(key.as_bytes(), true).await.is_ok() {
                held.push(key.clone());
            }
        }
        held
    })
}

/// Runs this test binary's `fails_on_purpose_to_show_the_replay_line`
/// (an ignored scenario that fails on purpose) in a child process with
/// `CHORDAL_SIM_SEED=4242`, and checks that it failed printing the one
/// command that replays it, for the test file `test_file`.
pub fn assert_a_failure_prints_its_replay_command(test_file: &str) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture"])
        .arg("fails_on_purpose_to_show_the_replay_line")
        .env("CHORDAL_SIM_SEED", "4242")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let expected = format!(
        "simulation failed with seed 4242; replay it with:\n    \
         CHORDAL_SIM_SEED=4242 cargo test --test {test_file} \
         fails_on_purpose_to_show_the_replay_line"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
