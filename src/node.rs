//! The runtime: one ring process on the network.
//!
//! [`run`] serves the `Ring`, `Api` and `grpc.health.v1.Health` services on
//! an already-bound listener and starts one *owner task* that holds the
//! process's [`Host`] state machine. Everything that touches protocol state
//! goes through that task's channel: requests from the gRPC handlers (with a
//! oneshot for the answer), answers to the host's own outbound requests,
//! and the stabilize and fix-fingers timers. No lock guards the ring state,
//! and the task never waits on the network: every outbound request runs in a
//! task of its own and comes back as an input.
//!
//! The node's identity (the ids of its virtual nodes) is kept in its data
//! directory, as are the addresses of the peers it last knew, so a restarted
//! process comes back as the same members and rejoins through them even when
//! its bootstrap node is gone.
//!
//! Shutdown is one signal: the node tells each member's neighbours it is
//! leaving, waits briefly for their acknowledgements, stops serving, and
//! returns.

use crate::chat::onion::OnionKey;
use crate::data::{Data, DataConfig, LocalMember, Membership};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::metrics::{GrpcMetricsLayer, Metrics};
use crate::replica::ReplicationConfig;
use crate::ring::{
    self, Action, Host, Input, LookupError, LookupOutcome, Notice, Request, Response,
};
use crate::rpc::{
    self, ApiService, DataService, MemberInfo, NodeApi, Pool, ProcessInfo, Relayer, RingService,
};
use crate::store::{RocksEngine, Store};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The address other processes use to reach this one (`host:port`).
    pub advertise: String,
    /// Addresses to join through, in order. Containing `advertise` means
    /// "start a new ring if nobody else answers".
    pub bootstrap: Vec<String>,
    pub vnodes: u32,
    pub ring: ring::Config,
    pub stabilize_interval: Duration,
    pub fix_fingers_interval: Duration,
    /// Deadline of every request to another process, health checks included.
    pub rpc_timeout: Duration,
    pub data_dir: PathBuf,
    /// Largest value accepted, in bytes.
    pub max_value: usize,
    /// `N`, `W`, `R` and anti-entropy.
    pub replication: ReplicationConfig,
    /// Where to serve the admin HTTP port (`/metrics`); none if `None`.
    pub admin: Option<std::net::SocketAddr>,
}

impl NodeConfig {
    /// Checks the configuration before anything starts.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::Config(message));
        rpc::validate_addr(&self.advertise)
            .map_err(|e| Error::Config(format!("--advertise: {e}")))?;
        for seed in &self.bootstrap {
            rpc::validate_addr(seed)
                .map_err(|e| Error::Config(format!("--bootstrap {seed}: {e}")))?;
        }
        if self.vnodes == 0 || self.vnodes > 256 {
            return invalid(format!(
                "--vnodes must be between 1 and 256, not {}",
                self.vnodes
            ));
        }
        if self.ring.successors < 2 || self.ring.successors > rpc::MAX_MEMBER_LIST {
            return invalid(format!(
                "--successors must be between 2 and {}, not {}",
                rpc::MAX_MEMBER_LIST,
                self.ring.successors
            ));
        }
        if self.stabilize_interval.is_zero() || self.fix_fingers_interval.is_zero() {
            return invalid("intervals must be longer than zero".into());
        }
        self.replication.validate().map_err(Error::Config)?;
        if self.max_value == 0 || self.max_value > MAX_VALUE_LIMIT {
            return invalid(format!(
                "--max-value-size must be between 1 byte and {} MiB",
                MAX_VALUE_LIMIT >> 20
            ));
        }
        Ok(())
    }
}

// ----- the data directory --------------------------------------------------

const IDENTITY_FILE: &str = "identity";
const PEERS_FILE: &str = "peers";
const ONION_KEY_FILE: &str = "onion.key";
const DATABASE_DIR: &str = "db";
/// The largest value limit a node may be configured with.
pub const MAX_VALUE_LIMIT: usize = 64 * 1024 * 1024;
/// How often expired records are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Opens the node's RocksDB database in its data directory.
pub fn open_store(data_dir: &Path) -> Result<Store<RocksEngine>> {
    let path = data_dir.join(DATABASE_DIR);
    let engine = RocksEngine::open(&path).map_err(|e| {
        let hint = if e.to_string().contains("lock") {
            "; is another chordal process using this --data-dir?"
        } else {
            ""
        };
        Error::Config(format!("cannot open {}: {e}{hint}", path.display()))
    })?;
    let started = std::time::Instant::now();
    let store = Store::new(engine)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let records = store.tree().root().count;
    if records > 0 {
        tracing::info!(
            "read {records} stored records into the digest tree in {}",
            humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
        );
    }
    Ok(store)
}

/// The ids of this node's virtual nodes: read from the data directory, or
/// derived from the advertised address and written there on first start.
pub fn load_or_create_identity(data_dir: &Path, advertise: &str, vnodes: u32) -> Result<Vec<Id>> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::Config(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (stored_addr, ids) = parse_identity(&text)
                .map_err(|e| Error::Config(format!("{} is damaged: {e}", path.display())))?;
            if ids.len() != vnodes as usize {
                return Err(Error::Config(format!(
                    "{} holds the identity of a node with {} virtual nodes, but {vnodes} were asked for; \
                     use --vnodes {} or a fresh --data-dir",
                    data_dir.display(),
                    ids.len(),
                    ids.len()
                )));
            }
            if stored_addr != advertise {
                tracing::warn!(
                    "data directory was created for {stored_addr}; now advertising {advertise} with the same ids"
                );
            }
            Ok(ids)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ids: Vec<Id> = (0..vnodes)
                .map(|index| Id::of_vnode(advertise, index))
                .collect();
            let mut text = String::from(
                "# chordal node identity: the ring ids of this node's virtual nodes\n",
            );
            text.push_str(&format!("advertise {advertise}\n"));
            for (index, id) in ids.iter().enumerate() {
                text.push_str(&format!("vnode {index} {id}\n"));
            }
            write_atomically(&path, &text)?;
            Ok(ids)
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn parse_identity(text: &str) -> std::result::Result<(String, Vec<Id>), String> {
    let mut advertise = None;
    let mut ids = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["advertise", addr] => advertise = Some(addr.to_string()),
            ["vnode", index, id] => {
                if index.parse::<usize>().ok() != Some(ids.len()) {
                    return Err(format!("vnode {index} out of order"));
                }
                ids.push(id.parse::<Id>().map_err(|e| format!("bad id {id}: {e}"))?);
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let advertise = advertise.ok_or("no advertise line")?;
    if ids.is_empty() {
        return Err("no vnode lines".into());
    }
    Ok((advertise, ids))
}

/// Peers this node knew when it last ran.
pub fn load_peers(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join(PEERS_FILE))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| rpc::validate_addr(line).is_ok())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn save_peers(data_dir: &Path, peers: &[String]) -> Result<()> {
    let mut text = peers.join("\n");
    text.push('\n');
    write_atomically(&data_dir.join(PEERS_FILE), &text)
}

/// The process's onion key for chat relays: read from the data directory,
/// or made and written there (readable by its owner only) on first start.
pub fn load_or_create_onion_key(data_dir: &Path) -> Result<OnionKey> {
    let path = data_dir.join(ONION_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hex = text.trim();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            let secret: [u8; 32] = bytes
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Config(format!("{} is not 64 hex digits", path.display())))?;
            Ok(OnionKey::from_secret(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = OnionKey::generate();
            let hex: String = key
                .secret_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let temporary = path.with_extension("tmp");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)?;
                writeln!(file, "{hex}")?;
            }
            std::fs::rename(&temporary, &path)?;
            Ok(key)
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// Client lookups one node runs at once.
const MAX_CLIENT_LOOKUPS: usize = 1024;

// ----- the owner task's interface -------------------------------------------

enum Command {
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

/// A cheap handle to a running node's owner task.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
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
        self.metrics.lookup_hops.observe(outcome.path.len() as f64);
        Ok(outcome)
    }

    async fn describe(&self) -> Result<ProcessInfo> {
        self.ask(|reply| Command::Describe { reply }).await
    }
}

// ----- running a node ---------------------------------------------------------

/// Runs a node on `listener` until `shutdown` completes, then leaves the ring
/// gracefully and returns.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let ids = load_or_create_identity(&config.data_dir, &config.advertise, config.vnodes)?;
    let mut seeds = config.bootstrap.clone();
    for peer in load_peers(&config.data_dir) {
        if !seeds.contains(&peer) {
            seeds.push(peer);
        }
    }
    let store = open_store(&config.data_dir)?;
    let host = Host::new(config.advertise.clone(), &ids, &seeds, config.ring.clone());

    let (commands, inbox) = mpsc::channel(4096);
    let metrics = Arc::new(Metrics::new());
    let handle = NodeHandle {
        commands: commands.clone(),
        metrics: metrics.clone(),
    };
    let (membership, members) = watch::channel(Membership::default());
    let data_config = DataConfig {
        replication: config.replication.clone(),
        ..DataConfig::new(config.max_value, config.rpc_timeout)
    };
    let data = Arc::new(
        Data::new(
            store,
            data_config,
            config.advertise.clone(),
            members,
            Arc::new(handle.clone()),
        )?
        .with_metrics(metrics.clone()),
    );
    // Far beyond one request: the rest of a circuit and a quorum write.
    let relay = Arc::new(Relayer::new(
        load_or_create_onion_key(&config.data_dir)?,
        config.rpc_timeout * 12,
    ));
    let (stop_maintenance, maintenance_stopping) = watch::channel(false);
    let maintenance = tokio::spawn(data.clone().run_maintenance(maintenance_stopping));
    let (health, health_service) = tonic_health::server::health_reporter();
    let (stop_serving, serving_stopped) = oneshot::channel::<()>();
    // Every inbound message is bounded: per service (see `rpc`), per
    // connection (concurrent requests and streams), and in header size.
    // There is no server-wide deadline: a hand-off stream may rightly run
    // for minutes; each handler bounds its own waiting instead.
    let server = tonic::transport::Server::builder()
        .layer(GrpcMetricsLayer::new(metrics.clone()))
        .concurrency_limit_per_connection(256)
        .max_concurrent_streams(256)
        .http2_max_header_list_size(16 * 1024)
        .tcp_nodelay(true)
        .add_service(health_service.max_decoding_message_size(rpc::MAX_HEALTH_MESSAGE))
        .add_service(RingService::server(handle.clone()))
        .add_service(ApiService::server(handle, data.clone(), relay))
        .add_service(DataService::server(data.clone()))
        // The builder's own tcp_nodelay applies only to listeners it binds:
        // accepted sockets need it set here, or Nagle's algorithm holds
        // each answer's last frames for the client's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(incoming(listener), async {
            serving_stopped.await.ok();
        });
    let server = tokio::spawn(server);
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin = match config.admin {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                Error::Config(format!("cannot listen on the admin address {addr}: {e}"))
            })?;
            tracing::info!(
                "admin port: dashboard at http://{addr}/, metrics at http://{addr}/metrics"
            );
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                data.clone(),
                config.advertise.clone(),
                async {
                    admin_stopped.await.ok();
                },
            )))
        }
        None => None,
    };

    let owner = Owner {
        host,
        pool: Arc::new(Pool::new(config.rpc_timeout)),
        commands,
        health,
        serving: HashSet::new(),
        process_serving: false,
        lookups: HashMap::new(),
        next_token: 1,
        saved_peers: Vec::new(),
        data,
        membership,
        config,
        metrics,
    };
    owner.run(inbox, shutdown).await;
    stop_admin.send(()).ok();
    if let Some(admin) = admin {
        admin.await.ok();
    }
    stop_maintenance.send(true).ok();
    maintenance.await.ok();
    stop_serving.send(()).ok();
    server
        .await
        .map_err(|e| Error::Unavailable(format!("server task failed: {e}")))??;
    Ok(())
}

/// A membership change in words, for the dashboard's list of events;
/// `None` for the routine ones (failed join attempts are logged instead).
fn membership_event(notice: &Notice) -> Option<String> {
    Some(match notice {
        Notice::Created { member } => format!("{member} started a new ring"),
        Notice::Joined {
            member, successor, ..
        } => format!("{member} joined before {successor}"),
        Notice::SuccessorChanged { member, to, .. } => {
            format!("{member}: successor is now {to}")
        }
        Notice::PredecessorChanged { member, to, .. } => match to {
            Some(to) => format!("{member}: predecessor is now {to}"),
            None => format!("{member}: predecessor forgotten"),
        },
        Notice::SuccessorDead { member, dead } => {
            format!("{member}: successor {dead} presumed dead")
        }
        Notice::Orphaned { member } => {
            format!("{member}: every known successor dead, rejoining")
        }
        Notice::JoinFailed { .. } => return None,
    })
}

/// Connections accepted on `listener`, with Nagle's algorithm off.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

struct Owner {
    metrics: Arc<Metrics>,
    host: Host,
    pool: Arc<Pool>,
    commands: mpsc::Sender<Command>,
    health: HealthReporter,
    /// Members currently reported SERVING to health checks.
    serving: HashSet<Id>,
    /// Whether the process is reported SERVING.
    process_serving: bool,
    lookups: HashMap<u64, oneshot::Sender<Result<LookupOutcome, LookupError>>>,
    next_token: u64,
    saved_peers: Vec<String>,
    data: Arc<Data>,
    /// What the data layer sees of the local members.
    membership: watch::Sender<Membership>,
    config: NodeConfig,
}

impl Owner {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>, shutdown: impl Future<Output = ()>) {
        self.serve(&mut inbox, shutdown).await;
        // Hand the arcs over while still answering the ring and clients.
        let data = self.data.clone();
        self.serve(&mut inbox, data.hand_off_on_leave()).await;
        self.leave(&mut inbox).await;
    }

    /// Runs the protocol until `until` completes.
    async fn serve(
        &mut self,
        inbox: &mut mpsc::Receiver<Command>,
        until: impl Future<Output = ()>,
    ) {
        // Timers with ±20% jitter: two processes whose ticks fell together
        // would otherwise query each other while both are busy, and answer
        // each other `Pending`, on every tick for ever.
        let jittered = |period: Duration| {
            let factor = 0.8 + rand::random::<f64>() * 0.4;
            tokio::time::Instant::now() + period.mul_f64(factor)
        };
        let stabilize = tokio::time::sleep(Duration::ZERO);
        let fix_fingers = tokio::time::sleep_until(jittered(self.config.fix_fingers_interval));
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stabilize, fix_fingers, until);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = &mut until => break,
                Some(command) = inbox.recv() => self.on_command(command),
                _ = &mut stabilize => {
                    stabilize.as_mut().reset(jittered(self.config.stabilize_interval));
                    self.host.step(Input::StabilizeTick);
                    self.metrics.stabilize_rounds.inc();
                    ticks += 1;
                    if ticks % 20 == 0 {
                        self.save_peers();
                    }
                }
                _ = &mut fix_fingers => {
                    fix_fingers.as_mut().reset(jittered(self.config.fix_fingers_interval));
                    self.host.step(Input::FixFingersTick);
                }
                _ = purge.tick() => {
                    let data = self.data.clone();
                    tokio::task::spawn_blocking(move || data.purge_expired());
                }
            }
            self.dispatch().await;
        }
    }

    async fn leave(&mut self, inbox: &mut mpsc::Receiver<Command>) {
        tracing::info!("leaving the ring");
        self.save_peers();
        self.host.leave();
        self.dispatch().await;
        let deadline = tokio::time::Instant::now() + self.config.rpc_timeout * 2;
        while !self.host.leave_complete() {
            tokio::select! {
                Some(command) = inbox.recv() => self.on_command(command),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("some neighbours did not acknowledge the leave in time");
                    break;
                }
            }
            self.dispatch().await;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                member,
                request,
                reply,
            } => {
                let response = self.host.handle_request(member, request);
                reply.send(response).ok();
            }
            Command::Lookup { target, reply } => {
                // Callers that gave up are forgotten; a flood of lookups is
                // refused rather than queued without bound.
                self.lookups.retain(|_, waiting| !waiting.is_closed());
                if self.lookups.len() >= MAX_CLIENT_LOOKUPS {
                    let busy = LookupError::Busy(MAX_CLIENT_LOOKUPS);
                    reply.send(Err(busy)).ok();
                    return;
                }
                let token = self.next_token;
                self.next_token += 1;
                self.lookups.insert(token, reply);
                self.host.start_lookup(target, token);
            }
            Command::Describe { reply } => {
                reply.send(self.describe()).ok();
            }
            Command::Answer(input) => self.host.step(input),
        }
    }

    fn describe(&self) -> ProcessInfo {
        ProcessInfo {
            addr: self.host.addr().to_string(),
            members: self
                .host
                .members()
                .iter()
                .map(|m| MemberInfo {
                    me: m.me().clone(),
                    joined: m.is_joined(),
                    predecessor: m.predecessor().cloned(),
                    successors: m.successors().to_vec(),
                    fingers: m.fingers_in_use(),
                    owned_records: 0,
                    replicas: Vec::new(),
                })
                .collect(),
            ..ProcessInfo::default()
        }
    }

    /// Carries out what the state machine asked for.
    async fn dispatch(&mut self) {
        for action in self.host.take_actions() {
            match action {
                Action::Send(outgoing) => {
                    tracing::trace!(to = %outgoing.to, member = ?outgoing.member, request = ?outgoing.request, "request out");
                    let pool = self.pool.clone();
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        let input = match pool.call(&outgoing).await {
                            Ok(response) => Input::Reply {
                                id: outgoing.id,
                                response,
                            },
                            Err(status) => {
                                tracing::debug!(to = %outgoing.to, "request failed: {}", status.message());
                                Input::Failed { id: outgoing.id }
                            }
                        };
                        commands.send(Command::Answer(input)).await.ok();
                    });
                }
                Action::LookupDone { token, result } => {
                    if let Some(reply) = self.lookups.remove(&token) {
                        reply.send(result).ok();
                    }
                }
                Action::Notice(notice) => {
                    if let Notice::Joined {
                        member,
                        successor,
                        before,
                    } = &notice
                    {
                        self.data
                            .take_over(member.clone(), successor.clone(), before.clone());
                    }
                    self.log_notice(notice)
                }
            }
        }
        self.publish_membership();
        self.update_health().await;
    }

    /// Shows the data layer the local members as they are now.
    fn publish_membership(&self) {
        let members: Vec<LocalMember> = self
            .host
            .members()
            .iter()
            .map(|m| LocalMember {
                me: m.me().clone(),
                joined: m.is_joined(),
                predecessor: m.predecessor().cloned(),
                successors: m.successors().to_vec(),
            })
            .collect();
        self.membership.send_if_modified(|current| {
            let changed = **current != members;
            if changed {
                *current = Arc::new(members);
            }
            changed
        });
    }

    fn log_notice(&self, notice: Notice) {
        let first_member = self.host.members().first().map(|m| m.id());
        if let Some(event) = membership_event(&notice) {
            self.metrics.events.push(event);
        }
        match notice {
            Notice::Created { member } => tracing::info!(%member, "started a new ring"),
            Notice::Joined {
                member, successor, ..
            } => {
                tracing::info!(%member, %successor, "joined the ring")
            }
            Notice::JoinFailed {
                member,
                error,
                retry_in_ticks,
            } => {
                let wait = self.config.stabilize_interval * retry_in_ticks;
                // One line per attempt, not one per virtual node.
                if Some(member) == first_member {
                    tracing::warn!(
                        "cannot join the ring: {error}; retrying in {}",
                        humantime::format_duration(wait)
                    );
                } else {
                    tracing::debug!(%member, "cannot join the ring: {error}");
                }
            }
            Notice::SuccessorChanged { member, from, to } => {
                tracing::debug!(%member, from = ?from, %to, "successor changed")
            }
            Notice::PredecessorChanged { member, from, to } => {
                tracing::debug!(%member, from = ?from, to = ?to, "predecessor changed")
            }
            Notice::SuccessorDead { member, dead } => {
                tracing::info!(%member, %dead, "successor presumed dead")
            }
            Notice::Orphaned { member } => {
                tracing::warn!(%member, "every known successor is dead; rejoining through the bootstrap nodes")
            }
        }
    }

    /// Reports each joined member SERVING to gRPC health checks, and every
    /// other member NOT_SERVING; the process ([`rpc::PROCESS_HEALTH`]) is
    /// SERVING while any of its members is in the ring.
    async fn update_health(&mut self) {
        let any_joined = self.host.members().iter().any(|m| m.is_joined());
        if any_joined != self.process_serving {
            let status = if any_joined {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            self.health
                .set_service_status(rpc::PROCESS_HEALTH, status)
                .await;
            self.process_serving = any_joined;
        }
        for member in self.host.members() {
            let joined = member.is_joined();
            if joined == self.serving.contains(&member.id()) {
                continue;
            }
            let status = if joined {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            self.health
                .set_service_status(rpc::member_health_name(member.id()), status)
                .await;
            if joined {
                self.serving.insert(member.id());
            } else {
                self.serving.remove(&member.id());
            }
        }
    }

    fn save_peers(&mut self) {
        let peers = self.host.known_addrs();
        if peers.is_empty() || peers == self.saved_peers {
            return;
        }
        match save_peers(&self.config.data_dir, &peers) {
            Ok(()) => self.saved_peers = peers,
            Err(e) => tracing::warn!(
                "cannot save known peers in {}: {e}",
                self.config.data_dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rpc::pb;
    use tonic::Code;

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
        let config = NodeConfig {
            advertise: addr.clone(),
            bootstrap: vec![addr.clone()],
            vnodes: 2,
            ring: ring::Config::default(),
            stabilize_interval: Duration::from_millis(50),
            fix_fingers_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_millis(500),
            data_dir: dir.to_path_buf(),
            max_value: 1024,
            replication: ReplicationConfig::default(),
            admin: None,
        };
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
        let first = load_or_create_identity(dir.path(), "127.0.0.1:1", 3).unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], Id::of_vnode("127.0.0.1:1", 0));
        // Same directory, other address: the stored ids win.
        let again = load_or_create_identity(dir.path(), "127.0.0.1:2", 3).unwrap();
        assert_eq!(first, again);
        let error = load_or_create_identity(dir.path(), "127.0.0.1:1", 4).unwrap_err();
        assert!(error.to_string().contains("--vnodes 3"), "{error}");
    }

    #[test]
    fn a_damaged_identity_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            "advertise a:1\nvnode 0 nothex\n",
        )
        .unwrap();
        let error = load_or_create_identity(dir.path(), "a:1", 1).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    #[test]
    fn peers_round_trip_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        save_peers(dir.path(), &["a:1".to_string(), "b:2".to_string()]).unwrap();
        assert_eq!(load_peers(dir.path()), vec!["a:1", "b:2"]);
        std::fs::write(dir.path().join(PEERS_FILE), "a:1\nnot an address\n").unwrap();
        assert_eq!(load_peers(dir.path()), vec!["a:1"]);
    }
}
