//! The container image and the compose ring, on a real Docker engine:
//! `scripts/image.sh` builds an image FROM scratch, `docker-compose.yml`
//! starts five processes that find each other by service name and report
//! healthy through the gRPC health protocol, a node stopped and started
//! again comes back with its data, and `scripts/drill.sh` passes its three
//! fault drills. Where no Docker engine answers these tests fail, naming
//! what to install (`CHORDAL_SKIP_MISSING=1` skips them, outside CI only).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SERVICES: [&str; 5] = ["bootstrap", "node-1", "node-2", "node-3", "node-4"];

const DOCKER: &str = "a running Docker engine (`docker info`) and docker-compose";
const INSTALL_DOCKER: &str =
    "install docker.io and docker-compose (Debian) and start the engine (systemctl start docker)";

/// One compose ring at a time: each is an image build and five
/// containers, and two at once on a two-core machine starve each other's
/// deadlines. Held until the test's ring is taken down.
fn one_compose_ring_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RINGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn docker_engine() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A compose project of its own, in a directory of its own, its ports
/// published on host ports Docker picks; taken down (volumes and all) when
/// dropped.
struct Compose {
    dir: PathBuf,
    project: String,
    image: String,
    /// `--anti-entropy-interval` of every node.
    anti_entropy: &'static str,
}

impl Compose {
    /// [`Compose::new`], brought up: every container healthy and the ring
    /// whole seen from bootstrap.
    fn started(dir: &Path, anti_entropy: &'static str) -> Compose {
        let compose = Compose::new(dir, anti_entropy);
        let up = compose.run(&["up", "-d"]);
        assert!(up.status.success(), "{up:?}");
        compose.wait_healthy();
        compose.wait_whole("bootstrap");
        compose
    }

    fn new(dir: &Path, anti_entropy: &'static str) -> Compose {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(
            repo.join("docker-compose.yml"),
            dir.join("docker-compose.yml"),
        )
        .unwrap();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let unique = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let tag = format!("test-{unique}");
        let output = Command::new(repo.join("scripts/image.sh"))
            .arg(&tag)
            .env("CHORDAL_BIN", CHORDAL)
            .env("CHORDAL_IMAGE_DIR", dir.join("image"))
            .output()
            .unwrap();
        assert!(output.status.success(), "image: {output:?}");
        Compose {
            dir: dir.to_path_buf(),
            project: format!("chordaltest{unique}"),
            image: format!("chordal:{tag}"),
            anti_entropy,
        }
    }

    /// `program` run in the project's directory with what docker-compose
    /// needs to find this project: its file, its name, its image, and
    /// host port 0 for every published port (Docker picks a free one,
    /// asked back with `port`, so two tests can never be handed the same).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.dir)
            .env("COMPOSE_FILE", self.dir.join("docker-compose.yml"))
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("CHORDAL_IMAGE", &self.image)
            .env("CHORDAL_ANTI_ENTROPY_INTERVAL", self.anti_entropy);
        for name in ["BOOTSTRAP", "NODE_1", "NODE_2", "NODE_3", "NODE_4"] {
            command.env(format!("CHORDAL_PORT_{name}"), "0");
            command.env(format!("CHORDAL_ADMIN_PORT_{name}"), "0");
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command("docker-compose").args(args).output().unwrap()
    }

    /// Where on the host `service`'s container port is published now (a
    /// restarted container may get another host port).
    fn published(&self, service: usize, port: u16) -> String {
        self.published_now(service, port)
            .unwrap_or_else(|| panic!("{} publishes no port {port}", SERVICES[service]))
    }

    /// [`Compose::published`], or `None` while the port is not published
    /// (a container between networks, say).
    fn published_now(&self, service: usize, port: u16) -> Option<String> {
        let output = self.run(&["port", SERVICES[service], &port.to_string()]);
        let addr = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (output.status.success() && addr.starts_with("127.0.0.1:")).then_some(addr)
    }

    /// The address of `service`'s node, from the host.
    fn addr(&self, service: usize) -> String {
        self.published(service, 10001)
    }

    /// The address of `service`'s admin port, from the host.
    fn admin_addr(&self, service: usize) -> String {
        self.published(service, 8080)
    }

    /// Waits until every service's container reports healthy.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let healthy = SERVICES.iter().all(|service| {
                let id = self.container(service);
                let status = Command::new("docker")
                    .args(["inspect", "-f", "{{.State.Health.Status}}", &id])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&status.stdout).trim() == "healthy"
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all healthy: {}",
                String::from_utf8_lossy(&self.run(&["ps"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `chordal ring` run inside the network, in `service`, through its
    /// own node.
    fn ring(&self, service: &str) -> RingView {
        RingView::from_output(&self.run(&[
            "exec",
            "-T",
            service,
            "/chordal",
            "ring",
            "--via",
            &format!("{service}:10001"),
            "--timeout",
            "2s",
        ]))
    }

    /// Waits until the ring seen from `service` is the ring of exactly
    /// `services`, each with its four members, closed and ordered.
    fn wait_ring_of(&self, service: &str, services: &[&str]) -> RingView {
        let expected: std::collections::BTreeSet<String> =
            services.iter().map(|s| format!("{s}:10001")).collect();
        let deadline = Instant::now() + SETTLE;
        loop {
            let view = self.ring(service);
            if view.whole
                && view.processes() == expected
                && view.members.len() == 4 * services.len()
            {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "from {service}, not the ring of {services:?}: {}",
                view.summary
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the ring seen from `service` is the whole ring: every
    /// member of the five processes, closed and ordered.
    fn wait_whole(&self, service: &str) -> RingView {
        self.wait_ring_of(service, &SERVICES)
    }

    /// The host address of a ring member's advertised address
    /// (`node-2:10001`), if its port is published now.
    fn host_addr(&self, advertised: &str) -> Option<String> {
        let service = advertised.trim_end_matches(":10001");
        let index = SERVICES.iter().position(|s| *s == service)?;
        self.published_now(index, 10001)
    }

    /// Runs `docker ARGS`, failing the test if it fails.
    fn docker(&self, args: &[&str]) {
        let output = Command::new("docker").args(args).output().unwrap();
        assert!(output.status.success(), "docker {args:?}: {output:?}");
    }

    /// `chordal chat`, as docs/operations.md runs it: inside the network,
    /// where every process's advertised name resolves. A line piped into a
    /// client in node-3 reaches a `--print` client in node-1, through
    /// relays that are all containers of the ring.
    fn chat_inside_the_network(&self) {
        use std::io::{BufRead, BufReader};
        let chat = |service: &str, nick: &str| {
            let mut command = self.command("docker-compose");
            command.args([
                "exec",
                "-T",
                service,
                "/chordal",
                "chat",
                "--room",
                "lobby",
                "--via",
                "bootstrap:10001",
                "--nick",
                nick,
                "--timeout",
                "2s",
            ]);
            command
        };
        let mut reader = chat("node-1", "reader")
            .arg("--print")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (lines, printed) = std::sync::mpsc::channel();
        let stdout = reader.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + SETTLE;
        let mut seen = Vec::new();
        // The reader may not be watching yet when a line is sent: send
        // again (a new line each time) until one is printed.
        'sending: for attempt in 0.. {
            let text = format!("hello from node-3, {attempt}");
            let mut sender = chat("node-3", "ada")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                let mut stdin = sender.stdin.take().unwrap();
                writeln!(stdin, "{text}").unwrap();
            }
            let sent = sender.wait_with_output().unwrap();
            assert!(sent.status.success(), "chat in node-3: {sent:?}");
            let until = (Instant::now() + Duration::from_secs(5)).min(deadline);
            while let Ok(line) =
                printed.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                if line.ends_with(&format!("<ada> {text}")) {
                    break 'sending;
                }
                seen.push(line);
            }
            assert!(
                Instant::now() < deadline,
                "node-1's chat printed none of node-3's lines: {seen:?}"
            );
        }
        reader.kill().ok();
        reader.wait().ok();
    }

    /// The container running `service`.
    fn container(&self, service: &str) -> String {
        let output = self.run(&["ps", "-q", service]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.run(&["down", "-v", "--timeout", "5"]);
        // The second network a partition test made, if any.
        Command::new("docker")
            .args(["network", "rm", &format!("{}_side", self.project)])
            .output()
            .ok();
        Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output()
            .ok();
    }
}

#[test]
fn the_compose_ring_is_healthy_and_a_restarted_node_keeps_its_data() {
    if !prerequisite(docker_engine(), DOCKER, INSTALL_DOCKER) {
        return;
    }
    let _one = one_compose_ring_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Anti-entropy only on demand: nothing but node-2's own volume can give
    // it its records back after the restart below.
    let compose = Compose::started(dir.path(), "0s");
    // The ring is whole seen from any process, not just bootstrap.
    compose.wait_whole("node-1");

    // The image holds the binary and its libraries, nothing else.
    let history = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{len .RootFS.Layers}}",
            &compose.image,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&history.stdout).trim(), "1");
    // About 24 MB, as README.md says: the stripped binary and its few
    // libraries (an unstripped one, or a second copy, would be far over).
    let size = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", &compose.image])
        .output()
        .unwrap();
    let bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        (16_000_000..=32_000_000).contains(&bytes),
        "the image is {bytes} bytes, not about 24 MB"
    );

    compose.chat_inside_the_network();

    // Any node's dashboard and metrics, from the host.
    let dashboard = http_get(&compose.admin_addr(3), "/api/ring");
    let ring: serde_json::Value =
        serde_json::from_str(&dashboard.unwrap_or_default()).unwrap_or_default();
    assert_eq!(ring["members"].as_array().map(Vec::len), Some(20), "{ring}");
    let metrics = http_get(&compose.admin_addr(0), "/metrics");
    assert!(metrics
        .unwrap_or_default()
        .contains("chordal_members_joined 4"));

    let rt = runtime();
    let keys: Vec<String> = (0..200).map(|i| format!("compose-key-{i}")).collect();
    rt.block_on(async {
        let mut conn = chordal::rpc::ApiClient::connect(&compose.addr(0), SETTLE)
            .await
            .unwrap();
        for key in &keys {
            conn.put(key.as_bytes(), key.as_bytes().to_vec(), Duration::ZERO)
                .await
                .unwrap();
        }
    });

    // node-2 stopped and started: its data directory, on the host, keeps
    // its identity and exactly the records it held, and every key reads
    // back through it.
    let held_by_node_2 = || held_locally(&rt, &compose.addr(2), &keys);
    // Once the copies the writes left in flight have landed: two readings
    // in a row agree.
    let mut before = held_by_node_2();
    let deadline = Instant::now() + SETTLE;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let again = held_by_node_2();
        if again == before {
            break;
        }
        assert!(Instant::now() < deadline, "node-2's records keep changing");
        before = again;
    }
    assert!(!before.is_empty(), "node-2 holds none of the keys");
    assert!(compose.run(&["stop", "node-2"]).status.success());
    assert!(compose.run(&["start", "node-2"]).status.success());
    assert!(dir.path().join("data/node-2/identity").exists());
    compose.wait_healthy();
    // Before any read could repair it: exactly what it held.
    assert_eq!(
        held_by_node_2(),
        before,
        "node-2's records after its restart"
    );
    rt.block_on(async {
        let deadline = Instant::now() + SETTLE;
        let mut conn = loop {
            match chordal::rpc::ApiClient::connect(&compose.addr(2), Duration::from_secs(5)).await {
                Ok(conn) => break conn,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        for key in &keys {
            let mut got = conn.get(key.as_bytes(), false).await;
            while got.is_err() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                got = conn.get(key.as_bytes(), false).await;
            }
            assert_eq!(got.unwrap().value, key.as_bytes(), "{key}");
        }
    });
}

/// `scripts/drill.sh`, the script docs/operations.md tells operators to
/// run, on each of its three drills: it writes through bootstrap while it
/// kills, restarts or cuts off a node, then fails unless the ring is one
/// ordered ring of every process again and every write it had
/// acknowledged reads back.
#[test]
fn fault_drills_lose_no_acknowledged_write_and_leave_one_ring() {
    if !prerequisite(docker_engine(), DOCKER, INSTALL_DOCKER) {
        return;
    }
    let _one = one_compose_ring_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let compose = Compose::started(dir.path(), "60s");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/drill.sh");
    for (drill, service) in [
        ("kill", "node-3"),
        ("restart", "node-2"),
        ("disconnect", "node-1"),
    ] {
        let output = compose
            .command(&script)
            .args([drill, service])
            .env("CHORDAL_BIN", CHORDAL)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && stdout.contains("passed: every acknowledged write reads back"),
            "drill {drill} on {service}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("of them after the fault began"), "{stdout}");
        eprintln!("{stdout}");
        compose.wait_healthy();
        compose.wait_whole("bootstrap");
    }
}

/// A network partition without root: node-3 and node-4 moved from the
/// ring's network to one of their own, writes taken on both sides (the
/// same keys too, the minority's later), then moved back. Each side is
/// a closed, ordered ring of its own processes while split; once healed
/// the two rings merge into one and anti-entropy brings every copy of
/// every key to its newest version, the minority's later writes included.
#[test]
fn a_partitioned_compose_ring_merges_and_every_copy_converges_once_healed() {
    if !prerequisite(docker_engine(), DOCKER, INSTALL_DOCKER) {
        return;
    }
    let _one = one_compose_ring_at_a_time();
    const KEYS: usize = 200;
    const MINORITY_KEYS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let compose = Compose::started(dir.path(), "3s");
    let rt = runtime();
    let key = |i: usize| format!("split-{i:04}");
    let mut latest: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let write_through_bootstrap = |latest: &mut std::collections::BTreeMap<String, Vec<u8>>,
                                   round: &str| {
        rt.block_on(async {
            let mut conn = chordal::rpc::ApiClient::connect(&compose.addr(0), SETTLE)
                .await
                .unwrap();
            // Right after a split the owners are still settling: a put
            // refused then is tried again, within the deadline.
            let deadline = Instant::now() + SETTLE;
            for i in 0..KEYS {
                let value = format!("{round} {i}");
                loop {
                    let put = conn
                        .put(
                            key(i).as_bytes(),
                            value.clone().into_bytes(),
                            Duration::ZERO,
                        )
                        .await;
                    match put {
                        Ok(_) => break,
                        Err(e) if Instant::now() > deadline => {
                            panic!("{} ({round}): {e}", key(i))
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                    }
                }
                latest.insert(key(i), value.into_bytes());
            }
        })
    };
    write_through_bootstrap(&mut latest, "first");

    // The split: node-3 and node-4 on a network of their own, known there
    // by the same names.
    let ring_network = format!("{}_ring", compose.project);
    let side_network = format!("{}_side", compose.project);
    let minority = ["node-3", "node-4"];
    compose.docker(&["network", "create", &side_network]);
    for service in minority {
        let container = compose.container(service);
        compose.docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &side_network,
            &container,
        ]);
        compose.docker(&["network", "disconnect", &ring_network, &container]);
    }
    compose.wait_ring_of("bootstrap", &SERVICES[..3]);
    compose.wait_ring_of("node-3", &minority);
    write_through_bootstrap(&mut latest, "second");
    // The minority takes writes too: later than the majority's to the
    // same keys, so its versions are the newest.
    let deadline = Instant::now() + SETTLE;
    for i in 0..MINORITY_KEYS {
        let value = format!("minority {i}");
        let put = || {
            compose.run(&[
                "exec",
                "-T",
                "node-3",
                "/chordal",
                "put",
                &key(i),
                &value,
                "--via",
                "node-3:10001",
            ])
        };
        let mut output = put();
        while !output.status.success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            output = put();
        }
        assert!(output.status.success(), "{}: {output:?}", key(i));
        latest.insert(key(i), value.into_bytes());
    }
    // Still two rings.
    compose.wait_ring_of("bootstrap", &SERVICES[..3]);
    compose.wait_ring_of("node-3", &minority);

    // Healed.
    for service in minority {
        let container = compose.container(service);
        compose.docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &ring_network,
            &container,
        ]);
        compose.docker(&["network", "disconnect", &side_network, &container]);
    }
    let view = compose.wait_whole("bootstrap");
    compose.wait_whole("node-3");
    wait_for_fresh_copies(
        &rt,
        &view,
        &latest,
        |holder| compose.host_addr(holder),
        "not the newest a minute after healing",
    );
}
