//! A chat client's side of the ring: following a room (its history, then
//! live messages, across the death of the room's owner) and sending to it.

use crate::clock::wall_ms;
use crate::data::ProcessInfo;
use crate::room::onion::{wrap, Relay};
use crate::room::{message_key, Message, RecentKeys, Room};
use crate::rpc::ApiClient;
use crate::{Error, Result};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// How far back a watch resumed after losing the room's owner reaches,
/// before the moment the loss was noticed: senders' clocks differ.
const RESUME_MARGIN: Duration = Duration::from_secs(300);
/// Messages asked for when resuming (the most a node sends).
const RESUME_HISTORY: u32 = 1000;

/// What following a room reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message, shown once.
    Message(Message),
    /// Now watching the room at this node (its owner, as a lookup found).
    Watching(String),
    /// Something the user should know, e.g. a message that did not open.
    Warning(String),
}

/// Where to follow a room from, and how much history to show on entry.
#[derive(Clone, Debug)]
pub struct Follow {
    /// Nodes to ask where the room is; tried in turn.
    pub via: Vec<String>,
    /// History: messages sent at or after this time...
    pub since_ms: u64,
    /// ...the last this many of them.
    pub history: u32,
    /// Deadline of each request.
    pub timeout: Duration,
    /// The local address connections are made from (`None`: the system's).
    pub from: Option<IpAddr>,
}

impl Follow {
    /// Where to watch again after a break noticed at `now_ms`: from
    /// [`RESUME_MARGIN`] before it (never from before where the first
    /// watch started), with up to [`RESUME_HISTORY`] messages of history.
    /// Whatever was sent while no watch was open is in the store.
    pub fn resumed(&self, now_ms: u64) -> Follow {
        Follow {
            since_ms: self
                .since_ms
                .max(now_ms.saturating_sub(RESUME_MARGIN.as_millis() as u64)),
            history: RESUME_HISTORY,
            ..self.clone()
        }
    }
}

/// A key whose ring id is the first of the room's: asking for its owner
/// finds the room's owner.
fn probe_key(room: &Room) -> Vec<u8> {
    message_key(room.location(), 0, &[0; 16])
}

/// The room's owner, asked of the first of `via` that answers.
pub async fn find_owner(
    room: &Room,
    via: &[String],
    timeout: Duration,
    from: Option<IpAddr>,
) -> Result<String> {
    let mut problems = Vec::new();
    for addr in via {
        let outcome = async {
            let mut conn = ApiClient::connect_from(addr, timeout, from).await?;
            conn.lookup(&probe_key(room)).await
        }
        .await;
        match outcome {
            Ok(answer) => return Ok(answer.owner.addr),
            Err(error) => problems.push(format!("{addr}: {error}")),
        }
    }
    Err(Error::Unavailable(format!(
        "cannot find the room's owner ({})",
        problems.join("; ")
    )))
}

/// Follows `room` until `events` is dropped: watches the room's owner;
/// when the watch breaks (the owner died or left), looks the owner up
/// again, which is then a former replica, and resumes from a little before
/// the break. Each message is reported once.
pub async fn follow(room: Room, mut follow: Follow, events: mpsc::Sender<Event>) {
    let mut seen = RecentKeys::default();
    let mut pause = Duration::from_millis(200);
    loop {
        let owner = match find_owner(&room, &follow.via, follow.timeout, follow.from).await {
            Ok(owner) => owner,
            Err(error) => {
                if events
                    .send(Event::Warning(error.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let watched = async {
            let mut conn = ApiClient::connect_from(&owner, follow.timeout, follow.from).await?;
            conn.watch(room.location(), follow.since_ms, follow.history)
                .await
        }
        .await;
        let mut stream = match watched {
            Ok(stream) => stream,
            Err(error) => {
                let warning = format!("cannot watch the room at {owner}: {error}");
                if events.send(Event::Warning(warning)).await.is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(200);
        if events.send(Event::Watching(owner.clone())).await.is_err() {
            return;
        }
        let ended = loop {
            let message = tokio::select! {
                _ = events.closed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(message)) => {
                    if !seen.insert(&message.key) {
                        continue;
                    }
                    let event = match room.open(&message.key, &message.value) {
                        Ok(message) => Event::Message(message),
                        Err(error) => Event::Warning(format!("a message was skipped: {error}")),
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break "the watch ended".to_string(),
                Err(status) => break status.message().to_string(),
            }
        };
        let warning = format!("lost the room at {owner} ({ended}); finding its new owner");
        if events.send(Event::Warning(warning)).await.is_err() {
            return;
        }
        follow = follow.resumed(wall_ms());
        tokio::time::sleep(pause).await;
    }
}

/// The room's last `count` messages, asked of its owner: what `/history`
/// shows. Stops reading once they are in, or the owner has sent nothing
/// for a moment.
pub async fn fetch_history(
    room: &Room,
    follow: &Follow,
    count: u32,
) -> Result<(Vec<Message>, usize)> {
    let owner = find_owner(room, &follow.via, follow.timeout, follow.from).await?;
    let mut conn = ApiClient::connect_from(&owner, follow.timeout, follow.from).await?;
    let mut stream = conn.watch(room.location(), 0, count).await?;
    let (mut messages, mut skipped) = (Vec::new(), 0);
    while messages.len() + skipped < count as usize {
        match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
            Ok(Ok(Some(message))) => match room.open(&message.key, &message.value) {
                Ok(message) => messages.push(message),
                Err(_) => skipped += 1,
            },
            Ok(Err(status)) => return Err(status.into()),
            Ok(Ok(None)) | Err(_) => break,
        }
    }
    Ok((messages, skipped))
}

/// How a client's messages reach the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to a node, which learns the sender's address.
    Direct,
    /// Through a circuit of this many relays (see [`crate::room::onion`]).
    Onion { hops: usize },
}

/// Processes asked for their onion keys when building a circuit.
const MAX_RELAYS_KNOWN: usize = 16;
/// Circuits tried for one message before giving up.
const CIRCUIT_TRIES: usize = 3;

/// Sends messages to a room, directly or through a circuit of relays that
/// is rebuilt when a relay fails.
pub struct Sender {
    room: Room,
    via: Vec<String>,
    timeout: Duration,
    /// How long messages are kept in the ring.
    retention: Duration,
    route: Route,
    /// The local address connections are made from (`None`: the system's).
    from: Option<IpAddr>,
    /// Direct: the connection that worked last.
    conn: Option<ApiClient>,
    /// Onion: the relays in use, first hop first, and a connection to the
    /// first.
    circuit: Option<(Vec<Relay>, ApiClient)>,
    /// The circuit last reported by [`Sender::circuit_changed`].
    announced: Option<Vec<String>>,
    /// The send time of the last message.
    last_sent_ms: u64,
}

impl Sender {
    pub fn new(
        room: Room,
        via: Vec<String>,
        timeout: Duration,
        retention: Duration,
        route: Route,
    ) -> Sender {
        Sender {
            room,
            via,
            timeout,
            retention,
            route,
            from: None,
            conn: None,
            circuit: None,
            announced: None,
            last_sent_ms: 0,
        }
    }

    /// Makes every connection from the local address `from`.
    pub fn bind(mut self, from: Option<IpAddr>) -> Sender {
        self.from = from;
        self
    }

    /// The relays of the circuit in use, first hop first.
    pub fn circuit(&self) -> Option<Vec<String>> {
        self.circuit
            .as_ref()
            .map(|(relays, _)| relays.iter().map(|r| r.addr.clone()).collect())
    }

    /// The circuit in use, if it is not the one this last returned: a
    /// client tells its user when a circuit is built or rebuilt.
    pub fn circuit_changed(&mut self) -> Option<Vec<String>> {
        let now = self.circuit();
        if now.is_some() && now != self.announced {
            self.announced = now.clone();
            return now;
        }
        None
    }

    /// Seals `text` from `nick` and stores it in the room; returns the
    /// message as stored.
    pub async fn send(&mut self, nick: &str, text: &str) -> Result<Message> {
        // Strictly increasing, so that two messages sent within one
        // millisecond still sort in the order sent.
        self.last_sent_ms = wall_ms().max(self.last_sent_ms + 1);
        let message = Message {
            id: rand::random(),
            sent_at_ms: self.last_sent_ms,
            nick: nick.to_string(),
            text: text.to_string(),
        };
        let (key, value) = self
            .room
            .seal(&message)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        match self.route {
            Route::Direct => self.send_direct(&key, value).await?,
            Route::Onion { hops } => self.send_onion(hops, &key, &value).await?,
        }
        Ok(message)
    }

    async fn send_direct(&mut self, key: &[u8], value: Vec<u8>) -> Result<()> {
        let mut problems = Vec::new();
        // The connection that worked last, then every node in turn.
        let mut candidates: Vec<Option<&String>> = vec![None];
        candidates.extend(self.via.iter().map(Some));
        for candidate in candidates {
            let mut conn = match (candidate, self.conn.take()) {
                (None, Some(conn)) => conn,
                (None, None) => continue,
                (Some(addr), _) => {
                    match ApiClient::connect_from(addr, self.timeout, self.from).await {
                        Ok(conn) => conn,
                        Err(error) => {
                            problems.push(format!("{addr}: {error}"));
                            continue;
                        }
                    }
                }
            };
            match conn.put(key, value.clone(), self.retention).await {
                Ok(_) => {
                    self.conn = Some(conn);
                    return Ok(());
                }
                Err(error @ Error::InvalidArgument(_)) => return Err(error),
                Err(error) => problems.push(error.to_string()),
            }
        }
        Err(Error::Unavailable(format!(
            "the message was not stored ({})",
            problems.join("; ")
        )))
    }

    async fn send_onion(&mut self, hops: usize, key: &[u8], value: &[u8]) -> Result<()> {
        let ttl_ms = self.retention.as_millis() as u64;
        let in_use = self.circuit.take();
        let (via, timeout, from) = (&self.via, self.timeout, self.from);
        let (outcome, circuit) = through_circuits(
            in_use,
            |avoid| async move { build_circuit(via, timeout, from, hops, &avoid).await },
            |relays, mut conn: ApiClient| {
                let onion = wrap(relays, key, value, ttl_ms);
                async move {
                    let sent = conn.relay(onion).await;
                    (conn, sent)
                }
            },
        )
        .await;
        self.circuit = circuit;
        outcome
    }
}

/// Carries one message through up to [`CIRCUIT_TRIES`] circuits: the one
/// in use, if any, then circuits from `build` (given the relays that
/// failed, to avoid), each tried with `carry`, until one carries it.
/// Returns the outcome and the circuit to keep: the one that carried it.
async fn through_circuits<T, Build, Built, Carry, Carried>(
    mut circuit: Option<(Vec<Relay>, T)>,
    mut build: Build,
    mut carry: Carry,
) -> (Result<()>, Option<(Vec<Relay>, T)>)
where
    Build: FnMut(Vec<String>) -> Built,
    Built: Future<Output = Result<(Vec<Relay>, T)>>,
    Carry: FnMut(&[Relay], T) -> Carried,
    Carried: Future<Output = (T, Result<()>)>,
{
    let mut problems = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for _ in 0..CIRCUIT_TRIES {
        let (relays, conn) = match circuit.take() {
            Some(circuit) => circuit,
            None => match build(failed.clone()).await {
                Ok(circuit) => circuit,
                Err(error) => {
                    problems.push(error.to_string());
                    continue;
                }
            },
        };
        match carry(&relays, conn).await {
            (conn, Ok(())) => return (Ok(()), Some((relays, conn))),
            (_, Err(error @ Error::InvalidArgument(_))) => return (Err(error), None),
            (_, Err(error)) => {
                // Rebuilt without the relay that failed, when the error
                // says which (it names no address).
                let message = match &error {
                    Error::Unavailable(_) => error.message(),
                    other => other.to_string(),
                };
                if let Some(relay) = crate::rpc::failed_relay(&message).and_then(|i| relays.get(i))
                {
                    failed.push(relay.addr.clone());
                }
                problems.push(error.to_string());
            }
        }
    }
    let error = Error::Unavailable(format!(
        "the message was not stored through {CIRCUIT_TRIES} circuits ({})",
        problems.join("; ")
    ));
    (Err(error), None)
}

/// Picks `hops` random relays (distinct processes, avoiding `avoid` when
/// there are enough others) and connects to the first.
async fn build_circuit(
    via: &[String],
    timeout: Duration,
    from: Option<IpAddr>,
    hops: usize,
    avoid: &[String],
) -> Result<(Vec<Relay>, ApiClient)> {
    use rand::seq::SliceRandom;
    let mut relays = discover_relays(via, timeout, from).await?;
    relays.shuffle(&mut rand::rng());
    relays.sort_by_key(|r| avoid.contains(&r.addr));
    relays.truncate(hops);
    let first = ApiClient::connect_from(&relays[0].addr, timeout, from).await?;
    Ok((relays, first))
}

/// Processes of the ring with their onion keys: the nodes in `via`, then
/// the processes their members name, at most `MAX_RELAYS_KNOWN`. Each
/// is asked directly (`Describe`): it learns that a client is at this
/// address, not what it sends.
pub async fn discover_relays(
    via: &[String],
    timeout: Duration,
    from: Option<IpAddr>,
) -> Result<Vec<Relay>> {
    discover(via, |addr| async move {
        let mut conn = ApiClient::connect_from(&addr, timeout, from).await?;
        conn.describe().await
    })
    .await
}

/// [`discover_relays`], asking each process with `describe`.
async fn discover<Describe, Described>(via: &[String], mut describe: Describe) -> Result<Vec<Relay>>
where
    Describe: FnMut(String) -> Described,
    Described: Future<Output = Result<ProcessInfo>>,
{
    let mut queue: VecDeque<String> = via.iter().cloned().collect();
    let mut asked: HashSet<String> = HashSet::new();
    let mut relays = Vec::new();
    let mut problems = Vec::new();
    while let Some(addr) = queue.pop_front() {
        if relays.len() == MAX_RELAYS_KNOWN || !asked.insert(addr.clone()) {
            continue;
        }
        match describe(addr.clone()).await {
            Ok(info) => {
                // A relay is named in a layer by its address: one that is
                // not a plain HOST:PORT of at most 255 bytes, or that is
                // already known under that name, is not used.
                let usable = crate::ring::validate_addr(&info.addr).is_ok()
                    && info.addr.len() <= 255
                    && relays.iter().all(|r: &Relay| r.addr != info.addr);
                if let (Some(key), true) = (info.onion_key, usable) {
                    relays.push(Relay {
                        addr: info.addr.clone(),
                        key,
                    });
                }
                for member in &info.members {
                    for named in member.successors.iter().chain(&member.fingers) {
                        queue.push_back(named.addr.clone());
                    }
                }
            }
            Err(error) => problems.push(format!("{addr}: {error}")),
        }
    }
    if relays.is_empty() {
        let described = asked.len() - problems.len();
        return Err(Error::Unavailable(if described > 0 {
            format!("none of the {described} processes asked publishes an onion key (a chordal older than relays?); send with --direct")
        } else {
            format!("no relay could be asked ({})", problems.join("; "))
        }));
    }
    Ok(relays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const MINUTE_MS: u64 = 60_000;

    fn following(since_ms: u64, history: u32) -> Follow {
        Follow {
            via: vec!["127.0.0.1:10001".into()],
            since_ms,
            history,
            timeout: Duration::from_secs(5),
            from: None,
        }
    }

    #[test]
    fn after_a_break_the_watch_resumes_five_minutes_before_it_with_up_to_a_thousand_messages() {
        let opened_ms = 1_795_000_000_000;
        // Opened with a day of history, the 100 most recent messages.
        let opened = following(opened_ms - 24 * 60 * MINUTE_MS, 100);
        let broke_ms = opened_ms + 60 * MINUTE_MS;
        let resumed = opened.resumed(broke_ms);
        assert_eq!(resumed.since_ms, broke_ms - 5 * MINUTE_MS);
        assert_eq!(resumed.history, 1000);
        assert_eq!(resumed.via, opened.via);
        // A second break: from five minutes before that one.
        let again = resumed.resumed(broke_ms + 30 * MINUTE_MS);
        assert_eq!(again.since_ms, broke_ms + 25 * MINUTE_MS);
        // A break soon after opening with `--since 1m` reaches back no
        // further than what was asked for.
        let recent = following(opened_ms - MINUTE_MS, 100);
        assert_eq!(
            recent.resumed(opened_ms + MINUTE_MS).since_ms,
            opened_ms - MINUTE_MS
        );
    }

    fn relays(count: u8) -> Vec<Relay> {
        (1..=count)
            .map(|i| Relay {
                addr: format!("10.0.0.{i}:7000"),
                key: [i; 32],
            })
            .collect()
    }

    #[tokio::test]
    async fn a_message_is_tried_on_at_most_three_circuits() {
        // The circuit in use fails, and so does every one built after it
        // (the relays answer, the ring does not store the message).
        let (built, tried) = (RefCell::new(0), RefCell::new(0));
        let (outcome, kept) = through_circuits(
            Some((relays(3), ())),
            |_avoid| {
                *built.borrow_mut() += 1;
                async { Ok((relays(3), ())) }
            },
            |_circuit, ()| {
                *tried.borrow_mut() += 1;
                async {
                    (
                        (),
                        Err(Error::Unavailable(
                            "> > relay: the ring did not store it (Unavailable)".into(),
                        )),
                    )
                }
            },
        )
        .await;
        assert_eq!(*built.borrow(), 2, "the one in use and two built");
        assert_eq!(*tried.borrow(), 3);
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("through 3 circuits"), "{error}");
        assert!(kept.is_none());
    }

    #[tokio::test]
    async fn a_circuit_that_carries_a_message_is_kept_for_the_next() {
        // Built afresh, a relay fails; the second circuit carries it.
        let tries = RefCell::new(0);
        let (outcome, kept) = through_circuits(
            None,
            |avoid: Vec<String>| async move {
                let mut circuit = relays(5);
                circuit.retain(|r| !avoid.contains(&r.addr));
                circuit.truncate(3);
                Ok((circuit, ()))
            },
            |_circuit, ()| {
                *tries.borrow_mut() += 1;
                let first = *tries.borrow() == 1;
                async move {
                    if first {
                        // The second relay could not reach the third.
                        (
                            (),
                            Err(Error::Unavailable(
                                "> relay: the next hop did not answer".into(),
                            )),
                        )
                    } else {
                        ((), Ok(()))
                    }
                }
            },
        )
        .await;
        outcome.unwrap();
        let (circuit, ()) = kept.expect("the circuit that worked is kept");
        let addrs: Vec<&str> = circuit.iter().map(|r| r.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.4:7000"]);
    }
}
