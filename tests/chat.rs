//! Chat on real processes: two clients exchange messages both ways
//! through a five-node ring, the room's owner is killed mid-conversation
//! and the chat goes on, and no node's database holds the room's name or
//! a word of what was said.

mod common;

use chordal::room::Room;
use chordal::store::{Engine, RocksEngine};
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOM: &str = "the-secret-garden";

/// A `chordal chat --print` client: lines written to its stdin are sent,
/// the messages it prints are collected.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn start(nick: &str, via: &[&str]) -> Client {
        let mut command = Command::new(CHORDAL);
        command.args([
            "chat",
            "--room",
            ROOM,
            "--nick",
            nick,
            "--print",
            "--timeout",
            "2s",
        ]);
        for addr in via {
            command.args(["--via", addr]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chordal chat starts");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let lines = collect(Box::new(child.stdout.take().unwrap()));
        let errors = collect(Box::new(child.stderr.take().unwrap()));
        Client {
            stdin: child.stdin.take(),
            child,
            lines,
            errors,
        }
    }

    fn say(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    /// The texts printed so far, `<nick> text`, without the time.
    fn texts(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                line.split_once("] ")
                    .map_or(line.clone(), |(_, t)| t.to_string())
            })
            .collect()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + SETTLE;
        while !self.texts().iter().any(|t| t == text) {
            assert!(
                Instant::now() < deadline,
                "never printed {text:?}; printed {:?}; stderr {:?}",
                self.texts(),
                self.errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn two_clients_chat_both_ways_through_the_owners_death_and_nodes_learn_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut nodes = start_ring(dir.path(), 5, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let owner = rt
        .block_on(chordal::chat::client::find_owner(
            &Room::new(ROOM, None),
            &addrs,
            Duration::from_secs(5),
            None,
        ))
        .unwrap();
    // Both clients enter through nodes other than the room's owner.
    let others: Vec<&str> = addrs
        .iter()
        .filter(|a| **a != owner)
        .map(String::as_str)
        .collect();
    let mut ada = Client::start("adalovelace", &others[..2]);
    let mut bob = Client::start("bobbytables", &others[2..]);

    ada.say("hello bob, the roses are blue");
    bob.wait_for("<adalovelace> hello bob, the roses are blue");
    bob.say("hello ada, the tulips are red");
    ada.wait_for("<bobbytables> hello ada, the tulips are red");

    // The room's owner dies mid-conversation: both clients find its new
    // owner (a former replica) and carry on, showing nothing twice.
    let at = nodes.iter().position(|n| n.addr == owner).unwrap();
    nodes[at].kill_9();
    for i in 0..5 {
        ada.say(&format!("after the fall, message {i}"));
    }
    bob.say("still here");
    for i in 0..5 {
        bob.wait_for(&format!("<adalovelace> after the fall, message {i}"));
    }
    ada.wait_for("<bobbytables> still here");
    // Each sender's messages show in the order sent, across the failover
    // too.
    for i in 0..10 {
        ada.say(&format!("in order {i}"));
    }
    bob.wait_for("<adalovelace> in order 9");
    for client in [&ada, &bob] {
        let texts = client.texts();
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len(), "shown twice: {texts:?}");
        for (what, count) in [("after the fall, message", 5), ("in order", 10)] {
            let shown: Vec<&String> = texts.iter().filter(|t| t.contains(what)).collect();
            let expected: Vec<String> = (0..count)
                .map(|i| format!("<adalovelace> {what} {i}"))
                .collect();
            assert_eq!(
                shown,
                expected.iter().collect::<Vec<_>>(),
                "stderr: {:?}",
                client.errors.lock().unwrap()
            );
        }
    }
    assert!(
        bob.errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("finding its new owner")),
        "the client noticed the owner's death: {:?}",
        bob.errors.lock().unwrap()
    );
    drop(ada);
    drop(bob);

    // Every node's database, read record by record and byte by byte: no
    // room name, no nickname, no word of any message.
    for node in &mut nodes {
        if node.is_running() {
            node.kill_9();
        }
    }
    let secrets: [&[u8]; 8] = [
        ROOM.as_bytes(),
        b"adalovelace",
        b"bobbytables",
        b"roses",
        b"tulips",
        b"after the fall",
        b"still here",
        b"in order",
    ];
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let mut records = 0;
    for node in &nodes {
        let db = node.data_dir.join("db");
        let engine = RocksEngine::open(&db).unwrap();
        for column in [engine.hints(), engine] {
            for (key, value) in column.scan(&[], None, usize::MAX).unwrap() {
                records += 1;
                for secret in secrets {
                    assert!(!contains(&key, secret) && !contains(&value, secret));
                }
            }
        }
        for file in std::fs::read_dir(&db).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for secret in secrets {
                assert!(!contains(&bytes, secret));
            }
        }
    }
    // Seventeen messages, each on two or three processes.
    assert!(records >= 34, "only {records} records found");
}

/// The log lines of requests that carry a message, naming who sent them.
fn carrying_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            [
                "put from",
                "write from",
                "copies from",
                "relay: an onion from",
            ]
            .iter()
            .any(|what| l.contains(what))
        })
        .collect()
}

#[test]
fn through_three_relays_only_the_first_sees_the_sender_and_none_the_words() {
    const SENDER: &str = "127.0.0.77";
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_ring(dir.path(), 5, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let reader = Client::start("reader", &[&nodes[1].addr]);
    let send = |args: &[&str], text: &str| {
        let mut child = Command::new(CHORDAL)
            .args(["chat", "--room", ROOM, "--nick", "carolinetheanon"])
            .args(["--bind", SENDER, "--via", &nodes[0].addr])
            .args(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{text}").unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    send(&[], "whispered through the onion");
    reader.wait_for("<carolinetheanon> whispered through the onion");

    let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
    let hops: Vec<&str> = logs
        .iter()
        .flat_map(|log| log.lines().filter(|l| l.contains("relay: an onion from")))
        .collect();
    assert_eq!(hops.len(), 3, "three relays, each once: {hops:#?}");
    assert_eq!(hops.iter().filter(|l| l.contains("delivered")).count(), 1);
    // The sender's address reached one process, the first relay, and
    // only as an onion; no write or copy anywhere came from it.
    let from_sender: Vec<&str> = logs
        .iter()
        .flat_map(|log| carrying_lines(log))
        .filter(|l| l.contains(&format!("from {SENDER}:")))
        .collect();
    assert_eq!(from_sender.len(), 1, "{from_sender:#?}");
    assert!(
        from_sender[0].contains("relay: an onion from") && from_sender[0].contains("passed on")
    );
    for log in &logs {
        for secret in [ROOM, "whispered", "carolinetheanon"] {
            assert!(!log.contains(secret), "a node logged {secret:?}");
        }
    }

    // The same check sees a direct send: the node it went to learns the
    // sender's address.
    send(&["--direct"], "said out loud");
    reader.wait_for("<carolinetheanon> said out loud");
    let direct = carrying_lines(&nodes[0].log())
        .into_iter()
        .filter(|l| l.contains(&format!("put from {SENDER}:")))
        .count();
    assert_eq!(direct, 1);
}

/// A tmux server of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = format!("chordal-test-{}-{n}", std::process::id());
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (scripts/install-deps.sh installs it)")
    }

    /// Starts `chordal chat` for `nick` in a 100×20 terminal.
    fn chat(&self, nick: &str, via: &str) {
        let command = format!("{CHORDAL} chat --room {ROOM} --nick {nick} --via {via}");
        let output = self.run(&[
            "new-session",
            "-d",
            "-s",
            nick,
            "-x",
            "100",
            "-y",
            "20",
            &command,
        ]);
        assert!(output.status.success(), "{output:?}");
    }

    fn screen(&self, nick: &str) -> Vec<String> {
        let output = self.run(&["capture-pane", "-p", "-t", nick]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    fn keys(&self, nick: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", nick];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    fn wait_for(&self, nick: &str, what: &str, shown: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let screen = self.screen(nick);
            if shown(&screen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{nick}'s screen never showed {what}:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn two_people_chat_on_the_terminal_screen_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_ring(dir.path(), 5, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let tmux = Tmux::new();
    tmux.chat("ada", &nodes[1].addr);
    tmux.chat("bob", &nodes[3].addr);
    for nick in ["ada", "bob"] {
        tmux.wait_for(nick, "the room's status line", |s| {
            s.iter()
                .any(|l| l.contains(&format!("in {ROOM} (watching at")))
        });
    }
    tmux.keys("ada", &["hello from ada", "Enter"]);
    tmux.wait_for("bob", "ada's message", |s| {
        s.iter().any(|l| l.ends_with("<ada> hello from ada"))
    });

    // Bob is half-way through a line when Ada's next message arrives: it
    // shows above, and his input line is untouched.
    tmux.keys("bob", &["typing slowly"]);
    tmux.wait_for("bob", "his own typing", |s| {
        s.last().is_some_and(|l| l == "> typing slowly")
    });
    tmux.keys("ada", &["interruption", "Enter"]);
    tmux.wait_for("bob", "the interruption above an intact input line", |s| {
        s.iter().any(|l| l.ends_with("<ada> interruption"))
            && s.last().is_some_and(|l| l == "> typing slowly")
    });
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for("ada", "bob's message", |s| {
        s.iter().any(|l| l.ends_with("<bob> typing slowly"))
    });

    tmux.keys("ada", &["/who", "Enter"]);
    tmux.wait_for("ada", "who said something", |s| {
        s.iter()
            .any(|l| l.contains("in the last 15 minutes: ada, bob"))
    });
    tmux.keys("bob", &["/nick robert", "Enter"]);
    tmux.keys("bob", &["renamed", "Enter"]);
    tmux.wait_for("ada", "the new nickname", |s| {
        s.iter().any(|l| l.ends_with("<robert> renamed"))
    });
    tmux.keys("ada", &["/quit", "Enter"]);
    let deadline = Instant::now() + SETTLE;
    while tmux.run(&["has-session", "-t", "ada"]).status.success() {
        assert!(Instant::now() < deadline, "/quit did not end the chat");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_circuit_whose_relay_dies_is_rebuilt_and_messages_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_ring(dir.path(), 5, 2);
    wait_for_ring(&nodes.iter().collect::<Vec<_>>(), 2);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let via: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let reader = Client::start("reader", &via);
    let mut writer = Client::start("writer", &via);
    let circuits = |client: &Client| -> Vec<Vec<String>> {
        client
            .errors
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("chat: sending through relays "))
            .map(|relays| relays.split(" -> ").map(str::to_string).collect())
            .collect()
    };
    writer.say("before the relay died");
    reader.wait_for("<writer> before the relay died");
    let first = circuits(&writer);
    assert_eq!(first.len(), 1, "{:?}", writer.errors.lock().unwrap());
    assert_eq!(first[0].len(), 3);
    // The middle relay dies; the next message needs a new circuit.
    let middle = nodes.iter().position(|n| n.addr == first[0][1]).unwrap();
    nodes[middle].kill_9();
    writer.say("after the relay died");
    reader.wait_for("<writer> after the relay died");
    let all = circuits(&writer);
    assert_eq!(all.len(), 2, "rebuilt once: {all:?}");
    assert!(!all[1].contains(&first[0][1]), "{all:?}");
}

#[test]
fn one_senders_send_times_strictly_increase_and_messages_expire_after_the_retention() {
    use chordal::chat::client::{Route, Sender};
    use chordal::clock::wall_ms;
    use chordal::room::message_key;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_new_ring(&dir.path().join("node"), 1, &[]);
    wait_for_ring(&[&node], 1);
    let retention = Duration::from_secs(3600);
    let rt = runtime();
    rt.block_on(async {
        let room = Room::new(ROOM, None);
        let location = *room.location();
        let mut sender = Sender::new(
            room,
            vec![node.addr.clone()],
            Duration::from_secs(5),
            retention,
            Route::Direct,
        );
        let before = wall_ms();
        let mut sent = Vec::new();
        for i in 0..50 {
            sent.push(sender.send("ann", &format!("line {i}")).await.unwrap());
        }
        for pair in sent.windows(2) {
            assert!(
                pair[1].sent_at_ms > pair[0].sent_at_ms,
                "sent in this order: {} then {}",
                pair[0].sent_at_ms,
                pair[1].sent_at_ms
            );
        }
        // Each is stored to expire `retention` after it reached the ring.
        let mut conn = chordal::rpc::ApiClient::connect(&node.addr, Duration::from_secs(5))
            .await
            .unwrap();
        let after = wall_ms();
        for message in &sent {
            let key = message_key(&location, message.sent_at_ms, &message.id);
            let stored = conn.get(&key, false).await.unwrap();
            let expires_at = stored.expires_at.expect("a room message expires");
            let retention_ms = retention.as_millis() as u64;
            assert!(
                (before + retention_ms..=after + retention_ms).contains(&expires_at),
                "expires at {expires_at}, sent between {before} and {after}"
            );
        }
    });
}
