//! The `Api` service for clients and operators: lookups, `Describe`, the
//! key-value calls (carried out by the data layer's coordinator), repair,
//! chat room watches and relays.

use super::records::version_to_pb;
use super::relay;
use super::{
    member_from_pb, member_to_pb, members_from_pb, members_to_pb, pb, peer, validate_key, NodeApi,
    MAX_MEMBER_LIST,
};
use crate::data::WriteOp;
use crate::data::{DataNode, MemberInfo, ProcessInfo, ReplicaHealth};
use crate::id::Id;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// The service for clients and operators.
pub struct ApiService<N> {
    node: N,
    data: Arc<DataNode>,
    relay: Arc<relay::Relayer>,
}

impl<N: NodeApi> ApiService<N> {
    /// Accepts puts of up to twice the value limit, so that an oversized
    /// value gets a clear INVALID_ARGUMENT rather than a cut connection.
    pub fn server(
        node: N,
        data: Arc<DataNode>,
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

pub(super) fn describe_to_pb(info: &ProcessInfo) -> pb::DescribeReply {
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

pub(super) fn describe_from_pb(reply: pb::DescribeReply) -> Result<ProcessInfo, Status> {
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

// ----- the key-value calls -------------------------------------------------------

impl<N: NodeApi> ApiService<N> {
    pub(super) async fn put_inner(&self, request: pb::PutRequest) -> Result<pb::PutReply, Status> {
        let written = self
            .data
            .put(WriteOp {
                key: request.key,
                value: request.value,
                delete: false,
                ttl_ms: request.ttl_ms,
                write_quorum: request.write_quorum,
            })
            .await?;
        Ok(pb::PutReply {
            version: Some(version_to_pb(written.version)),
            owner: Some(member_to_pb(&written.owner)),
            acks: written.acks as u32,
        })
    }

    pub(super) async fn get_inner(&self, request: pb::GetRequest) -> Result<pb::GetReply, Status> {
        let value = if request.local {
            self.data.get_local(&request.key)?
        } else {
            self.data.get(&request.key, request.read_quorum).await?
        };
        Ok(pb::GetReply {
            value: value.value,
            version: Some(version_to_pb(value.version)),
            owner: value.owner.as_ref().map(member_to_pb),
            expires_at_ms: value.expires_at,
        })
    }

    pub(super) async fn delete_inner(
        &self,
        request: pb::DeleteRequest,
    ) -> Result<pb::DeleteReply, Status> {
        let written = self
            .data
            .put(WriteOp {
                key: request.key,
                value: Vec::new(),
                delete: true,
                ttl_ms: 0,
                write_quorum: request.write_quorum,
            })
            .await?;
        Ok(pb::DeleteReply {
            existed: written.existed,
            version: Some(version_to_pb(written.version)),
            owner: Some(member_to_pb(&written.owner)),
            acks: written.acks as u32,
        })
    }

    pub(super) async fn repair_inner(&self) -> Result<pb::RepairReply, Status> {
        let reports = self.data.anti_entropy_round().await;
        Ok(pb::RepairReply {
            rounds: reports
                .iter()
                .map(|r| pb::RoundReport {
                    owner: Some(member_to_pb(&r.owner)),
                    arc_from: r.arc.from.0,
                    replica: Some(member_to_pb(&r.replica)),
                    round_trips: r.stats.round_trips,
                    nodes_compared: r.stats.nodes_compared,
                    digests_received: r.stats.digests_received,
                    pushed: r.stats.pushed,
                    pulled: r.stats.pulled,
                    bytes_sent: r.stats.bytes_sent,
                    bytes_received: r.stats.bytes_received,
                    elapsed_us: r.elapsed.as_micros() as u64,
                    error: r.error.clone().unwrap_or_default(),
                })
                .collect(),
        })
    }
}
