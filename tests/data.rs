//! The key-value store on real processes: keys written through any node stay
//! readable while nodes join and leave, survive restarts, and every bad
//! request gets the status it deserves.

mod common;

use chordal::rpc::ApiClient;
use chordal::Error;
use common::*;
use rand::seq::IndexedRandom;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn connect_all(nodes: &[&Node]) -> Vec<ApiClient> {
    let mut conns = Vec::new();
    for node in nodes {
        conns.push(ApiClient::connect(&node.addr, TIMEOUT).await.unwrap());
    }
    conns
}

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

fn value(i: usize) -> Vec<u8> {
    format!("value of {i} ").repeat(1 + i % 7).into_bytes()
}

/// Runs `count` operations with `width` in flight; `op(i)` is the i-th.
async fn run_all<F, Fut>(count: usize, width: usize, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..width {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return;
                }
                op(i).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
}

/// Every key through every connection: the value written; and, asked the
/// first time round, the owner named by the answer holds it in its own
/// store.
async fn check_every_key(conns: &[ApiClient], keys: usize) {
    let owners = Arc::new(Mutex::new(HashMap::<String, ApiClient>::new()));
    for (round, conn) in conns.iter().enumerate() {
        let conn = conn.clone();
        let owners = owners.clone();
        run_all(keys, 16, move |i| {
            let (mut conn, owners) = (conn.clone(), owners.clone());
            async move {
                let got = conn
                    .get(key(i).as_bytes(), false)
                    .await
                    .unwrap_or_else(|e| panic!("{} unreadable: {e}", key(i)));
                assert_eq!(got.value, value(i), "{}", key(i));
                if round > 0 {
                    return;
                }
                let owner = got.owner.expect("a routed read names its owner").addr;
                let cached = owners.lock().unwrap().get(&owner).cloned();
                let mut at_owner = match cached {
                    Some(conn) => conn,
                    None => {
                        let conn = ApiClient::connect(&owner, TIMEOUT).await.unwrap();
                        owners.lock().unwrap().insert(owner.clone(), conn.clone());
                        conn
                    }
                };
                let local = at_owner
                    .get(key(i).as_bytes(), true)
                    .await
                    .unwrap_or_else(|e| panic!("{} not stored at its owner {owner}: {e}", key(i)));
                assert_eq!(local.value, value(i));
            }
        })
        .await;
    }
}

#[test]
fn every_key_stays_readable_while_two_nodes_join_and_one_leaves() {
    const KEYS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut nodes = start_ring(dir.path(), 5, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);

    // 10,000 keys, each written through a node picked at random.
    let conns = rt.block_on(connect_all(&nodes.iter().collect::<Vec<_>>()));
    let writers = conns.clone();
    rt.block_on(run_all(KEYS, 32, move |i| {
        let mut conn = writers.choose(&mut rand::rng()).unwrap().clone();
        async move {
            conn.put(key(i).as_bytes(), value(i), Duration::ZERO)
                .await
                .unwrap_or_else(|e| panic!("put {}: {e}", key(i)));
        }
    }));

    // A reader checks every key, again and again, through the first node.
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, passes, failures) = (stop.clone(), passes.clone(), failures.clone());
        let conn = conns[0].clone();
        rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (conn, failures) = (conn.clone(), failures.clone());
                run_all(KEYS, 16, move |i| {
                    let (mut conn, failures) = (conn.clone(), failures.clone());
                    async move {
                        let problem = match conn.get(key(i).as_bytes(), false).await {
                            Ok(got) if got.value == value(i) => return,
                            Ok(got) => format!("{}: wrong value {:?}", key(i), got.value),
                            Err(e) => format!("{}: {e}", key(i)),
                        };
                        failures.lock().unwrap().push(problem);
                    }
                })
                .await;
                passes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let wait_for_pass = || {
        let target = passes.load(Ordering::SeqCst) + 1;
        let deadline = Instant::now() + SETTLE;
        while passes.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "the reader finished no pass of {KEYS} keys within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for_pass();

    // Two nodes join ...
    let bootstrap = nodes[0].addr.clone();
    for joiner in 0..2 {
        let data_dir = dir.path().join(format!("joiner-{joiner}"));
        nodes.push(Node::join(&bootstrap, &data_dir, 2, &[]));
    }
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    wait_for_pass();
    // ... and one of the first five leaves.
    let mut leaver = nodes.remove(2);
    assert!(leaver.terminate().success(), "{}", tail(&leaver.log()));
    assert!(
        leaver.log().contains("handed the arc over"),
        "{}",
        tail(&leaver.log())
    );
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    wait_for_pass();
    wait_for_pass();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(reader).unwrap();

    let failures = failures.lock().unwrap();
    if !failures.is_empty() {
        let logs: Vec<String> = nodes
            .iter()
            .chain([&leaver])
            .map(|n| format!("--- {}\n{}", n.addr, data_events(&n.log())))
            .collect();
        panic!(
            "{} failed reads in {} passes, first: {:?}\n{}",
            failures.len(),
            passes.load(Ordering::SeqCst),
            &failures[..failures.len().min(10)],
            logs.join("\n")
        );
    }
    let joined: Vec<&Node> = nodes.iter().collect();
    for node in &joined[5..] {
        assert!(
            node.log().contains("took over the arc"),
            "{}",
            tail(&node.log())
        );
    }
    let conns = rt.block_on(connect_all(&joined));
    rt.block_on(check_every_key(&conns, KEYS));
}

/// The lines of a node's log about hand-offs, joins and warnings.
fn data_events(log: &str) -> String {
    log.lines()
        .filter(|l| {
            ["hand", "took over", "joined", "WARN", "ERROR", "leaving"]
                .iter()
                .any(|word| l.contains(word))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_node_restarted_on_its_data_directory_comes_back_with_its_data() {
    const KEYS: usize = 600;
    // One copy of each key: nothing but its own disk can give a restarted
    // node its keys back (with replicas, anti-entropy would refill it).
    const ONE_COPY: &[&str] = &[
        "--replicas",
        "1",
        "--write-quorum",
        "1",
        "--read-quorum",
        "1",
    ];
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut nodes = start_nodes(dir.path(), 3, None, 2, ONE_COPY);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let conns = rt.block_on(connect_all(&nodes.iter().collect::<Vec<_>>()));
    let writer = conns[0].clone();
    rt.block_on(run_all(KEYS, 16, move |i| {
        let mut conn = writer.clone();
        async move {
            conn.put(key(i).as_bytes(), value(i), Duration::ZERO)
                .await
                .unwrap();
        }
    }));
    // The keys the second node owns live in its own store.
    let victim_addr = nodes[1].addr.clone();
    let mut owned = Vec::new();
    let mut reader = conns[0].clone();
    rt.block_on(async {
        for i in 0..KEYS {
            let got = reader.get(key(i).as_bytes(), false).await.unwrap();
            if got.owner.unwrap().addr == victim_addr {
                owned.push(i);
            }
        }
    });
    assert!(!owned.is_empty(), "the second node owns no key");

    let (port, data_dir) = (nodes[1].port, nodes[1].data_dir.clone());
    nodes[1].kill_9();
    let survivors: Vec<&Node> = vec![&nodes[0], &nodes[2]];
    wait_for_ring(&survivors, 2);
    nodes[1] = Node::start_with(port, &nodes[0].addr.clone(), &data_dir, 2, ONE_COPY);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);

    let conns = rt.block_on(connect_all(&nodes.iter().collect::<Vec<_>>()));
    let mut restarted = conns[1].clone();
    rt.block_on(async {
        for &i in &owned {
            let local = restarted.get(key(i).as_bytes(), true).await;
            assert_eq!(local.unwrap().value, value(i), "{} lost on restart", key(i));
        }
    });
    rt.block_on(check_every_key(&conns, KEYS));
}

fn stderr_of(args: &[&str]) -> (bool, String) {
    let output = chordal(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_requests_get_clear_errors_and_the_cli_round_trips_values() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_new_ring(&dir.path().join("solo"), 1, &["--max-value-size", "1000"]);
    let addr = node.addr.clone();
    wait_for_ring(&[&node], 1);
    let via = ["--via", addr.as_str()];

    // A value round-trips through the CLI, from an argument and from a file.
    let (ok, stderr) = stderr_of(&[&["put", "greeting", "hello"][..], &via].concat());
    assert!(ok, "{stderr}");
    let output = chordal(&[&["get", "greeting"][..], &via].concat());
    assert_eq!(output.stdout, b"hello");
    let file = dir.path().join("value.bin");
    let bytes: Vec<u8> = (0..=255).collect();
    std::fs::write(&file, &bytes).unwrap();
    let file_arg = file.to_str().unwrap();
    let (ok, stderr) = stderr_of(&[&["put", "binary", "--file", file_arg][..], &via].concat());
    assert!(ok, "{stderr}");
    assert_eq!(
        chordal(&[&["get", "binary"][..], &via].concat()).stdout,
        bytes
    );
    // And piped on stdin, with no value argument.
    let mut put = std::process::Command::new(CHORDAL)
        .args([&["put", "piped"][..], &via].concat())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        put.stdin.take().unwrap().write_all(b"from a pipe").unwrap();
    }
    let put = put.wait_with_output().unwrap();
    assert!(put.status.success(), "{put:?}");
    // `--meta` adds the owner and version on stderr; `--r 1` asks the
    // owner alone.
    let output = chordal(&[&["get", "piped", "--meta", "--r", "1"][..], &via].concat());
    let meta = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.stdout, b"from a pipe", "{meta}");
    assert!(meta.contains("owner    ") && meta.contains(&addr), "{meta}");
    assert!(meta.contains("version  clock 0x"), "{meta}");

    // Missing keys: NOT_FOUND, said plainly.
    let (ok, stderr) = stderr_of(&[&["get", "nobody"][..], &via].concat());
    assert!(!ok);
    assert!(stderr.contains("not found"), "{stderr}");
    let (ok, stderr) = stderr_of(&[&["delete", "greeting"][..], &via].concat());
    assert!(ok && stderr.contains("deleted"), "{stderr}");
    let (ok, stderr) = stderr_of(&[&["get", "greeting"][..], &via].concat());
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    // Empty key, oversized key, oversized value: INVALID_ARGUMENT.
    let long_key = "k".repeat(1025);
    let big_value = "v".repeat(1001);
    let huge_value = "v".repeat(100_000);
    for (args, expected) in [
        (vec!["put", "", "v"], "the key is empty"),
        (vec!["put", &long_key, "v"], "the limit is 1024"),
        (vec!["get", &long_key], "the limit is 1024"),
        (vec!["put", "k", &big_value], "the limit is 1000"),
        (vec!["put", "k", &huge_value], "invalid argument"),
    ] {
        let (ok, stderr) = stderr_of(&[&args[..], &via].concat());
        assert!(!ok, "{args:?} accepted");
        assert!(stderr.contains("invalid argument"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }

    // Expiry: gone after its time to live.
    let (ok, stderr) = stderr_of(&[&["put", "brief", "x", "--ttl", "300ms"][..], &via].concat());
    assert!(ok, "{stderr}");
    std::thread::sleep(Duration::from_millis(600));
    let (ok, stderr) = stderr_of(&[&["get", "brief"][..], &via].concat());
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    // The same errors reach a library client as typed errors.
    let rt = runtime();
    rt.block_on(async {
        let mut conn = ApiClient::connect(&addr, TIMEOUT).await.unwrap();
        assert!(matches!(
            conn.get(b"nobody", false).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            conn.put(b"", vec![], Duration::ZERO).await,
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn a_node_outside_any_ring_answers_unavailable_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::join(NOWHERE, &dir.path().join("lonely"), 1, &[]);
    let addr = node.addr.clone();
    let rt = runtime();
    let error = rt.block_on(async {
        let deadline = Instant::now() + SETTLE;
        let mut conn = loop {
            match ApiClient::connect(&addr, TIMEOUT).await {
                Ok(conn) => break conn,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(error) => panic!("{addr} never took a connection: {error}"),
            }
        };
        conn.put(b"k", b"v".to_vec(), Duration::ZERO)
            .await
            .unwrap_err()
    });
    let Error::Unavailable(reason) = error else {
        panic!("not UNAVAILABLE: {error}");
    };
    assert!(reason.contains("could not be reached"), "{reason}");
    assert!(reason.contains("lookup"), "{reason}");
}
