//! The container image and the compose ring, on a real Docker engine:
//! `scripts/image.sh` builds an image FROM scratch, `docker-compose.yml`
//! starts five processes that find each other by service name and report
//! healthy through the gRPC health protocol, and a node stopped and
//! started again comes back with its data. Skipped, saying so, where no
//! Docker engine answers.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SERVICES: [&str; 5] = ["bootstrap", "node-1", "node-2", "node-3", "node-4"];

const DOCKER: &str = "a running Docker engine (`docker info`) and docker-compose";
const INSTALL_DOCKER: &str =
    "install docker.io and docker-compose (Debian) and start the engine (systemctl start docker)";

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

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new("docker-compose");
        command
            .current_dir(&self.dir)
            .args(["-p", &self.project])
            .args(args)
            .env("CHORDAL_IMAGE", &self.image)
            .env("CHORDAL_ANTI_ENTROPY_INTERVAL", self.anti_entropy);
        // Host port 0: Docker picks a free one (asked back with `port`),
        // so two tests can never be handed the same.
        for name in ["BOOTSTRAP", "NODE_1", "NODE_2", "NODE_3", "NODE_4"] {
            command.env(format!("CHORDAL_PORT_{name}"), "0");
            command.env(format!("CHORDAL_ADMIN_PORT_{name}"), "0");
        }
        command.output().unwrap()
    }

    /// Where on the host `service`'s container port is published now (a
    /// restarted container may get another host port).
    fn published(&self, service: usize, port: u16) -> String {
        let output = self.run(&["port", SERVICES[service], &port.to_string()]);
        let addr = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            output.status.success() && addr.starts_with("127.0.0.1:"),
            "{} publishes no port {port}: {output:?}",
            SERVICES[service]
        );
        addr
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

    /// `chordal ring --summary` run inside the network, in `service`.
    fn ring_summary(&self, service: &str) -> String {
        let output = self.run(&[
            "exec",
            "-T",
            service,
            "/chordal",
            "ring",
            "--via",
            "bootstrap:10001",
            "--summary",
        ]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Waits until the ring seen from `service` is the whole ring: every
    /// member of the five processes, closed and ordered.
    fn wait_whole(&self, service: &str) {
        let deadline = Instant::now() + SETTLE;
        while !self
            .ring_summary(service)
            .contains("20 members on 5 processes, closed and ordered")
        {
            assert!(Instant::now() < deadline, "{}", self.ring_summary(service));
            std::thread::sleep(Duration::from_millis(500));
        }
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
    let dir = tempfile::tempdir().unwrap();
    // Anti-entropy only on demand: nothing but node-2's own volume can give
    // it its records back after the restart below.
    let compose = Compose::new(dir.path(), "0s");

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

    let up = compose.run(&["up", "-d"]);
    assert!(up.status.success(), "{up:?}");
    compose.wait_healthy();
    compose.wait_whole("node-1");

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
    let held_by_node_2 = || {
        rt.block_on(async {
            let mut conn = chordal::rpc::ApiClient::connect(&compose.addr(2), SETTLE)
                .await
                .unwrap();
            let mut held = Vec::new();
            for key in &keys {
                if conn.get(key.as_bytes(), true).await.is_ok() {
                    held.push(key.clone());
                }
            }
            held
        })
    };
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

/// Writes keys through `addrs` until `stop`, keeping those acknowledged.
fn writer(
    rt: &tokio::runtime::Runtime,
    addrs: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    prefix: &'static str,
) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let mut conns = Vec::new();
        for addr in &addrs {
            conns.push(
                chordal::rpc::ApiClient::connect(addr, Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
        }
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let key = format!("{prefix}-{i}");
            let conn = &mut conns[i as usize % addrs.len()];
            if conn
                .put(key.as_bytes(), key.as_bytes().to_vec(), Duration::ZERO)
                .await
                .is_ok()
            {
                acked.lock().unwrap().push(key);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Every key in `acked` reads back through `addr`, retried while the ring
/// settles.
fn all_readable(rt: &tokio::runtime::Runtime, addr: &str, acked: &[String]) {
    rt.block_on(async {
        let deadline = Instant::now() + SETTLE;
        let mut conn = chordal::rpc::ApiClient::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        for key in acked {
            let mut got = conn.get(key.as_bytes(), false).await;
            while got.is_err() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                got = conn.get(key.as_bytes(), false).await;
            }
            assert_eq!(got.unwrap().value, key.as_bytes(), "{key}");
        }
    });
}

#[test]
fn fault_drills_lose_no_acknowledged_write_and_leave_one_ring() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    if !prerequisite(docker_engine(), DOCKER, INSTALL_DOCKER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let compose = Compose::new(dir.path(), "60s");
    assert!(compose.run(&["up", "-d"]).status.success());
    compose.wait_healthy();
    compose.wait_whole("bootstrap");
    let rt = runtime();
    // Writes go through bootstrap and node-4, which every drill spares.
    let through = vec![compose.addr(0), compose.addr(4)];
    let drills: [(&str, &[&[&str]], &str); 3] = [
        (
            "kill",
            &[&["kill", "node-3"], &["start", "node-3"]],
            "bootstrap",
        ),
        (
            "restart",
            &[&["stop", "node-2"], &["start", "node-2"]],
            "bootstrap",
        ),
        ("disconnect", &[], "bootstrap"),
    ];
    for (name, steps, exec_in) in drills {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writing = writer(&rt, through.clone(), stop.clone(), acked.clone(), name);
        std::thread::sleep(Duration::from_secs(1));
        if name == "disconnect" {
            // node-1 cut off from the ring's network, then back.
            let network = format!("{}_ring", compose.project);
            let container = compose.container("node-1");
            let cut = Command::new("docker")
                .args(["network", "disconnect", &network, &container])
                .output()
                .unwrap();
            assert!(cut.status.success(), "{cut:?}");
            std::thread::sleep(Duration::from_secs(4));
            let healed = Command::new("docker")
                .args([
                    "network", "connect", "--alias", "node-1", &network, &container,
                ])
                .output()
                .unwrap();
            assert!(healed.status.success(), "{healed:?}");
        } else {
            for step in steps {
                let output = compose.run(step);
                assert!(output.status.success(), "{name}: {output:?}");
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
        rt.block_on(writing).unwrap();
        compose.wait_healthy();
        compose.wait_whole(exec_in);
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() > 100,
            "{name}: only {} writes acknowledged",
            acked.len()
        );
        all_readable(&rt, &compose.addr(1), &acked);
        eprintln!(
            "drill {name}: {} acknowledged writes, all readable",
            acked.len()
        );
    }
}
