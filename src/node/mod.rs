//! The runtime: one ring process on the network, wired from the layers
//! below it and stopped as one.
//!
//! Depends on everything below it (`rpc`, `data`, `ring`, `store`, ...) and
//! on nothing above (`ops`, `chat`, `cmd`). [`Node::start`] opens the data
//! directory ([`data_dir`]), builds the data layer over the gRPC peers and
//! the ring task's router, serves the `Ring`, `Api`, `Data` and
//! `grpc.health.v1.Health` services on an already-bound listener, and
//! starts the ring task (`ring_task`) that owns the process's protocol
//! state. [`Node::run_until`] runs it until a shutdown signal.
//!
//! Shutdown is one signal, in order: hand each member's arc to its
//! successor while still answering, tell each member's neighbours it is
//! leaving and wait briefly for their acknowledgements, stop the data
//! layer's tasks and wait for them, stop serving, and wait for every
//! request still in flight. Nothing the node spawned outlives [`Node::run_until`].

mod config;
pub mod data_dir;
mod ring_task;
mod stats;

pub use config::NodeConfig;
pub use stats::{Events, NodeStats};

use crate::clock::Clock;
use crate::data::{DataConfig, DataNode, Membership, ProcessInfo, Router, Wiring};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ring::{Host, Input, LookupError, LookupOutcome, Request, Response};
use crate::rpc::{
    self, ApiService, DataClient, DataService, GrpcMetricsLayer, NodeApi, Pool, Relayer,
    RequestStats, RingService,
};
use crate::store::SharedEngine;
use ring_task::RingTask;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// The largest value limit a node may be configured with.
pub const MAX_VALUE_LIMIT: usize = 64 * 1024 * 1024;
/// How often expired records are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
const MAX_CLIENT_LOOKUPS: usize = 1024;

// ----- the ring task's interface -------------------------------------------

pub(crate) enum Command {
    Request {
        member: Option<Id>,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    Lookup {
        target: Id,
        reply: oneshot::Sender<Result<LookupOutcome, LookupError>>,
    },
    Describe {
        reply: oneshot::Sender<ProcessInfo>,
    },
    Answer(Input),
}

/// A cheap handle to a running node's ring task.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    stats: Arc<NodeStats>,
}

impl NodeHandle {
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Unavailable("this node is shutting down".into());
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

#[tonic::async_trait]
impl NodeApi for NodeHandle {
    async fn request(&self, member: Option<Id>, request: Request) -> Result<Response> {
        tracing::trace!(?member, ?request, "request in");
        self.ask(|reply| Command::Request {
            member,
            request,
            reply,
        })
        .await
    }

    async fn lookup(&self, target: Id) -> Result<LookupOutcome> {
        let outcome = self
            .ask(|reply| Command::Lookup { target, reply })
            .await?
            .map_err(|e| Error::Unavailable(format!("lookup of {target} failed: {e}")))?;
        self.stats.lookup_hops.observe(outcome.path.len() as f64);
        Ok(outcome)
    }

    async fn describe(&self) -> Result<ProcessInfo> {
        self.ask(|reply| Command::Describe { reply }).await
    }
}

#[async_trait::async_trait]
impl Router for NodeHandle {
    async fn lookup(&self, target: Id) -> Result<LookupOutcome> {
        NodeApi::lookup(self, target).await
    }
}

// ----- running a node ---------------------------------------------------------

/// A node that serves and runs its protocol, until [`Node::run_until`]'s
/// signal.
pub struct Node {
    ring_task: RingTask,
    inbox: mpsc::Receiver<Command>,
    data: Arc<DataNode>,
    stats: Arc<NodeStats>,
    requests: Arc<RequestStats>,
    stop_serving: oneshot::Sender<()>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl Node {
    /// Opens the data directory and starts serving on `listener`.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node> {
        config.validate()?;
        let ids =
            data_dir::load_or_create_identity(&config.data_dir, &config.advertise, config.vnodes)?;
        let mut seeds = config.bootstrap.clone();
        for peer in data_dir::load_peers(&config.data_dir) {
            if !seeds.contains(&peer) {
                seeds.push(peer);
            }
        }
        let store = data_dir::open_store(&config.data_dir)?;
        data_dir::write_address(&config.data_dir, &config.advertise)?;
        let hints: SharedEngine = Arc::new(store.engine().hints());
        let store = store.into_shared();
        let host = Host::new(config.advertise.clone(), &ids, &seeds, config.ring.clone());

        let (commands, inbox) = mpsc::channel(4096);
        let stats = Arc::new(NodeStats::default());
        let requests = Arc::new(RequestStats::default());
        let handle = NodeHandle {
            commands: commands.clone(),
            stats: stats.clone(),
        };
        // One pool of connections for every call to another process.
        let pool = Arc::new(Pool::new(config.rpc_timeout));
        let (membership, members) = watch::channel(Membership::default());
        let data_config = DataConfig {
            replication: config.replication.clone(),
            ..DataConfig::new(config.max_value, config.rpc_timeout)
        };
        let peers = DataClient::new(pool.clone(), data_config.max_message());
        let data = Arc::new(DataNode::new(
            store,
            hints,
            data_config,
            Wiring {
                addr: config.advertise.clone(),
                members,
                router: Arc::new(handle.clone()),
                peers: Arc::new(peers),
                clock: Clock::System,
                seed: rand::random(),
            },
        )?);
        // Far beyond one request: the rest of a circuit and a quorum write.
        let relay = Arc::new(Relayer::new(
            data_dir::load_or_create_onion_key(&config.data_dir)?,
            pool.clone(),
            config.rpc_timeout * 12,
        ));
        data.start_maintenance();
        let (health, health_service) = tonic_health::server::health_reporter();
        let (stop_serving, serving_stopped) = oneshot::channel::<()>();
        // Every inbound message is bounded: per service (see `rpc`), per
        // connection (concurrent requests and streams), and in header size.
        // There is no server-wide deadline: a hand-off stream may rightly run
        // for minutes; each handler bounds its own waiting instead.
        let server = tonic::transport::Server::builder()
            .layer(GrpcMetricsLayer::new(requests.clone()))
            .concurrency_limit_per_connection(256)
            .max_concurrent_streams(256)
            .http2_max_header_list_size(16 * 1024)
            .tcp_nodelay(true)
            .add_service(health_service.max_decoding_message_size(rpc::MAX_HEALTH_MESSAGE))
            .add_service(RingService::server(handle.clone()))
            .add_service(ApiService::server(handle, data.clone(), relay))
            .add_service(DataService::server(data.clone()))
            .serve_with_incoming_shutdown(rpc::incoming(listener), async {
                serving_stopped.await.ok();
            });
        let server = tokio::spawn(server);
        let ring_task = RingTask {
            host,
            pool,
            commands,
            health,
            serving: HashSet::new(),
            process_serving: false,
            lookups: HashMap::new(),
            next_token: 1,
            saved_peers: Vec::new(),
            data: data.clone(),
            spawned: TaskTracker::new(),
            membership,
            config,
            stats: stats.clone(),
        };
        Ok(Node {
            ring_task,
            inbox,
            data,
            stats,
            requests,
            stop_serving,
            server,
        })
    }

    /// The node's data layer.
    pub fn data(&self) -> &Arc<DataNode> {
        &self.data
    }

    /// What the ring side counts.
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// Requests served, by method and status.
    pub fn requests(&self) -> &Arc<RequestStats> {
        &self.requests
    }

    /// Runs the node until `shutdown` completes, then leaves the ring
    /// gracefully, stops everything it started and waits for it.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Node {
            ring_task,
            inbox,
            data,
            stop_serving,
            server,
            ..
        } = self;
        let spawned = ring_task.spawned.clone();
        ring_task.run(inbox, shutdown).await;
        data.stop().await;
        stop_serving.send(()).ok();
        let served = server
            .await
            .map_err(|e| Error::Unavailable(format!("server task failed: {e}")))?;
        spawned.close();
        spawned.wait().await;
        served.map_err(rpc::transport_error)
    }
}

/// Runs a node on `listener` until `shutdown` completes, then leaves the ring
/// gracefully and returns.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    Node::start(config, listener)
        .await?
        .run_until(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::replica::ReplicationConfig;
    use crate::ring;
    use crate::rpc::pb;
    use std::path::Path;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tonic::Code;

    /// A node at `addr` that starts its own ring, with fast timers.
    pub(super) fn test_config(dir: &Path, addr: &str) -> NodeConfig {
        NodeConfig {
            advertise: addr.to_string(),
            bootstrap: vec![addr.to_string()],
            vnodes: 2,
            ring: ring::Config::default(),
            stabilize_interval: Duration::from_millis(50),
            fix_fingers_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_millis(500),
            data_dir: dir.to_path_buf(),
            max_value: 1024,
            replication: ReplicationConfig::default(),
        }
    }

    /// A node on an ephemeral loopback port, started in this process.
    async fn start_node(
        dir: &Path,
    ) -> (
        String,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = test_config(dir, &addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listener, async {
            stopped.await.ok();
        }));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn hostile_and_malformed_messages_get_clear_errors_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, stop, task) = start_node(dir.path()).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut ring = pb::ring_client::RingClient::new(channel.clone());
        let mut api = pb::api_client::ApiClient::new(channel.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = api
            .describe(pb::DescribeRequest {})
            .await
            .unwrap()
            .into_inner();
        let member = before.members[0].member.clone().unwrap().id;

        // A notification from a malformed address.
        let bad_from = pb::NotifyRequest {
            member,
            from: Some(pb::Member {
                id: 7,
                addr: "not an address".into(),
            }),
        };
        assert_eq!(
            ring.notify(bad_from).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let missing_from = pb::NotifyRequest { member, from: None };
        assert_eq!(
            ring.notify(missing_from).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        // A message far over the ring's size bound.
        let huge = pb::NotifyRequest {
            member,
            from: Some(pb::Member {
                id: 7,
                addr: "a".repeat(100_000),
            }),
        };
        let status = ring.notify(huge).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        // Keys: empty and oversized.
        let empty = api
            .lookup(pb::LookupRequest { key: vec![] })
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        let long = api
            .lookup(pb::LookupRequest {
                key: vec![b'k'; 1025],
            })
            .await
            .unwrap_err();
        assert_eq!(long.code(), Code::InvalidArgument);
        // A member id nobody has.
        let stranger = ring
            .get_state(pb::MemberRequest { member: member ^ 1 })
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            stranger.answer,
            Some(pb::state_reply::Answer::NotMember(_))
        ));
        // Api and Data messages past their bound: 256 KiB + 2 x the value
        // limit (1 KiB here) + 64 KiB. A value over the limit but inside
        // the bound is refused by the value check instead.
        let oversized = |len: usize| pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![b'v'; len],
            ..Default::default()
        };
        let status = api.put(oversized(400 * 1024)).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        let status = api.put(oversized(2 * 1024)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let mut data = pb::data_client::DataClient::new(channel.clone());
        let record = pb::StoredRecord {
            key: b"k".to_vec(),
            version: Some(pb::Version {
                clock: 1,
                writer: 1,
            }),
            value: vec![b'v'; 400 * 1024],
            ..Default::default()
        };
        let status = data
            .replicate(pb::ReplicateRequest {
                records: vec![record],
                hint_for: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        // Watch: a room location is 32 bytes; at most 1,000 messages of
        // history.
        for (room, history) in [
            (vec![1u8; 33], 10),
            (vec![1u8; 31], 10),
            (vec![1u8; 32], 1001),
        ] {
            let status = api
                .watch(pb::WatchRequest {
                    room,
                    since_ms: 0,
                    history,
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        // A health request over 1 KiB, next to one that fits.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let check = |service: String| tonic_health::pb::HealthCheckRequest { service };
        health.check(check(String::new())).await.unwrap();
        let status = health.check(check("s".repeat(2048))).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{status:?}"
        );
        // Headers over 16 KiB: the request is refused, the node goes on.
        let mut request = tonic::Request::new(pb::DescribeRequest {});
        request
            .metadata_mut()
            .insert("x-padding", "p".repeat(20 * 1024).parse().unwrap());
        assert!(api.describe(request).await.is_err());
        let mut api = pb::api_client::ApiClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        // Raw garbage on the socket.
        {
            use tokio::io::AsyncWriteExt;
            let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
            socket
                .write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(4096))
                .await
                .ok();
        }

        // The node still serves, and its ring state is untouched.
        let after = api
            .describe(pb::DescribeRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(before.members.len(), after.members.len());
        for (b, a) in before.members.iter().zip(&after.members) {
            assert_eq!(b.predecessor, a.predecessor);
            assert_eq!(b.successors, a.successors);
        }
        let found = api
            .lookup(pb::LookupRequest {
                key: b"still here".to_vec(),
            })
            .await
            .unwrap();
        assert!(found.into_inner().owner.is_some());
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn identity_survives_a_restart_and_refuses_a_different_vnode_count() {
        let dir = tempfile::tempdir().unwrap();
        let first = data_dir::load_or_create_identity(dir.path(), "127.0.0.1:1", 3).unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], Id::of_vnode("127.0.0.1:1", 0));
        // Same directory, other address: the stored ids win.
        let again = data_dir::load_or_create_identity(dir.path(), "127.0.0.1:2", 3).unwrap();
        assert_eq!(first, again);
        let error = data_dir::load_or_create_identity(dir.path(), "127.0.0.1:1", 4).unwrap_err();
        assert!(error.to_string().contains("--vnodes 3"), "{error}");
    }

    #[test]
    fn the_onion_key_is_readable_by_its_owner_only_and_kept_across_restarts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = data_dir::load_or_create_onion_key(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("onion.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let again = data_dir::load_or_create_onion_key(dir.path()).unwrap();
        assert_eq!(first.public(), again.public());
        std::fs::write(dir.path().join("onion.key"), "not a key\n").unwrap();
        let Err(error) = data_dir::load_or_create_onion_key(dir.path()) else {
            panic!("a damaged key is taken");
        };
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }

    #[test]
    fn a_damaged_identity_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("identity"),
            "advertise a:1\nvnode 0 nothex\n",
        )
        .unwrap();
        let error = data_dir::load_or_create_identity(dir.path(), "a:1", 1).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    #[test]
    fn peers_round_trip_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        data_dir::save_peers(dir.path(), &["a:1".to_string(), "b:2".to_string()]).unwrap();
        assert_eq!(data_dir::load_peers(dir.path()), vec!["a:1", "b:2"]);
        std::fs::write(dir.path().join("peers"), "a:1\nnot an address\n").unwrap();
        assert_eq!(data_dir::load_peers(dir.path()), vec!["a:1"]);
    }
}
