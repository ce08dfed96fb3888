//! Chat on a five-node loopback ring of real processes:
//!
//! * `latency`: end to end, from the moment a client starts sending a
//!   message to the moment another client, watching the room through
//!   another node, has it; p50 and p99, sent directly and through a
//!   circuit of three relays;
//! * `throughput`: messages per second one room takes, with 16 senders
//!   sending one message at a time each, as counted by one watcher.
//!
//! Run it with:
//!
//!     cargo bench --profile dev --bench chat
//!     CHORDAL_CHAT_MESSAGES=1000 cargo bench --profile dev --bench chat -- latency

mod common;

use chordal::chat::client::{follow, Event, Follow, Route, Sender};
use chordal::clock::wall_ms;
use chordal::room::Room;
use common::*;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(15);
const RETENTION: Duration = Duration::from_secs(600);

fn route_name(route: Route) -> String {
    match route {
        Route::Direct => "direct".into(),
        Route::Onion { hops } => format!("{hops} relays"),
    }
}

/// Follows `room` through `via`; returns once the watch is open.
async fn watch(room: &Room, via: &str) -> mpsc::Receiver<Event> {
    let (events, mut received) = mpsc::channel(65_536);
    let following = Follow {
        via: vec![via.to_string()],
        since_ms: wall_ms(),
        history: 0,
        timeout: TIMEOUT,
        from: None,
    };
    tokio::spawn(follow(room.clone(), following, events));
    loop {
        match received.recv().await {
            Some(Event::Watching(_)) => return received,
            Some(Event::Warning(warning)) => eprintln!("  watcher: {warning}"),
            Some(Event::Message(_)) => {}
            None => panic!("the watcher stopped"),
        }
    }
}

async fn latency(addrs: &[String], route: Route, count: u64) {
    let room = Room::new(&format!("bench latency {}", route_name(route)), None);
    let mut received = watch(&room, &addrs[1]).await;
    let mut sender = Sender::new(room, vec![addrs[0].clone()], TIMEOUT, RETENTION, route);
    // The first sends build the circuit and open connections.
    for _ in 0..5 {
        sender.send("bench", "warm-up").await.unwrap();
    }
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for i in 0..count {
        let text = format!("message {i}");
        let started = Instant::now();
        let sent = sender.send("bench", &text);
        tokio::pin!(sent);
        let mut acknowledged = false;
        let arrived = loop {
            tokio::select! {
                outcome = &mut sent, if !acknowledged => {
                    outcome.unwrap();
                    acknowledged = true;
                }
                event = received.recv() => match event {
                    Some(Event::Message(m)) if m.text == text => break started.elapsed(),
                    Some(_) => {}
                    None => panic!("the watcher stopped"),
                },
            }
        };
        if !acknowledged {
            sent.await.unwrap();
        }
        histogram.record(arrived.as_micros() as u64).unwrap();
    }
    println!(
        "latency, {:>9}: {count} messages, send to shown on another client: p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms",
        route_name(route),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.mean() / 1000.0,
    );
}

async fn throughput(addrs: &[String], route: Route, senders: usize, each: u64) {
    let room = Room::new(&format!("bench throughput {}", route_name(route)), None);
    let mut received = watch(&room, &addrs[1]).await;
    let total = senders as u64 * each;
    let started = Instant::now();
    for s in 0..senders {
        let via = vec![addrs[s % addrs.len()].clone()];
        let room = room.clone();
        tokio::spawn(async move {
            let mut sender = Sender::new(room, via, TIMEOUT, RETENTION, route);
            for i in 0..each {
                if let Err(error) = sender.send(&format!("s{s}"), &format!("{i}")).await {
                    eprintln!("  sender {s}: {error}");
                }
            }
        });
    }
    let mut seen = 0;
    while seen < total {
        match tokio::time::timeout(Duration::from_secs(30), received.recv()).await {
            Ok(Some(Event::Message(_))) => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let elapsed = started.elapsed();
    println!(
        "throughput, {:>9}: {seen} of {total} messages from {senders} senders shown in {:.1} s: {:.0} messages/s",
        route_name(route),
        elapsed.as_secs_f64(),
        seen as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let wanted = wanted_parts();
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = start_ring(dir.path(), 5, 4).await;
    println!("a ring of 5 processes, 4 virtual nodes each, N=3 W=2 R=2, on loopback");
    let count = env_or("CHORDAL_CHAT_MESSAGES", 500);
    let routes = [Route::Direct, Route::Onion { hops: 3 }];
    if wanted("latency") {
        for route in routes {
            latency(&addrs, route, count).await;
        }
    }
    if wanted("throughput") {
        for route in routes {
            throughput(&addrs, route, 16, count / 4).await;
        }
    }
}
