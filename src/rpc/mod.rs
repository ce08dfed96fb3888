//! The network edge: the only module that sees protobuf types.
//!
//! Inbound, the tonic services here validate every message (sizes, list
//! lengths, address syntax) and turn it into a domain [`Request`] for the
//! node's owner task; a message that breaks a bound gets `INVALID_ARGUMENT`
//! and never reaches the protocol. Outbound, [`Pool`] keeps one HTTP/2
//! channel per peer address and turns each [`Outgoing`] request of the state
//! machine into the right call, validating the answer just as strictly: a
//! hostile or broken peer's reply counts as no reply.
//!
//! Liveness is the standard `grpc.health.v1.Health/Check`, served by
//! tonic-health with one service name per member
//! ([`member_health_name`]), so any gRPC health tool can probe a member.

use crate::data::{Data, ReplicaHealth, RoundReport, Value, Written};
use crate::id::Id;
use crate::ring::{LookupOutcome, NodeRef, Outgoing, Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[allow(clippy::all, missing_docs)]
pub(crate) mod pb {
    tonic::include_proto!("chordal.v1");
}

mod data;
mod relay;

pub use data::{stream_baseline, DataPeer, DataService, FetchStream};
pub use relay::{failed_relay, Relayer};

pub(crate) use pb::api_client::ApiClient;
pub(crate) use pb::ring_client::RingClient;

/// Longest accepted `host:port` address, in bytes.
pub const MAX_ADDR_LEN: usize = 255;
/// Longest accepted list of members in any message.
pub const MAX_MEMBER_LIST: usize = 64;
/// Longest accepted user key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Most peer channels kept open at once.
pub const MAX_POOLED_CHANNELS: usize = 1024;
/// Largest health check request accepted (a service name).
pub const MAX_HEALTH_MESSAGE: usize = 1024;
/// Largest answer a command-line client accepts.
pub const MAX_CLIENT_MESSAGE: usize = 256 * 1024 * 1024;
/// Largest message a ring peer may send (they are all small).
pub const MAX_RING_MESSAGE: usize = 64 * 1024;

/// The gRPC health service name under which a member reports itself.
/// The health service name of a whole process: SERVING while any of its
/// members is in the ring (what a container's health check asks).
pub const PROCESS_HEALTH: &str = "chordal";

/// Asks `addr` for the gRPC health status of `service`; true if SERVING.
pub async fn check_health(addr: &str, service: &str, timeout: Duration) -> crate::Result<bool> {
    validate_addr(addr).map_err(crate::Error::InvalidArgument)?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| crate::Error::Unavailable(format!("cannot connect to {addr}: {e}")))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(reply.into_inner().status == ServingStatus::Serving as i32)
}

pub fn member_health_name(id: Id) -> String {
    format!("chordal.member.{id}")
}

// ----- validation and conversion ---------------------------------------------

/// Checks that `addr` looks like `host:port`: bounded, printable, no spaces,
/// a numeric port.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return Err(format!("address must be 1 to {MAX_ADDR_LEN} bytes long"));
    }
    if !addr.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("address must be printable ASCII without spaces".into());
    }
    let (host, port) = addr.rsplit_once(':').ok_or("address must be host:port")?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "address {addr:?} must be host:port with a numeric port"
        ));
    }
    Ok(())
}

pub(crate) fn member_to_pb(node: &NodeRef) -> pb::Member {
    pb::Member {
        id: node.id.0,
        addr: node.addr.clone(),
    }
}

pub(crate) fn member_from_pb(member: Option<pb::Member>, field: &str) -> Result<NodeRef, Status> {
    let member = member.ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    validate_addr(&member.addr).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
    Ok(NodeRef::new(Id(member.id), member.addr))
}

fn members_from_pb(members: Vec<pb::Member>, field: &str) -> Result<Vec<NodeRef>, Status> {
    if members.len() > MAX_MEMBER_LIST {
        return Err(Status::invalid_argument(format!(
            "{field} has more than {MAX_MEMBER_LIST} entries"
        )));
    }
    members
        .into_iter()
        .map(|m| member_from_pb(Some(m), field))
        .collect()
}

fn members_to_pb(members: &[NodeRef]) -> Vec<pb::Member> {
    members.iter().map(member_to_pb).collect()
}

fn find_reply(response: Response) -> pb::FindStepReply {
    use pb::find_step_reply::Answer;
    let answer = match response {
        Response::Found {
            predecessor,
            successors,
        } => Answer::Found(pb::Found {
            predecessor: Some(member_to_pb(&predecessor)),
            successors: members_to_pb(&successors),
        }),
        Response::Closer { candidates } => Answer::Closer(pb::Closer {
            candidates: members_to_pb(&candidates),
        }),
        _ => Answer::NotMember(pb::NotMember {}),
    };
    pb::FindStepReply {
        answer: Some(answer),
    }
}

fn find_reply_from_pb(reply: pb::FindStepReply) -> Result<Response, Status> {
    use pb::find_step_reply::Answer;
    match reply.answer {
        Some(Answer::Found(found)) => {
            let successors = members_from_pb(found.successors, "successors")?;
            if successors.is_empty() {
                return Err(Status::invalid_argument("found without successors"));
            }
            Ok(Response::Found {
                predecessor: member_from_pb(found.predecessor, "predecessor")?,
                successors,
            })
        }
        Some(Answer::Closer(closer)) => Ok(Response::Closer {
            candidates: members_from_pb(closer.candidates, "candidates")?,
        }),
        Some(Answer::NotMember(_)) => Ok(Response::NotMember),
        None => Err(Status::invalid_argument("empty find-step answer")),
    }
}

fn state_reply(response: Response) -> pb::StateReply {
    use pb::state_reply::Answer;
    let answer = match response {
        Response::State {
            predecessor,
            successors,
        } => Answer::State(pb::State {
            predecessor: predecessor.as_ref().map(member_to_pb),
            successors: members_to_pb(&successors),
        }),
        Response::Pending => Answer::Pending(pb::Pending {}),
        _ => Answer::NotMember(pb::NotMember {}),
    };
    pb::StateReply {
        answer: Some(answer),
    }
}

fn state_reply_from_pb(reply: pb::StateReply) -> Result<Response, Status> {
    use pb::state_reply::Answer;
    match reply.answer {
        Some(Answer::State(state)) => Ok(Response::State {
            predecessor: state
                .predecessor
                .map(|p| member_from_pb(Some(p), "predecessor"))
                .transpose()?,
            successors: members_from_pb(state.successors, "successors")?,
        }),
        Some(Answer::Pending(_)) => Ok(Response::Pending),
        Some(Answer::NotMember(_)) => Ok(Response::NotMember),
        None => Err(Status::invalid_argument("empty state answer")),
    }
}

fn ack(response: Response) -> pb::Ack {
    pb::Ack {
        member_known: response == Response::Ack,
    }
}

fn ack_from_pb(ack: pb::Ack) -> Response {
    if ack.member_known {
        Response::Ack
    } else {
        Response::NotMember
    }
}

/// A member's full routing state, as `Describe` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub me: NodeRef,
    pub joined: bool,
    pub predecessor: Option<NodeRef>,
    pub successors: Vec<NodeRef>,
    pub fingers: Vec<NodeRef>,
    /// Records in the member's arc.
    pub owned_records: u64,
    /// The other processes holding its arc, and the last rounds with them.
    pub replicas: Vec<ReplicaHealth>,
}

/// One process as `Describe` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub addr: String,
    pub members: Vec<MemberInfo>,
    /// Records stored, owned and replicas, tombstones included.
    pub records: u64,
    /// Writes held for replicas that could not be reached.
    pub hints: u64,
    /// `N`, `W` and `R` as this node is configured.
    pub replicas: u32,
    pub write_quorum: u32,
    pub read_quorum: u32,
    /// The process's onion key, for chat relays.
    pub onion_key: Option<[u8; 32]>,
}

// ----- inbound services -------------------------------------------------------

/// What the services need from the node: a way to put a request to the
/// owner of the protocol state and wait for its answer.
#[tonic::async_trait]
pub trait NodeApi: Send + Sync + 'static {
    async fn request(&self, member: Option<Id>, request: Request)
        -> Result<Response, crate::Error>;
    async fn lookup(&self, target: Id) -> Result<LookupOutcome, crate::Error>;
    async fn describe(&self) -> Result<ProcessInfo, crate::Error>;
}

/// The ring service, between members.
pub struct RingService<N> {
    node: N,
}

impl<N: NodeApi> RingService<N> {
    pub fn server(node: N) -> pb::ring_server::RingServer<RingService<N>> {
        pb::ring_server::RingServer::new(RingService { node })
            .max_decoding_message_size(MAX_RING_MESSAGE)
    }
}

#[tonic::async_trait]
impl<N: NodeApi> pb::ring_server::Ring for RingService<N> {
    async fn find_step(
        &self,
        request: tonic::Request<pb::FindStepRequest>,
    ) -> Result<tonic::Response<pb::FindStepReply>, Status> {
        let target = Id(request.into_inner().target);
        let response = self
            .node
            .request(None, Request::FindStep { target })
            .await?;
        Ok(tonic::Response::new(find_reply(response)))
    }

    async fn get_state(
        &self,
        request: tonic::Request<pb::MemberRequest>,
    ) -> Result<tonic::Response<pb::StateReply>, Status> {
        let member = Id(request.into_inner().member);
        let response = self.node.request(Some(member), Request::GetState).await?;
        Ok(tonic::Response::new(state_reply(response)))
    }

    async fn notify(
        &self,
        request: tonic::Request<pb::NotifyRequest>,
    ) -> Result<tonic::Response<pb::Ack>, Status> {
        let request = request.into_inner();
        let from = member_from_pb(request.from, "from")?;
        let response = self
            .node
            .request(Some(Id(request.member)), Request::Notify { from })
            .await?;
        Ok(tonic::Response::new(ack(response)))
    }

    async fn leaving(
        &self,
        request: tonic::Request<pb::LeavingRequest>,
    ) -> Result<tonic::Response<pb::Ack>, Status> {
        let request = request.into_inner();
        let leaving = member_from_pb(request.leaving, "leaving")?;
        let response = self
            .node
            .request(Some(Id(request.member)), Request::Leaving { leaving })
            .await?;
        Ok(tonic::Response::new(ack(response)))
    }
}

/// The service for clients and operators.
pub struct ApiService<N> {
    node: N,
    data: Arc<Data>,
    relay: Arc<relay::Relayer>,
}

impl<N: NodeApi> ApiService<N> {
    /// Accepts puts of up to twice the value limit, so that an oversized
    /// value gets a clear INVALID_ARGUMENT rather than a cut connection.
    pub fn server(
        node: N,
        data: Arc<Data>,
        relay: Arc<relay::Relayer>,
    ) -> pb::api_server::ApiServer<ApiService<N>> {
        let limit = data.config().max_message();
        pb::api_server::ApiServer::new(ApiService { node, data, relay })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl<N: NodeApi> pb::api_server::Api for ApiService<N> {
    async fn lookup(
        &self,
        request: tonic::Request<pb::LookupRequest>,
    ) -> Result<tonic::Response<pb::LookupReply>, Status> {
        let key = request.into_inner().key;
        validate_key(&key)?;
        let outcome = self.node.lookup(Id::of_key(&key)).await?;
        Ok(tonic::Response::new(pb::LookupReply {
            key_id: outcome.target.0,
            owner: Some(member_to_pb(outcome.owner())),
            predecessor: Some(member_to_pb(&outcome.predecessor)),
            path: outcome.path.clone(),
        }))
    }

    async fn describe(
        &self,
        _request: tonic::Request<pb::DescribeRequest>,
    ) -> Result<tonic::Response<pb::DescribeReply>, Status> {
        let mut info = self.node.describe().await?;
        self.data.describe_replication(&mut info);
        info.onion_key = Some(self.relay.public_key());
        Ok(tonic::Response::new(describe_to_pb(&info)))
    }

    async fn put(
        &self,
        request: tonic::Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutReply>, Status> {
        tracing::debug!("put from {}", peer(&request));
        Ok(tonic::Response::new(
            self.put_inner(request.into_inner()).await?,
        ))
    }

    async fn get(
        &self,
        request: tonic::Request<pb::GetRequest>,
    ) -> Result<tonic::Response<pb::GetReply>, Status> {
        Ok(tonic::Response::new(
            self.get_inner(request.into_inner()).await?,
        ))
    }

    async fn delete(
        &self,
        request: tonic::Request<pb::DeleteRequest>,
    ) -> Result<tonic::Response<pb::DeleteReply>, Status> {
        Ok(tonic::Response::new(
            self.delete_inner(request.into_inner()).await?,
        ))
    }

    async fn repair(
        &self,
        _request: tonic::Request<pb::RepairRequest>,
    ) -> Result<tonic::Response<pb::RepairReply>, Status> {
        Ok(tonic::Response::new(self.repair_inner().await?))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RoomMessage, Status>> + Send>>;

    async fn watch(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let request = request.into_inner();
        let room: [u8; 32] = request.room.as_slice().try_into().map_err(|_| {
            Status::invalid_argument(format!(
                "a room location is 32 bytes, not {}",
                request.room.len()
            ))
        })?;
        let history = request.history as usize;
        if history > crate::data::rooms::MAX_HISTORY {
            return Err(Status::invalid_argument(format!(
                "at most {} messages of history, not {history}",
                crate::data::rooms::MAX_HISTORY
            )));
        }
        let messages = self.data.watch_room(room, request.since_ms, history);
        let stream = tokio_stream::wrappers::ReceiverStream::new(messages).map(|message| {
            message
                .map(|entry| pb::RoomMessage {
                    key: entry.key,
                    value: entry.record.value,
                })
                .map_err(Status::from)
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn relay(
        &self,
        request: tonic::Request<pb::RelayRequest>,
    ) -> Result<tonic::Response<pb::RelayReply>, Status> {
        let from = request.remote_addr();
        self.relay
            .relay(&self.data, request.into_inner().onion, from)
            .await?;
        Ok(tonic::Response::new(pb::RelayReply {}))
    }
}

/// Who sent `request`, for the debug log.
pub(crate) fn peer<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// Rejects empty and oversized keys.
pub fn validate_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("the key is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Status::invalid_argument(format!(
            "the key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn describe_to_pb(info: &ProcessInfo) -> pb::DescribeReply {
    pb::DescribeReply {
        addr: info.addr.clone(),
        members: info
            .members
            .iter()
            .map(|m| pb::MemberState {
                member: Some(member_to_pb(&m.me)),
                joined: m.joined,
                predecessor: m.predecessor.as_ref().map(member_to_pb),
                successors: members_to_pb(&m.successors),
                fingers: members_to_pb(&m.fingers),
                owned_records: m.owned_records,
                replicas: m
                    .replicas
                    .iter()
                    .map(|r| pb::ReplicaHealth {
                        replica: Some(member_to_pb(&r.replica)),
                        last_round_ago_ms: r.last_round_ago.map(|d| d.as_millis() as u64),
                        in_sync: r.in_sync,
                        pushed: r.pushed,
                        pulled: r.pulled,
                        error: r.error.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        records: info.records,
        hints: info.hints,
        replicas: info.replicas,
        write_quorum: info.write_quorum,
        read_quorum: info.read_quorum,
        onion_key: info.onion_key.map(|k| k.to_vec()).unwrap_or_default(),
    }
}

fn describe_from_pb(reply: pb::DescribeReply) -> Result<ProcessInfo, Status> {
    let members = reply
        .members
        .into_iter()
        .map(|m| {
            Ok(MemberInfo {
                me: member_from_pb(m.member, "member")?,
                joined: m.joined,
                predecessor: m
                    .predecessor
                    .map(|p| member_from_pb(Some(p), "predecessor"))
                    .transpose()?,
                successors: members_from_pb(m.successors, "successors")?,
                fingers: members_from_pb(m.fingers, "fingers")?,
                owned_records: m.owned_records,
                replicas: m
                    .replicas
                    .into_iter()
                    .take(MAX_MEMBER_LIST)
                    .map(|r| {
                        Ok(ReplicaHealth {
                            replica: member_from_pb(r.replica, "replica")?,
                            last_round_ago: r.last_round_ago_ms.map(Duration::from_millis),
                            in_sync: r.in_sync,
                            pushed: r.pushed,
                            pulled: r.pulled,
                            error: (!r.error.is_empty()).then_some(r.error),
                        })
                    })
                    .collect::<Result<_, Status>>()?,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(ProcessInfo {
        addr: reply.addr,
        members,
        records: reply.records,
        hints: reply.hints,
        replicas: reply.replicas,
        write_quorum: reply.write_quorum,
        read_quorum: reply.read_quorum,
        onion_key: reply.onion_key.as_slice().try_into().ok(),
    })
}

// ----- outbound ---------------------------------------------------------------

/// One lazily connected HTTP/2 channel per peer address.
pub struct Pool {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
}

impl Pool {
    /// `timeout` bounds connecting and every call.
    pub fn new(timeout: Duration) -> Pool {
        Pool {
            channels: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The channel to `addr`, created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("pool lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        validate_addr(addr).map_err(Status::invalid_argument)?;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad address {addr}: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_POOLED_CHANNELS {
            // Peers' answers can name any address; never let them grow the
            // pool without bound. Dropping a channel only costs a redial.
            let victim = channels.keys().next().cloned().expect("non-empty");
            channels.remove(&victim);
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `addr`, so the next call dials afresh instead
    /// of waiting out a broken connection's reconnect backoff.
    pub fn evict(&self, addr: &str) {
        self.channels.lock().expect("pool lock").remove(addr);
    }

    /// Sends one request of the state machine and returns the validated
    /// answer. Any error means "no answer".
    pub async fn call(&self, outgoing: &Outgoing) -> Result<Response, Status> {
        let result = tokio::time::timeout(self.timeout, self.call_inner(outgoing)).await;
        let result = result.unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
        if let Err(status) = &result {
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
            ) {
                self.evict(&outgoing.to);
            }
        }
        result
    }

    async fn call_inner(&self, outgoing: &Outgoing) -> Result<Response, Status> {
        let channel = self.channel(&outgoing.to)?;
        let member = outgoing.member.unwrap_or_default();
        match &outgoing.request {
            Request::Ping => {
                let service = member_health_name(member);
                match HealthClient::new(channel)
                    .check(HealthCheckRequest { service })
                    .await
                {
                    Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => {
                        Ok(Response::Pong)
                    }
                    Ok(_) => Ok(Response::NotMember),
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        Ok(Response::NotMember)
                    }
                    Err(status) => Err(status),
                }
            }
            Request::GetState => {
                let reply = RingClient::new(channel)
                    .get_state(pb::MemberRequest { member: member.0 })
                    .await?;
                state_reply_from_pb(reply.into_inner())
            }
            Request::Notify { from } => {
                let request = pb::NotifyRequest {
                    member: member.0,
                    from: Some(member_to_pb(from)),
                };
                Ok(ack_from_pb(
                    RingClient::new(channel).notify(request).await?.into_inner(),
                ))
            }
            Request::Leaving { leaving } => {
                let request = pb::LeavingRequest {
                    member: member.0,
                    leaving: Some(member_to_pb(leaving)),
                };
                Ok(ack_from_pb(
                    RingClient::new(channel)
                        .leaving(request)
                        .await?
                        .into_inner(),
                ))
            }
            Request::FindStep { target } => {
                let reply = RingClient::new(channel)
                    .find_step(pb::FindStepRequest { target: target.0 })
                    .await?;
                find_reply_from_pb(reply.into_inner())
            }
        }
    }
}

// ----- the command-line client -----------------------------------------------

/// The answer to `chordal lookup`.
#[derive(Clone, Debug)]
pub struct LookupAnswer {
    pub key_id: Id,
    pub owner: NodeRef,
    pub predecessor: NodeRef,
    pub path: Vec<String>,
}

/// A client of one node's `Api` service; clones share the connection.
#[derive(Clone)]
pub struct ApiConn {
    client: ApiClient<Channel>,
}

impl ApiConn {
    /// Connects to the node at `addr` (`host:port`).
    pub async fn connect(addr: &str, timeout: Duration) -> crate::Result<ApiConn> {
        ApiConn::connect_from(addr, timeout, None).await
    }

    /// [`ApiConn::connect`] from the local address `from` (on a machine
    /// with several addresses; the system's choice when `None`).
    pub async fn connect_from(
        addr: &str,
        timeout: Duration,
        from: Option<std::net::IpAddr>,
    ) -> crate::Result<ApiConn> {
        validate_addr(addr).map_err(crate::Error::InvalidArgument)?;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .local_address(from);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| crate::Error::Unavailable(format!("cannot connect to {addr}: {e}")))?;
        Ok(ApiConn {
            client: ApiClient::new(channel)
                .max_decoding_message_size(MAX_CLIENT_MESSAGE)
                .max_encoding_message_size(MAX_CLIENT_MESSAGE),
        })
    }

    /// Stores `value` under `key`; `ttl` of zero: for ever. Waits for the
    /// node's write quorum.
    pub async fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Duration,
    ) -> crate::Result<Written> {
        self.put_with_quorum(key, value, ttl, 0).await
    }

    /// [`ApiConn::put`] waiting for `write_quorum` acknowledgements (0:
    /// the node's default).
    pub async fn put_with_quorum(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Duration,
        write_quorum: u32,
    ) -> crate::Result<Written> {
        let request = pb::PutRequest {
            key: key.to_vec(),
            value,
            ttl_ms: ttl.as_millis().try_into().unwrap_or(u64::MAX),
            write_quorum,
        };
        let reply = self.client.put(request).await?.into_inner();
        Ok(data::written_from_put(reply)?)
    }

    /// The value under `key`; with `local`, this node's own copy.
    pub async fn get(&mut self, key: &[u8], local: bool) -> crate::Result<Value> {
        self.get_with_quorum(key, local, 0).await
    }

    /// [`ApiConn::get`] gathering `read_quorum` answers (0: the node's
    /// default).
    pub async fn get_with_quorum(
        &mut self,
        key: &[u8],
        local: bool,
        read_quorum: u32,
    ) -> crate::Result<Value> {
        let request = pb::GetRequest {
            key: key.to_vec(),
            local,
            read_quorum,
        };
        let reply = self.client.get(request).await?.into_inner();
        Ok(data::value_from_pb(reply)?)
    }

    pub async fn delete(&mut self, key: &[u8]) -> crate::Result<Written> {
        self.delete_with_quorum(key, 0).await
    }

    pub async fn delete_with_quorum(
        &mut self,
        key: &[u8],
        write_quorum: u32,
    ) -> crate::Result<Written> {
        let request = pb::DeleteRequest {
            key: key.to_vec(),
            write_quorum,
        };
        let reply = self.client.delete(request).await?.into_inner();
        Ok(data::written_from_delete(reply)?)
    }

    /// Runs an anti-entropy round of the node's arcs now.
    pub async fn repair(&mut self) -> crate::Result<Vec<RoundReport>> {
        let reply = self.client.repair(pb::RepairRequest {}).await?.into_inner();
        Ok(data::reports_from_pb(reply)?)
    }

    /// Hands an onion-wrapped chat message to this node, the circuit's
    /// first relay; answers once the last relay has stored it.
    pub async fn relay(&mut self, onion: Vec<u8>) -> crate::Result<()> {
        self.client.relay(pb::RelayRequest { onion }).await?;
        Ok(())
    }

    /// Watches a chat room held by this node: its recent history, then
    /// each new message, as (key, sealed value) pairs.
    pub async fn watch(
        &mut self,
        room: &[u8; 32],
        since_ms: u64,
        history: u32,
    ) -> crate::Result<tonic::Streaming<pb::RoomMessage>> {
        let request = pb::WatchRequest {
            room: room.to_vec(),
            since_ms,
            history,
        };
        Ok(self.client.watch(request).await?.into_inner())
    }

    pub async fn lookup(&mut self, key: &[u8]) -> crate::Result<LookupAnswer> {
        let reply = self
            .client
            .lookup(pb::LookupRequest { key: key.to_vec() })
            .await?
            .into_inner();
        Ok(LookupAnswer {
            key_id: Id(reply.key_id),
            owner: member_from_pb(reply.owner, "owner")?,
            predecessor: member_from_pb(reply.predecessor, "predecessor")?,
            path: reply.path,
        })
    }

    pub async fn describe(&mut self) -> crate::Result<ProcessInfo> {
        let reply = self
            .client
            .describe(pb::DescribeRequest {})
            .await?
            .into_inner();
        Ok(describe_from_pb(reply)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_validated() {
        assert!(validate_addr("127.0.0.1:10001").is_ok());
        assert!(validate_addr("node-1:10001").is_ok());
        assert!(validate_addr("[::1]:10001").is_ok());
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            ":10001",
            "a b:1",
            "host:99999",
            "host:port",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_addr(&format!("{}:1", "h".repeat(300))).is_err());
    }

    #[test]
    fn an_oversized_member_list_is_rejected() {
        let many = vec![
            pb::Member {
                id: 1,
                addr: "a:1".into()
            };
            MAX_MEMBER_LIST + 1
        ];
        let reply = pb::FindStepReply {
            answer: Some(pb::find_step_reply::Answer::Closer(pb::Closer {
                candidates: many,
            })),
        };
        assert_eq!(
            find_reply_from_pb(reply).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn a_found_without_successors_is_rejected() {
        let reply = pb::FindStepReply {
            answer: Some(pb::find_step_reply::Answer::Found(pb::Found {
                predecessor: Some(pb::Member {
                    id: 1,
                    addr: "a:1".into(),
                }),
                successors: vec![],
            })),
        };
        assert!(find_reply_from_pb(reply).is_err());
    }

    #[test]
    fn domain_answers_survive_the_round_trip() {
        let found = Response::Found {
            predecessor: NodeRef::new(Id(1), "a:1"),
            successors: vec![NodeRef::new(Id(2), "b:2"), NodeRef::new(Id(3), "c:3")],
        };
        assert_eq!(
            find_reply_from_pb(find_reply(found.clone())).unwrap(),
            found
        );
        let state = Response::State {
            predecessor: None,
            successors: vec![NodeRef::new(Id(9), "z:9")],
        };
        assert_eq!(
            state_reply_from_pb(state_reply(state.clone())).unwrap(),
            state
        );
        assert_eq!(
            state_reply_from_pb(state_reply(Response::Pending)).unwrap(),
            Response::Pending
        );
    }

    #[test]
    fn keys_are_bounded() {
        assert!(validate_key(b"k").is_ok());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(&vec![b'k'; MAX_KEY_LEN + 1]).is_err());
    }
}
