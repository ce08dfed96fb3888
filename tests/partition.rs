//! A node cut off from the rest of the ring by the network while writes
//! continue, then healed: the ring becomes one again and anti-entropy
//! brings every copy of every key to its newest version.
//!
//! Each node runs in a network namespace of its own, linked to a bridge by
//! a veth pair; cutting a node off is taking its port on the bridge down.
//! This needs root and `ip` (iproute2); without them the test says so and
//! passes without running. With them, it runs, and any failure to build
//! the network fails it.

mod common;

use chordal::rpc::ApiClient;
use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `ip ARGS`; whether it worked.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip_ok(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One namespace per host, each linked by a veth pair to a bridge in a
/// namespace of its own (the switch), which this process reaches through
/// one more pair. The bridge lives outside the host's namespace so that
/// the host's firewall (Docker's sets forwarding to DROP) never sees the
/// traffic. Everything is removed when dropped.
struct Network {
    switch: String,
    uplink: String,
    subnet: String,
    hosts: Vec<String>,
}

impl Network {
    /// `None` when this machine cannot make namespaces: not root, or no
    /// `ip`. As root with `ip`, a failure to build the network fails.
    /// Whether namespaces can be made here: root, and `ip`.
    fn available() -> bool {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        root && ip(&["-V"])
    }

    fn create(hosts: usize) -> Network {
        let tag = std::process::id() % 100_000;
        let network = Network {
            switch: format!("chs{tag}"),
            uplink: format!("chu{tag}"),
            subnet: format!("10.213.{}", tag % 250),
            hosts: (0..hosts).map(|h| format!("chn{tag}x{h}")).collect(),
        };
        // A namespace or link left by a run that was killed may hold the
        // names.
        ip(&["netns", "delete", &network.switch]);
        ip(&["link", "delete", &network.uplink]);
        ip_ok(&["netns", "add", &network.switch]);
        let sw = network.switch.as_str();
        ip_ok(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", sw, "link", "set", "br0", "up"]);
        // This process's own way in: .254 on the host's side.
        ip_ok(&[
            "link",
            "add",
            &network.uplink,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            sw,
        ]);
        ip_ok(&["-n", sw, "link", "set", "up0", "master", "br0", "up"]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}.254/24", network.subnet),
            "dev",
            &network.uplink,
        ]);
        ip_ok(&["link", "set", &network.uplink, "up"]);
        for (h, netns) in network.hosts.iter().enumerate() {
            let port = network.port(h);
            ip(&["netns", "delete", netns]);
            ip_ok(&["netns", "add", netns]);
            ip_ok(&[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                netns,
            ]);
            ip_ok(&["-n", sw, "link", "set", &port, "master", "br0", "up"]);
            ip_ok(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{}/24", network.host(h)),
                "dev",
                "eth0",
            ]);
            ip_ok(&["-n", netns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", netns, "link", "set", "lo", "up"]);
        }
        network
    }

    fn host(&self, h: usize) -> String {
        format!("{}.{}", self.subnet, h + 1)
    }

    /// The switch's port for host `h`.
    fn port(&self, h: usize) -> String {
        format!("port{h}")
    }

    fn cut(&self, h: usize) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.port(h), "down"]);
    }

    fn heal(&self, h: usize) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.port(h), "up"]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        ip(&["link", "delete", &self.uplink]);
        for netns in &self.hosts {
            ip(&["netns", "delete", netns]);
        }
        ip(&["netns", "delete", &self.switch]);
    }
}

fn key(i: u64) -> String {
    format!("key-{i:05}")
}

#[test]
fn a_node_cut_off_while_writes_continue_converges_once_healed() {
    let available = Network::available();
    if !prerequisite(
        available,
        "network namespaces (root and iproute2's `ip`)",
        "run as root, with iproute2 installed (scripts/install-deps.sh installs it)",
    ) {
        return;
    }
    let network = Network::create(4);
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let port = 10001;
    let bootstrap = format!("{}:{port}", network.host(0));
    let nodes: Vec<Node> = (0..4)
        .map(|h| {
            let node = Node::start_in_netns(
                &network.hosts[h],
                &network.host(h),
                port,
                &bootstrap,
                &dir.path().join(format!("node-{h}")),
                2,
                &["--anti-entropy-interval", "3s"],
            );
            std::thread::sleep(Duration::from_millis(300));
            node
        })
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let started = Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());
    wait_for_ring(&all, 2);
    phase("ring of four");

    let mut latest = BTreeMap::new();
    // Writes `value` under key `i`; remembers it if acknowledged.
    let write =
        |latest: &mut BTreeMap<u64, String>, conn: &mut ApiClient, i: u64, value: String| {
            let key = key(i);
            let put = conn.put(key.as_bytes(), value.clone().into_bytes(), Duration::ZERO);
            if rt.block_on(put).is_ok() {
                latest.insert(i, value);
            }
        };
    let mut conn = rt
        .block_on(ApiClient::connect(&nodes[0].addr, Duration::from_secs(20)))
        .unwrap();
    for i in 0..500 {
        write(&mut latest, &mut conn, i, format!("first {i}"));
    }
    assert_eq!(latest.len(), 500, "every write before the cut succeeds");
    phase("500 writes");

    // The fourth node is cut off; the other three go on taking writes:
    // new keys, and new values for keys it holds copies of.
    network.cut(3);
    let majority: Vec<&Node> = nodes[..3].iter().collect();
    wait_for_ring(&majority, 2);
    phase("cut off; the other three are a ring");
    for i in 0..1000 {
        write(&mut latest, &mut conn, i, format!("second {i}"));
    }
    let acknowledged_while_cut = latest.values().filter(|v| v.starts_with("second")).count();
    assert!(
        acknowledged_while_cut > 900,
        "{acknowledged_while_cut} writes taken while cut"
    );

    phase("1000 writes while cut off");
    // Healed: one ring of four again, and every copy catches up.
    network.heal(3);
    let view = wait_for_ring(&all, 2);
    phase("healed; one ring of four");
    let expected: BTreeMap<String, Vec<u8>> = latest
        .iter()
        .map(|(i, value)| (key(*i), value.clone().into_bytes()))
        .collect();
    let deadline = Instant::now() + SETTLE;
    loop {
        let view = ring_via(&nodes[0].addr);
        let stale = stale_copies(&rt, &view, &expected, 3, |holder| Some(holder.to_string()));
        if stale.is_empty() && view.whole && view.processes().len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} stale copies a minute after healing, first {:?}; {}\n{}",
            stale.len(),
            &stale[..stale.len().min(5)],
            view.summary,
            tail(&nodes[3].log())
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(view);
    phase("every copy of every key is the newest");
    // The node that was cut off serves the newest values.
    let mut at_rejoined = rt
        .block_on(ApiClient::connect(&nodes[3].addr, Duration::from_secs(20)))
        .unwrap();
    for (i, value) in &latest {
        let got = rt
            .block_on(at_rejoined.get(key(*i).as_bytes(), false))
            .unwrap();
        assert_eq!(got.value, value.as_bytes(), "{}", key(*i));
    }
}
