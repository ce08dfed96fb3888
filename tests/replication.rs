//! Replication on real processes: no acknowledged write is lost while
//! replicas are killed and restarted, a replica wiped clean is rebuilt by
//! anti-entropy, and quorums are reported as they are.

mod common;

use chordal::rpc::ApiClient;
use chordal::Error;
use common::*;
use rand::seq::IndexedRandom;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

fn key(i: u64) -> String {
    format!("key-{i:06}")
}

fn value(i: u64) -> Vec<u8> {
    format!("value {i} ")
        .repeat(1 + (i % 5) as usize)
        .into_bytes()
}

async fn connect(addr: &str) -> ApiClient {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match ApiClient::connect(addr, TIMEOUT).await {
            Ok(conn) => return conn,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads every key through `via`: the value each was last acknowledged
/// with. Retries a key a few times: right after a membership change the
/// owner may be moving.
async fn check_acknowledged(via: &str, acked: &BTreeMap<u64, Vec<u8>>) {
    let mut conn = connect(via).await;
    let mut failures = Vec::new();
    for (i, expected) in acked {
        let mut outcome = conn.get(key(*i).as_bytes(), false).await;
        for _ in 0..5 {
            if matches!(outcome, Err(Error::Unavailable(_))) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                outcome = conn.get(key(*i).as_bytes(), false).await;
            }
        }
        match outcome {
            Ok(got) if got.value == *expected => {}
            Ok(got) => failures.push(format!("{}: wrong value {:?}", key(*i), got.value)),
            Err(e) => failures.push(format!("{}: {e}", key(*i))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} acknowledged keys wrong or lost, first: {:?}",
        failures.len(),
        acked.len(),
        &failures[..failures.len().min(10)]
    );
}

/// Waits until `done()` holds, or panics with `what` after a minute.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

const FAST: &[&str] = &["--anti-entropy-interval", "3s"];

#[test]
fn no_acknowledged_write_is_lost_while_a_replica_is_killed_and_another_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut nodes = start_nodes(dir.path(), 5, None, 2, FAST);
    let bootstrap = nodes[0].addr.clone();
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);

    // A writer puts new keys through the nodes that stay up, and keeps
    // what was acknowledged (W = 2 by default).
    let acked = Arc::new(Mutex::new(BTreeMap::<u64, Vec<u8>>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let via: Vec<String> = [0, 1, 4].iter().map(|&n| nodes[n].addr.clone()).collect();
    let writer = {
        let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
        rt.spawn(async move {
            let mut conns = Vec::new();
            for addr in &via {
                conns.push(connect(addr).await);
            }
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut conn = conns.choose(&mut rand::rng()).unwrap().clone();
                match conn.put(key(i).as_bytes(), value(i), Duration::ZERO).await {
                    Ok(written) => {
                        assert!(
                            written.acks >= 2,
                            "{} acknowledged by {}",
                            key(i),
                            written.acks
                        );
                        acked.lock().unwrap().insert(i, value(i));
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                i += 1;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    wait_until("500 acknowledged writes", || acked_count() >= 500);

    // A replica dies without a word.
    nodes[2].kill_9();
    let before = acked_count();
    wait_until("500 more writes after the kill", || {
        acked_count() >= before + 500
    });
    // Another is killed and restarted on its data directory.
    let (port, data_dir) = (nodes[3].port, nodes[3].data_dir.clone());
    nodes[3].kill_9();
    let before = acked_count();
    wait_until("300 writes while it is down", || {
        acked_count() >= before + 300
    });
    nodes[3] = Node::start_with(port, &bootstrap, &data_dir, 2, FAST);
    let before = acked_count();
    wait_until("500 writes after the restart", || {
        acked_count() >= before + 500
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).unwrap();

    let survivors: Vec<&Node> = [0, 1, 3, 4].iter().map(|&n| &nodes[n]).collect();
    let view = wait_for_ring(&survivors, 2);
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged, {} refused",
        acked.len(),
        refused.load(Ordering::SeqCst)
    );
    // With the killed process still down, and before any read could
    // repair them, anti-entropy and hints put every key back on N = 3 of
    // the living: the holders the ring of four names.
    let expected: BTreeMap<String, Vec<u8>> = acked
        .iter()
        .map(|(i, value)| (key(*i), value.clone()))
        .collect();
    wait_for_fresh_copies(
        &rt,
        &view,
        &expected,
        |holder| Some(holder.to_string()),
        "missing on the living a minute after the ring settled",
    );
    for node in &survivors {
        rt.block_on(check_acknowledged(&node.addr, &acked));
    }
}

/// Keys held in a node's own store with the value they were written with, among `keys`.
async fn held_with_values(addr: &str, keys: &[u64]) -> Vec<u64> {
    let mut conn = connect(addr).await;
    let mut held = Vec::new();
    for &i in keys {
        if let Ok(got) = conn.get(key(i).as_bytes(), true).await {
            if got.value == value(i) {
                held.push(i);
            }
        }
    }
    held
}

#[test]
fn a_replica_wiped_clean_is_rebuilt_and_repair_reports_what_it_moved() {
    const KEYS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    // Three processes keep three copies: each holds every key.
    let mut nodes = start_ring(dir.path(), 3, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    rt.block_on(async {
        let mut conn = connect(&nodes[0].addr).await;
        for i in 0..KEYS {
            let written = conn
                .put(key(i).as_bytes(), value(i), Duration::ZERO)
                .await
                .unwrap();
            assert!(written.acks >= 2);
        }
    });
    let all: Vec<u64> = (0..KEYS).collect();
    // Writes wait for two copies; the third arrives in the background.
    wait_until("every key on every node", || {
        nodes
            .iter()
            .all(|n| rt.block_on(held_with_values(&n.addr, &all)).len() == KEYS as usize)
    });

    // The third node loses its database, keeping its identity.
    let (port, data_dir) = (nodes[2].port, nodes[2].data_dir.clone());
    nodes[2].kill_9();
    std::fs::remove_dir_all(data_dir.join("db")).unwrap();
    nodes[2] = Node::start(port, &nodes[0].addr.clone(), &data_dir, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    wait_until("the wiped node holds every key again", || {
        rt.block_on(held_with_values(&nodes[2].addr, &all)).len() == KEYS as usize
    });
    // Moved by anti-entropy: the others' rounds pushing, or the restarted
    // node's catch-up receiving (whichever ran first).
    let log: String = nodes.iter().map(|n| n.log()).collect();
    assert!(
        log.lines().any(|line| line.contains("anti-entropy")
            && (line.contains("records pushed") || line.contains("records received"))),
        "anti-entropy moved records: {}",
        tail(&log)
    );

    // Now everything agrees: a repair finds nothing to move.
    let output = chordal(&["repair", "--via", &nodes[1].addr]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.contains("0 failed; 0 records sent to replicas, 0 received"),
        "{stdout}"
    );
}

#[test]
fn quorums_beyond_the_live_replicas_are_refused_with_how_many_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_ring(dir.path(), 3, 1);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    let via = nodes[0].addr.clone();
    let stderr_of = |args: &[&str]| {
        let output = chordal(args);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // All three up: W=3 is met (once the successor lists, not just the
    // walk, name all three: until then the owner may see a smaller ring
    // and rightly answer "2 of W=3"), and more than N is refused outright.
    let put_w3 = || stderr_of(&["put", "k", "v", "--w", "3", "--via", &via]);
    let deadline = std::time::Instant::now() + SETTLE;
    let (mut ok, mut stderr) = put_w3();
    while !ok && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (ok, stderr) = put_w3();
    }
    assert!(ok && stderr.contains("3 copies acknowledged"), "{stderr}");
    let (ok, stderr) = stderr_of(&["put", "k", "v", "--w", "4", "--via", &via]);
    assert!(!ok && stderr.contains("invalid argument"), "{stderr}");
    let (ok, stderr) = stderr_of(&["get", "k", "--r", "3", "--via", &via]);
    assert!(ok, "{stderr}");

    // Kill one: W=3 cannot be met, whether the ring still names the dead
    // process (it does not answer) or has dropped it (two are left).
    nodes[2].kill_9();
    let (ok, stderr) = stderr_of(&["put", "k", "v2", "--w", "3", "--via", &via]);
    assert!(!ok, "W=3 with a replica dead: {stderr}");
    assert!(
        stderr.contains("unavailable") && stderr.contains("of W=3"),
        "{stderr}"
    );
    // W=2 and R=2 still work with one of three down.
    let (ok, stderr) = stderr_of(&["put", "k", "v3", "--via", &via]);
    assert!(ok, "{stderr}");
    let output = chordal(&["get", "k", "--via", &via]);
    assert_eq!(output.stdout, b"v3");
    // R=3 cannot be met either, and the answer says how many answered.
    let (ok, stderr) = stderr_of(&["get", "k", "--r", "3", "--via", &via]);
    assert!(!ok, "R=3 with a replica dead: {stderr}");
    assert!(
        stderr.contains("unavailable") && stderr.contains("of R=3 answers"),
        "{stderr}"
    );
}

#[test]
fn copies_left_beyond_n_by_joins_are_handed_back_and_dropped() {
    const KEYS: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let flags = ["--replicas", "2", "--anti-entropy-interval", "2s"];
    let mut nodes = start_nodes(dir.path(), 3, None, 2, &flags);
    let bootstrap = nodes[0].addr.clone();
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    rt.block_on(async {
        let mut conn = connect(&bootstrap).await;
        for i in 0..KEYS {
            conn.put(key(i).as_bytes(), value(i), Duration::ZERO)
                .await
                .unwrap();
        }
    });
    // Two more processes take over parts of the arcs: the copies the old
    // replicas kept of those parts are now one too many.
    nodes.extend(start_nodes(dir.path(), 2, Some(&bootstrap), 2, &flags));
    let view = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let all: Vec<u64> = (0..KEYS).collect();
    let mut misplaced = usize::MAX;
    wait_until("every key on exactly its two replicas", || {
        let mut held: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for node in &nodes {
            for i in rt.block_on(held_with_values(&node.addr, &all)) {
                held.entry(i).or_default().push(node.addr.clone());
            }
        }
        misplaced = all
            .iter()
            .filter(|i| {
                let mut expected = holders(&view, key(**i).as_bytes(), 2);
                expected.sort();
                let mut actual = held.get(i).cloned().unwrap_or_default();
                actual.sort();
                actual != expected
            })
            .count();
        misplaced == 0
    });
    let log: String = nodes.iter().map(|n| n.log()).collect();
    assert!(
        log.contains("copies held beyond the 2 replicas"),
        "{}",
        tail(&log)
    );
    let acked: BTreeMap<u64, Vec<u8>> = all.iter().map(|&i| (i, value(i))).collect();
    rt.block_on(check_acknowledged(&nodes[4].addr, &acked));
}

#[test]
fn tombstones_are_purged_on_every_replica_after_the_grace_and_deletes_stay() {
    const KEYS: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let flags = ["--anti-entropy-interval", "2s", "--tombstone-grace", "6s"];
    let nodes = start_nodes(dir.path(), 3, None, 2, &flags);
    let bootstrap = nodes[0].addr.clone();
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    rt.block_on(async {
        let mut conn = connect(&bootstrap).await;
        for i in 0..KEYS {
            conn.put(key(i).as_bytes(), value(i), Duration::ZERO)
                .await
                .unwrap();
        }
        for i in 0..KEYS / 2 {
            assert!(conn.delete(key(i).as_bytes()).await.unwrap().existed);
        }
    });
    // Every process holds every key (three processes, three copies):
    // the tombstones first, then, once their grace is over and every
    // replica holds them, nothing but the live half.
    let records = |node: &Node| {
        rt.block_on(async { connect(&node.addr).await.describe().await.unwrap().records })
    };
    wait_until(
        "every process holds the 50 values and 50 tombstones",
        || nodes.iter().all(|n| records(n) == KEYS),
    );
    wait_until("every tombstone purged on every process", || {
        nodes.iter().all(|n| records(n) == KEYS / 2)
    });
    rt.block_on(async {
        for node in &nodes {
            let mut conn = connect(&node.addr).await;
            for i in 0..KEYS {
                let got = conn.get(key(i).as_bytes(), false).await;
                if i < KEYS / 2 {
                    assert!(
                        matches!(got, Err(Error::NotFound(_))),
                        "{}: {got:?}",
                        key(i)
                    );
                } else {
                    assert_eq!(got.unwrap().value, value(i));
                }
            }
        }
    });
}

/// REPLICATION.md's read rules on real processes, with anti-entropy only
/// on demand so that nothing but a read can move a record: a read asks
/// only as many *caught-up* replicas as its quorum needs (a process that
/// joined since the last round is not asked), a read whose quorum needs
/// more asks every replica, and read repair sends the newest record to
/// the replica that answered without it.
#[test]
fn reads_ask_only_caught_up_replicas_and_repair_the_ones_they_find_behind() {
    const PER_ARC: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let no_rounds = ["--anti-entropy-interval", "0s", "--admin-port", "0"];
    let mut nodes = start_nodes(dir.path(), 2, None, 1, &no_rounds);
    let two = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);

    // PER_ARC keys in each of the two processes' arcs, whatever their
    // sizes: one of the two arcs is untouched by the third process's join
    // below, and its keys are the ones read.
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        if by_owner.len() == 2 && by_owner.values().all(|keys| keys.len() == PER_ARC) {
            break;
        }
        let key = format!("read-{i}");
        let owner = holders(&two, key.as_bytes(), 2).remove(0);
        let keys = by_owner.entry(owner).or_default();
        if keys.len() < PER_ARC {
            keys.push(key);
        }
    }
    rt.block_on(async {
        let mut conn = connect(&nodes[0].addr).await;
        for key in by_owner.values().flatten() {
            let written = conn
                .put(key.as_bytes(), key.as_bytes().to_vec(), Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(written.acks, 2, "{key}");
        }
        // A round of each arc with the other process: each is caught up
        // with the other's arc.
        for node in &nodes {
            let reports = connect(&node.addr).await.repair().await.unwrap();
            assert!(!reports.is_empty(), "{}: no round", node.addr);
            for report in reports {
                assert_eq!(report.error, None, "{}: {report:?}", node.addr);
            }
        }
    });

    // A third process joins between `owner` and the other one: `owner`'s
    // arc is as it was, and its replicas are now the newcomer (no round
    // with it yet, none of the keys) and the other process (caught up).
    let newcomer = start_nodes(dir.path(), 1, Some(&nodes[0].addr), 1, &no_rounds).remove(0);
    nodes.push(newcomer);
    let three = wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 1);
    let newcomer = nodes[2].addr.clone();
    let at = three
        .members
        .iter()
        .position(|(_, addr)| *addr == newcomer)
        .unwrap();
    let owner = three.members[(at + 2) % 3].1.clone();
    let other = three.members[(at + 1) % 3].1.clone();
    let keys = &by_owner[&owner];
    for key in keys {
        assert_eq!(
            holders(&three, key.as_bytes(), 3),
            [owner.clone(), newcomer.clone(), other.clone()],
            "{key}"
        );
    }
    let held_by_newcomer = |keys: &[String]| held_locally(&rt, &newcomer, keys);
    assert_eq!(held_by_newcomer(keys), Vec::<String>::new());

    // Half read with the default R=2, half with R=3, all through the owner.
    let (by_two, by_three) = keys.split_at(PER_ARC / 2);
    rt.block_on(async {
        let mut conn = connect(&owner).await;
        for (keys, quorum) in [(by_two, 0), (by_three, 3)] {
            for key in keys {
                let got = conn
                    .get_with_quorum(key.as_bytes(), false, quorum)
                    .await
                    .unwrap_or_else(|e| panic!("{key} with R={quorum}: {e}"));
                assert_eq!(got.value, key.as_bytes(), "{key}");
            }
        }
    });
    // R=3 needed the newcomer's answer, which lacked the key: read repair
    // gave it the record.
    wait_until("read repair of every key read with R=3", || {
        held_by_newcomer(by_three) == by_three
    });
    // R=2 was met by the caught-up replica alone: the newcomer was never
    // asked, so none of those keys reached it, and it answered exactly
    // the R=3 reads.
    assert_eq!(held_by_newcomer(by_two), Vec::<String>::new());
    let page = http_get(&nodes[2].admin_addr(), "/metrics").unwrap();
    let reads = |code: &str| {
        metric(
            &page,
            &format!("chordal_requests_total{{method=\"Data/Read\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(reads("OK"), Some(by_three.len() as f64), "{page}");
}
