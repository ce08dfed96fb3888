//! The data layer's decisions, on a real RocksDB store, with the ring state
//! set by hand.

use super::*;
use crate::ring::{Request, Response};
use crate::rpc::{pb, ProcessInfo};

/// A router that knows nothing: these tests call the owner side directly.
struct NoRouter;

#[tonic::async_trait]
impl NodeApi for NoRouter {
    async fn request(&self, _: Option<Id>, _: Request) -> Result<Response> {
        Ok(Response::NotMember)
    }
    async fn lookup(&self, _: Id) -> Result<LookupOutcome> {
        Err(Error::Unavailable("no ring in this test".into()))
    }
    async fn describe(&self) -> Result<ProcessInfo> {
        Err(Error::Unavailable("no ring in this test".into()))
    }
}

struct Fixture {
    data: Arc<Data>,
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(RocksEngine::open(dir.path()).unwrap()).unwrap();
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
    let data = Data::new(store, config, addr.into(), receiver, Arc::new(NoRouter)).unwrap();
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
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);

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
    let first = stream.recv().await.unwrap().unwrap();
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
    while let Some(batch) = stream.recv().await {
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
    f.data.pending.lock().unwrap().insert(
        Id(1 << 63),
        Pending {
            source: NodeRef::new(Id(9), "127.0.0.1:9"),
        },
    );
    let refused = f
        .data
        .serve_fetch(Id(1 << 63), Id(1 << 60), Id(1 << 61), None)
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

#[test]
fn keys_print_as_text_when_printable_and_hex_otherwise() {
    assert_eq!(printable(b"hello"), "\"hello\"");
    assert_eq!(printable(&[0, 255]), "0x00ff (2 bytes)");
    assert_eq!(human_bytes(10), "10 B");
    assert_eq!(human_bytes(3 << 20), "3.0 MiB");
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
    let routes = RouteCache::default();
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

/// The old owner's `Data` service, except that the first fetch breaks off
/// after one batch; it records the resume point of every fetch.
struct BreaksOnce {
    inner: crate::rpc::DataService,
    fetches: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

#[tonic::async_trait]
impl pb::data_server::Data for BreaksOnce {
    async fn write(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteReply>, tonic::Status> {
        self.inner.write(request).await
    }

    async fn read(
        &self,
        request: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, tonic::Status> {
        self.inner.read(request).await
    }

    type FetchStream = <crate::rpc::DataService as pb::data_server::Data>::FetchStream;

    async fn fetch(
        &self,
        request: tonic::Request<pb::FetchRequest>,
    ) -> Result<tonic::Response<Self::FetchStream>, tonic::Status> {
        let first = {
            let mut fetches = self.fetches.lock().unwrap();
            fetches.push(request.get_ref().after.clone());
            fetches.len() == 1
        };
        let stream = self.inner.fetch(request).await?.into_inner();
        if !first {
            return Ok(tonic::Response::new(stream));
        }
        use futures::StreamExt;
        let broken = stream.take(1).chain(futures::stream::once(async {
            Err(tonic::Status::unavailable("connection reset (injected)"))
        }));
        Ok(tonic::Response::new(Box::pin(broken)))
    }

    async fn absorb(
        &self,
        request: tonic::Request<tonic::Streaming<pb::RecordBatch>>,
    ) -> Result<tonic::Response<pb::AbsorbReply>, tonic::Status> {
        self.inner.absorb(request).await
    }

    async fn replicate(
        &self,
        request: tonic::Request<pb::ReplicateRequest>,
    ) -> Result<tonic::Response<pb::ReplicateReply>, tonic::Status> {
        self.inner.replicate(request).await
    }

    async fn sync(
        &self,
        request: tonic::Request<pb::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncReply>, tonic::Status> {
        self.inner.sync(request).await
    }
    async fn forget(
        &self,
        request: tonic::Request<pb::RecordBatch>,
    ) -> Result<tonic::Response<pb::ForgetReply>, tonic::Status> {
        self.inner.forget(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_hand_off_resumes_after_the_last_key_received() {
    let (low, mid, high) = (1u64 << 60, 1u64 << 62, 1u64 << 63);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source_addr = listener.local_addr().unwrap().to_string();
    // The old owner `high` has already seen `mid` as its predecessor.
    let old_owner = LocalMember {
        me: NodeRef::new(Id(high), source_addr.clone()),
        ..member(high, Some(mid))
    };
    let source = fixture_at(&source_addr, vec![old_owner.clone()]);
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
    let fetches = Arc::new(Mutex::new(Vec::new()));
    let service = BreaksOnce {
        inner: crate::rpc::DataService::new(source.data.clone()),
        fetches: fetches.clone(),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::data_server::DataServer::new(service))
            .serve_with_incoming(crate::node::incoming(listener)),
    );

    let new_owner = member(mid, Some(low));
    let target = fixture_at("127.0.0.1:2", vec![new_owner.clone()]);
    target.data.take_over(
        new_owner.me.clone(),
        old_owner.me.clone(),
        Some(NodeRef::new(Id(low), "127.0.0.1:4")),
    );
    let started = Instant::now();
    while target.data.hand_offs_pending() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hand-off never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();

    // Two fetches: the second resumed just after the first batch's last key.
    let fetches = fetches.lock().unwrap().clone();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert_eq!(fetches[0], None);
    // (Records this small fill a batch by count, not by bytes.)
    let first_batch_end = moved[BATCH_RECORDS - 1].as_bytes().to_vec();
    assert_eq!(fetches[1], Some(first_batch_end));
    // Every record arrived, exactly once in ring order.
    let held: Vec<String> = target
        .data
        .store()
        .scan_arc(Id(low), Id(mid), None, usize::MAX, wall_ms())
        .unwrap()
        .into_iter()
        .map(|(_, record)| String::from_utf8(record.value).unwrap())
        .collect();
    assert_eq!(held, moved);
}

#[tokio::test]
async fn while_the_old_owner_cannot_be_asked_a_taking_over_member_answers_unavailable() {
    let f = fixture(vec![member(5, Some(5))]);
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = nowhere.local_addr().unwrap().to_string();
    drop(nowhere);
    f.data.pending.lock().unwrap().insert(
        Id(5),
        Pending {
            source: NodeRef::new(Id(9), closed),
        },
    );
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
