//! The data layer's decisions, on a real RocksDB store, with the ring state
//! set by hand.

use super::*;
use crate::clock::wall_ms;
use crate::id::between_open_closed;
use crate::ring::LookupOutcome;
use crate::store::{RocksEngine, BATCH_RECORDS};
use crate::sync::{ArcRange, SyncRequest};
use futures::StreamExt;
use std::collections::BTreeMap;

/// A router that knows nothing: these tests call the owner side directly.
struct NoRouter;

#[async_trait::async_trait]
impl Router for NoRouter {
    async fn lookup(&self, _: Id) -> Result<LookupOutcome> {
        Err(Error::Unavailable("no ring in this test".into()))
    }
}

/// Other processes, called in this process: each address is a data node
/// registered here, answering through the same `serve_*` side as over
/// gRPC. An address nobody registered does not answer. The first fetch
/// of each source can be made to break off after one batch.
#[derive(Default)]
struct Direct {
    nodes: Mutex<BTreeMap<String, Arc<DataNode>>>,
    break_first_fetch: bool,
    fetches: Mutex<Vec<Option<Vec<u8>>>>,
}

impl Direct {
    fn node(&self, addr: &str) -> Result<Arc<DataNode>> {
        self.nodes
            .lock()
            .unwrap()
            .get(addr)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("{addr} does not answer")))
    }
}

#[async_trait::async_trait]
impl Peers for Direct {
    async fn write(&self, to: &NodeRef, op: &WriteOp) -> Result<WriteAnswer> {
        self.node(&to.addr)?.serve_write(to.id, op.clone()).await
    }
    async fn read(
        &self,
        to: &NodeRef,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> Result<ReadAnswer> {
        self.node(&to.addr)?
            .serve_read(to.id, key, raw, read_quorum)
            .await
    }
    async fn replicate(
        &self,
        to: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> Result<u64> {
        self.node(&to.addr)?.serve_replicate(entries, hint_for)
    }
    async fn forget(&self, to: &NodeRef, tombstones: &[Entry]) -> Result<u64> {
        self.node(&to.addr)?.serve_forget(tombstones)
    }
    async fn sync(&self, to: &NodeRef, _: ArcRange, request: SyncRequest) -> Result<SyncExchange> {
        let reply = self.node(&to.addr)?.serve_sync(request).await?;
        Ok(SyncExchange {
            reply,
            bytes_sent: 0,
            bytes_received: 0,
        })
    }
    async fn state(&self, of: &NodeRef) -> Result<(Option<NodeRef>, Vec<NodeRef>)> {
        Err(Error::Unavailable(format!("{of}: no ring in this test")))
    }
    async fn fetch(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> Result<BatchStream> {
        let first = {
            let mut fetches = self.fetches.lock().unwrap();
            fetches.push(after.clone());
            fetches.len() == 1
        };
        let stream = self
            .node(&source.addr)?
            .serve_fetch(source.id, from, to, after)
            .await?;
        if !(first && self.break_first_fetch) {
            return Ok(stream);
        }
        let broken = stream.take(1).chain(futures::stream::once(async {
            Err(Error::Unavailable("connection reset (injected)".into()))
        }));
        Ok(Box::pin(broken))
    }
    async fn absorb(&self, target: &NodeRef, batches: BatchStream) -> Result<()> {
        self.node(&target.addr)?.serve_absorb(batches).await?;
        Ok(())
    }
}

struct Fixture {
    data: Arc<DataNode>,
    members: watch::Sender<Membership>,
    _dir: tempfile::TempDir,
}

const ADDR: &str = "127.0.0.1:1";

fn member(id: u64, predecessor: Option<u64>) -> LocalMember {
    LocalMember {
        me: NodeRef::new(Id(id), ADDR),
        joined: true,
        predecessor: predecessor.map(|p| NodeRef::new(Id(p), "127.0.0.1:2")),
        successors: vec![NodeRef::new(Id(id.wrapping_add(1000)), "127.0.0.1:3")],
    }
}

fn fixture(members: Vec<LocalMember>) -> Fixture {
    fixture_at(ADDR, members)
}

fn fixture_at(addr: &str, members: Vec<LocalMember>) -> Fixture {
    fixture_with(addr, members, Arc::new(Direct::default()))
}

fn fixture_with(addr: &str, members: Vec<LocalMember>, peers: Arc<Direct>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let hints: SharedEngine = Arc::new(engine.hints());
    let store = Store::new(engine).unwrap().into_shared();
    let (sender, receiver) = watch::channel(Arc::new(members));
    // One copy: these tests are about a single process's decisions.
    let config = DataConfig {
        replication: crate::replica::ReplicationConfig {
            replicas: 1,
            write_quorum: 1,
            read_quorum: 1,
            ..Default::default()
        },
        ..DataConfig::new(100, Duration::from_millis(200))
    };
    let wiring = Wiring {
        addr: addr.into(),
        members: receiver,
        router: Arc::new(NoRouter),
        peers,
        clock: Clock::System,
        seed: 1,
    };
    let data = DataNode::new(store, hints, config, wiring).unwrap();
    Fixture {
        data: Arc::new(data),
        members: sender,
        _dir: dir,
    }
}

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        delete: false,
        ttl_ms: 0,
        write_quorum: 0,
    }
}

/// The user keys stored for ids in the arc (from, to], found by brute force.
fn keys_in_arc(keys: &[String], from: Id, to: Id) -> Vec<String> {
    let mut inside: Vec<&String> = keys
        .iter()
        .filter(|k| between_open_closed(from, Id::of_key(k.as_bytes()), to))
        .collect();
    inside.sort_by_key(|k| from.distance_to(Id::of_key(k.as_bytes())));
    inside.into_iter().cloned().collect()
}

#[tokio::test]
async fn the_owner_writes_reads_and_refuses_keys_outside_its_arc() {
    // Member 2^63 owns (2^62, 2^63].
    let (low, high) = (1u64 << 62, 1u64 << 63);
    let f = fixture(vec![member(high, Some(low))]);
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let mine = keys_in_arc(&keys, Id(low), Id(high));
    assert!(!mine.is_empty() && mine.len() < keys.len());
    for key in &keys {
        let answer = f
            .data
            .write_as_owner(Id(high), put(key, "v"))
            .await
            .unwrap();
        let read = f
            .data
            .read_as_owner(Id(high), key.as_bytes(), 0)
            .await
            .unwrap();
        if mine.contains(key) {
            assert!(matches!(
                answer,
                WriteAnswer::Written { existed: false, .. }
            ));
            assert!(matches!(read, ReadAnswer::Found(r) if r.value == b"v"));
        } else {
            // The hint names the predecessor, whose side the key is on.
            let WriteAnswer::NotOwner(not_owner) = answer else {
                panic!("{key} written outside the arc");
            };
            assert_eq!(not_owner.hint.unwrap().id, Id(low));
            assert!(matches!(read, ReadAnswer::NotOwner(_)));
        }
    }
    // A member this process does not host owns nothing here.
    let stranger = f
        .data
        .write_as_owner(Id(7), put(&mine[0], "x"))
        .await
        .unwrap();
    assert!(matches!(
        stranger,
        WriteAnswer::NotOwner(NotOwner { hint: None, .. })
    ));
}

#[tokio::test]
async fn every_write_by_the_owner_supersedes_the_one_before_and_deletes_leave_tombstones() {
    let f = fixture(vec![member(5, Some(5))]);
    let mut versions = Vec::new();
    for round in 0..50 {
        match f
            .data
            .write_as_owner(Id(5), put("k", &round.to_string()))
            .await
            .unwrap()
        {
            WriteAnswer::Written {
                version, existed, ..
            } => {
                assert_eq!(existed, round > 0);
                versions.push(version);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(versions.windows(2).all(|w| w[1] > w[0]));
    assert!(versions.iter().all(|v| v.writer == 5));
    let mut delete = put("k", "");
    delete.delete = true;
    let WriteAnswer::Written { existed, .. } = f.data.write_as_owner(Id(5), delete).await.unwrap()
    else {
        panic!("delete refused");
    };
    assert!(existed);
    let deleted_at = wall_ms();
    let ReadAnswer::Found(record) = f.data.read_as_owner(Id(5), b"k", 0).await.unwrap() else {
        panic!("tombstone missing");
    };
    assert!(record.tombstone);
    // Kept for the tombstone grace (a day by default), then purged.
    let grace = f.data.config.replication.tombstone_grace.as_millis() as u64;
    let expires = record.expires_at.expect("a tombstone with a grace expires");
    assert!(expires <= deleted_at + grace && expires + 60_000 > deleted_at + grace);
    assert!(record.version > *versions.last().unwrap());
    assert!(f.data.get_local(b"k").is_err());
}

#[tokio::test]
async fn a_record_from_another_clock_far_ahead_is_followed_not_shadowed() {
    let f = fixture(vec![member(5, Some(5))]);
    // The old owner's clock ran an hour ahead of ours.
    let ahead = Version {
        clock: (wall_ms() + 3_600_000) << 16,
        writer: 99,
    };
    let entry = Entry {
        key: b"k".to_vec(),
        record: Record::value(ahead, b"old".to_vec(), None),
    };
    assert_eq!(f.data.absorb(&[entry]).unwrap(), 1);
    let WriteAnswer::Written { version, .. } =
        f.data.write_as_owner(Id(5), put("k", "new")).await.unwrap()
    else {
        panic!("write refused");
    };
    assert!(version > ahead);
    assert_eq!(f.data.get_local(b"k").unwrap().value, b"new");
}

#[test]
fn oversized_keys_values_and_ttls_are_refused() {
    let f = fixture(vec![]);
    assert!(f.data.validate(b"k", &[0; 100], 0).is_ok());
    for (key, value, ttl) in [
        (vec![], vec![], 0),
        (vec![b'k'; 1025], vec![], 0),
        (b"k".to_vec(), vec![0; 101], 0),
        (b"k".to_vec(), vec![], MAX_TTL.as_millis() as u64 + 1),
    ] {
        let error = f.data.validate(&key, &value, ttl).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    }
}

#[test]
fn forget_takes_tombstones_only_and_only_the_exact_version() {
    use crate::store::{Record, Version};
    let f = fixture(vec![]);
    let version = |clock| Version { clock, writer: 1 };
    let entry = |key: &str, record| Entry {
        key: key.as_bytes().to_vec(),
        record,
    };
    let live = entry("live", Record::value(version(5), b"v".to_vec(), None));
    let dead = entry("dead", Record::tombstone(version(5), None));
    f.data.absorb(&[live.clone(), dead.clone()]).unwrap();
    // A live record in the batch: nothing forgotten, and said why.
    let error = f.data.serve_forget(&[dead.clone(), live]).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    assert!(f.data.get_local(b"live").is_ok());
    // Another version of the tombstone is not the one held.
    let other = entry("dead", Record::tombstone(version(4), None));
    assert_eq!(f.data.serve_forget(&[other]).unwrap(), 0);
    assert_eq!(f.data.serve_forget(&[dead]).unwrap(), 1);
}

#[tokio::test]
async fn a_fetch_waits_for_the_hand_over_and_resumes_after_the_last_key() {
    let (low, mid, high) = (1u64 << 60, 1u64 << 62, 1u64 << 63);
    // The old owner `high` still owns (low, high]: nothing is handed over.
    let f = fixture(vec![member(high, Some(low))]);
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        if between_open_closed(Id(low), Id::of_key(key.as_bytes()), Id(high)) {
            f.data
                .write_as_owner(Id(high), put(key, key))
                .await
                .unwrap();
        }
    }
    let refused = f.data.serve_fetch(Id(high), Id(low), Id(mid), None).await;
    assert!(matches!(refused, Err(Error::NotReady(_))));

    // `mid` joined and notified `high`: (low, mid] is now mid's.
    f.members
        .send_replace(Arc::new(vec![member(high, Some(mid))]));
    let moved = keys_in_arc(&keys, Id(low), Id(mid));
    assert!(moved.len() > BATCH_RECORDS, "{} keys", moved.len());
    // A write into the handed-over arc is refused with a hint to the new owner.
    let refused = f
        .data
        .write_as_owner(Id(high), put(&moved[0], "late"))
        .await
        .unwrap();
    assert!(matches!(refused, WriteAnswer::NotOwner(n) if n.hint.as_ref().unwrap().id == Id(mid)));

    let mut received = Vec::new();
    let mut stream = f
        .data
        .serve_fetch(Id(high), Id(low), Id(mid), None)
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty() && first.len() <= BATCH_RECORDS);
    received.extend(
        first
            .iter()
            .map(|e| String::from_utf8(e.key.clone()).unwrap()),
    );
    drop(stream); // interrupted
    let after = first.last().unwrap().key.clone();
    let mut stream = f
        .data
        .serve_fetch(Id(high), Id(low), Id(mid), Some(after))
        .await
        .unwrap();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        for entry in batch {
            assert_eq!(entry.record.value, entry.key);
            received.push(String::from_utf8(entry.key).unwrap());
        }
    }
    assert_eq!(received, moved);
}

#[tokio::test]
async fn a_member_still_receiving_its_arc_serves_no_fetch_of_its_own() {
    let f = fixture(vec![member(1 << 63, Some(1 << 62))]);
    f.data
        .handoffs
        .state()
        .sources
        .insert(Id(1 << 63), NodeRef::new(Id(9), "127.0.0.1:9"));
    let refused = f
        .data
        .serve_fetch(Id(1 << 63), Id(1 << 60), Id(1 << 61), None)
        .await;
    assert!(matches!(refused, Err(Error::NotReady(_))));
}

#[test]
fn remembered_routes_cover_their_arcs_and_newer_arcs_replace_overlapping_ones() {
    let node = |id: u64| NodeRef::new(Id(id), format!("127.0.0.1:{id}"));
    let outcome = |predecessor: u64, owner: u64| LookupOutcome {
        target: Id(owner),
        predecessor: node(predecessor),
        successors: vec![node(owner), node(owner + 1)],
        path: vec![],
    };
    let routes = coordinator::RouteCache::default();
    assert!(routes.find(Id(5)).is_none());
    routes.remember(&outcome(100, 200));
    routes.remember(&outcome(200, 300));
    // Candidates come last first: the owner is popped first.
    assert_eq!(routes.find(Id(150)).unwrap().pop().unwrap().id, Id(200));
    assert_eq!(routes.find(Id(300)).unwrap().pop().unwrap().id, Id(300));
    assert!(routes.find(Id(100)).is_none());
    assert!(routes.find(Id(301)).is_none());
    // A member joined at 250: (200, 250] replaces the arc (200, 300].
    routes.remember(&outcome(200, 250));
    assert_eq!(routes.find(Id(220)).unwrap().pop().unwrap().id, Id(250));
    assert!(routes.find(Id(280)).is_none());
    assert_eq!(routes.find(Id(150)).unwrap().pop().unwrap().id, Id(200));
    // An arc that wraps past zero.
    routes.remember(&outcome(u64::MAX - 10, 50));
    assert_eq!(routes.find(Id(3)).unwrap().pop().unwrap().id, Id(50));
    assert_eq!(routes.find(Id(u64::MAX)).unwrap().pop().unwrap().id, Id(50));
    routes.forget(Id(3));
    assert!(routes.find(Id(3)).is_none());
    assert!(routes.find(Id(150)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_hand_off_resumes_after_the_last_key_received() {
    let (low, mid, high) = (1u64 << 60, 1u64 << 62, 1u64 << 63);
    let source_addr = "127.0.0.1:5".to_string();
    let peers = Arc::new(Direct {
        break_first_fetch: true,
        ..Direct::default()
    });
    // The old owner `high` has already seen `mid` as its predecessor.
    let old_owner = LocalMember {
        me: NodeRef::new(Id(high), source_addr.clone()),
        ..member(high, Some(mid))
    };
    let source = fixture_with(&source_addr, vec![old_owner.clone()], peers.clone());
    peers
        .nodes
        .lock()
        .unwrap()
        .insert(source_addr.clone(), source.data.clone());
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    let moved = keys_in_arc(&keys, Id(low), Id(mid));
    assert!(moved.len() > BATCH_RECORDS);
    let entries: Vec<Entry> = moved
        .iter()
        .map(|k| Entry {
            key: k.as_bytes().to_vec(),
            record: Record::value(
                Version {
                    clock: 1,
                    writer: 1,
                },
                k.as_bytes().to_vec(),
                None,
            ),
        })
        .collect();
    source.data.absorb(&entries).unwrap();

    let new_owner = member(mid, Some(low));
    let target = fixture_with("127.0.0.1:2", vec![new_owner.clone()], peers.clone());
    target.data.take_over(
        new_owner.me.clone(),
        old_owner.me.clone(),
        Some(NodeRef::new(Id(low), "127.0.0.1:4")),
    );
    let started = std::time::Instant::now();
    while target.data.hand_offs_pending() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hand-off never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two fetches: the second resumed just after the first batch's last key.
    let fetches = peers.fetches.lock().unwrap().clone();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert_eq!(fetches[0], None);
    // (Records this small fill a batch by count, not by bytes.)
    let first_batch_end = moved[BATCH_RECORDS - 1].as_bytes().to_vec();
    assert_eq!(fetches[1], Some(first_batch_end));
    // Every record arrived, exactly once in ring order.
    let held: Vec<String> = target
        .data
        .store()
        .scan_arc(Id(low), Id(mid), None, usize::MAX, crate::clock::wall_ms())
        .unwrap()
        .into_iter()
        .map(|(_, record)| String::from_utf8(record.value).unwrap())
        .collect();
    assert_eq!(held, moved);
}

#[tokio::test]
async fn while_the_old_owner_cannot_be_asked_a_taking_over_member_answers_unavailable() {
    let f = fixture(vec![member(5, Some(5))]);
    // Nobody answers at this address.
    f.data
        .handoffs
        .state()
        .sources
        .insert(Id(5), NodeRef::new(Id(9), "127.0.0.1:9"));
    let read = f.data.read_as_owner(Id(5), b"k", 0).await;
    assert!(matches!(read, Err(Error::Unavailable(_))), "{read:?}");
    let write = f.data.write_as_owner(Id(5), put("k", "v")).await;
    assert!(matches!(write, Err(Error::Unavailable(_))), "{write:?}");
    // Nothing was written behind the old owner's back.
    assert!(f.data.read_local(b"k").unwrap().is_none());
}

#[tokio::test]
async fn a_member_without_a_predecessor_serves_only_the_arc_its_join_found() {
    let (low, high) = (1u64 << 62, 1u64 << 63);
    let f = fixture(vec![member(high, None)]);
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let mine = keys_in_arc(&keys, Id(low), Id(high));
    let theirs = keys.iter().find(|k| !mine.contains(k)).unwrap();
    // Nothing known: every key is refused, never answered "missing".
    for key in [&mine[0], theirs] {
        let read = f
            .data
            .read_as_owner(Id(high), key.as_bytes(), 0)
            .await
            .unwrap();
        assert!(matches!(read, ReadAnswer::NotOwner(_)), "{read:?}");
    }
    // Joined before a sibling on this process whose predecessor was `low`.
    f.data.take_over(
        NodeRef::new(Id(high), ADDR),
        NodeRef::new(Id(high + 10), ADDR),
        Some(NodeRef::new(Id(low), "127.0.0.1:2")),
    );
    let read = f
        .data
        .read_as_owner(Id(high), mine[0].as_bytes(), 0)
        .await
        .unwrap();
    assert_eq!(read, ReadAnswer::Missing);
    let read = f
        .data
        .read_as_owner(Id(high), theirs.as_bytes(), 0)
        .await
        .unwrap();
    assert!(matches!(read, ReadAnswer::NotOwner(_)), "{read:?}");
    // A join that landed behind its successor's predecessor tells nothing.
    let g = fixture(vec![member(high, None)]);
    g.data.take_over(
        NodeRef::new(Id(high), ADDR),
        NodeRef::new(Id(high + 10), ADDR),
        Some(NodeRef::new(Id(high + 5), "127.0.0.1:2")),
    );
    let read = g
        .data
        .read_as_owner(Id(high), mine[0].as_bytes(), 0)
        .await
        .unwrap();
    assert!(matches!(read, ReadAnswer::NotOwner(_)), "{read:?}");
}

#[tokio::test]
async fn a_member_alone_in_its_ring_owns_every_key() {
    let alone = LocalMember {
        successors: vec![NodeRef::new(Id(7), ADDR)],
        ..member(7, None)
    };
    let f = fixture(vec![alone]);
    for i in 0..50 {
        let key = format!("key-{i}");
        let answer = f.data.write_as_owner(Id(7), put(&key, "v")).await.unwrap();
        assert!(matches!(answer, WriteAnswer::Written { .. }), "{answer:?}");
    }
}

/// `count` sealed-looking messages of the room at `location`, the `i`-th
/// sent at millisecond `first_ms + i`.
fn room_messages(location: &[u8; 32], first_ms: u64, count: u64) -> Vec<Entry> {
    (0..count)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            Entry {
                key: crate::room::message_key(location, first_ms + i, &id),
                record: Record::value(
                    Version {
                        clock: 1,
                        writer: i,
                    },
                    b"sealed".to_vec(),
                    None,
                ),
            }
        })
        .collect()
}

/// The send times of the next `count` messages a watch hands over.
async fn watched(
    messages: &mut tokio::sync::mpsc::Receiver<Result<Entry>>,
    count: usize,
) -> Vec<u64> {
    let mut times = Vec::new();
    while times.len() < count {
        let entry = tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .expect("the watch goes on")
            .expect("the watch is open")
            .expect("a message");
        let (_, sent_at_ms, _) = crate::room::parse_key(&entry.key).expect("a room key");
        times.push(sent_at_ms);
    }
    times
}

#[tokio::test]
async fn a_watch_sends_at_most_the_last_thousand_messages_of_history_then_new_ones() {
    let f = fixture(vec![member(1 << 62, Some(1 << 61))]);
    let room = [7u8; 32];
    let other = [8u8; 32];
    f.data.absorb(&room_messages(&room, 1_000, 1_500)).unwrap();
    f.data.absorb(&room_messages(&other, 1_000, 10)).unwrap();
    let mut messages = f.data.watch_room(room, 0, rooms::MAX_HISTORY);
    let history = watched(&mut messages, rooms::MAX_HISTORY).await;
    assert_eq!(
        history,
        (1_500..2_500).collect::<Vec<u64>>(),
        "the last 1,000, in order"
    );
    // Then what arrives, and only for this room.
    f.data.absorb(&room_messages(&other, 5_000, 1)).unwrap();
    f.data.absorb(&room_messages(&room, 6_000, 1)).unwrap();
    assert_eq!(watched(&mut messages, 1).await, vec![6_000]);
    // A history since a time takes only what was sent from then on.
    let mut since = f.data.watch_room(room, 2_490, rooms::MAX_HISTORY);
    let mut expected: Vec<u64> = (2_490..2_500).collect();
    expected.push(6_000);
    assert_eq!(watched(&mut since, expected.len()).await, expected);
}

#[tokio::test]
async fn a_watcher_more_than_the_feed_behind_rereads_the_room_from_the_store() {
    let f = fixture(vec![member(1 << 62, Some(1 << 61))]);
    let room = [7u8; 32];
    let mut messages = f.data.watch_room(room, 0, 0);
    // Stored one by one while the watcher reads nothing: on this one
    // thread its task does not run until the test waits, and by then the
    // feed has dropped the oldest (it keeps 1,024).
    let burst = (rooms::FEED_CAPACITY + 76) as u64;
    for entry in room_messages(&room, 1_000, burst) {
        f.data.absorb(std::slice::from_ref(&entry)).unwrap();
    }
    // The reread is of the room's last 1,000 messages, in order. Then the
    // feed goes on from the oldest message it still keeps: those the
    // reread did not cover follow, each once. Of a burst larger than the
    // feed between two reads, the oldest are not sent (docs/chat.md).
    let end = 1_000 + burst;
    let reread: Vec<u64> = (end - rooms::MAX_HISTORY as u64..end).collect();
    assert_eq!(watched(&mut messages, reread.len()).await, reread);
    f.data.absorb(&room_messages(&room, 9_000, 1)).unwrap();
    let kept_by_the_feed = end - rooms::FEED_CAPACITY as u64;
    let mut rest: Vec<u64> = (kept_by_the_feed..reread[0]).collect();
    rest.push(9_000);
    assert_eq!(watched(&mut messages, rest.len()).await, rest);
}
