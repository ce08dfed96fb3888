//! [`ApiClient`]: a client of one node's `Api` service, as the command line,
//! the chat client and the benchmarks use it.

use super::api::describe_from_pb;
use super::pb::api_client::ApiClient as ApiStub;
use super::records::version_from_pb;
use super::{member_from_pb, pb, validate_addr, MAX_CLIENT_MESSAGE};
use crate::data::{ProcessInfo, RoundReport, Value, Written};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::sync::{self, ArcRange};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

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
pub struct ApiClient {
    client: ApiStub<Channel>,
}

impl ApiClient {
    /// Connects to the node at `addr` (`host:port`).
    pub async fn connect(addr: &str, timeout: Duration) -> crate::Result<ApiClient> {
        ApiClient::connect_from(addr, timeout, None).await
    }

    /// [`ApiClient::connect`] from the local address `from` (on a machine
    /// with several addresses; the system's choice when `None`).
    pub async fn connect_from(
        addr: &str,
        timeout: Duration,
        from: Option<std::net::IpAddr>,
    ) -> crate::Result<ApiClient> {
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
        Ok(ApiClient {
            client: ApiStub::new(channel)
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

    /// [`ApiClient::put`] waiting for `write_quorum` acknowledgements (0:
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
        Ok(written_from_put(reply)?)
    }

    /// The value under `key`; with `local`, this node's own copy.
    pub async fn get(&mut self, key: &[u8], local: bool) -> crate::Result<Value> {
        self.get_with_quorum(key, local, 0).await
    }

    /// [`ApiClient::get`] gathering `read_quorum` answers (0: the node's
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
        Ok(value_from_pb(reply)?)
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
        Ok(written_from_delete(reply)?)
    }

    /// Runs an anti-entropy round of the node's arcs now.
    pub async fn repair(&mut self) -> crate::Result<Vec<RoundReport>> {
        let reply = self.client.repair(pb::RepairRequest {}).await?.into_inner();
        Ok(reports_from_pb(reply)?)
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

fn reports_from_pb(reply: pb::RepairReply) -> Result<Vec<crate::data::RoundReport>, Status> {
    reply
        .rounds
        .into_iter()
        .map(|r| {
            let owner = member_from_pb(r.owner, "owner")?;
            Ok(crate::data::RoundReport {
                arc: ArcRange::new(Id(r.arc_from), owner.id),
                owner,
                replica: member_from_pb(r.replica, "replica")?,
                stats: sync::SyncStats {
                    round_trips: r.round_trips,
                    nodes_compared: r.nodes_compared,
                    digests_received: r.digests_received,
                    pushed: r.pushed,
                    pulled: r.pulled,
                    bytes_sent: r.bytes_sent,
                    bytes_received: r.bytes_received,
                },
                elapsed: Duration::from_micros(r.elapsed_us),
                error: (!r.error.is_empty()).then_some(r.error),
            })
        })
        .collect()
}

fn written_from_put(reply: pb::PutReply) -> Result<Written, Status> {
    Ok(Written {
        version: version_from_pb(reply.version)?,
        existed: false,
        owner: member_from_pb(reply.owner, "owner")?,
        acks: reply.acks as usize,
    })
}

fn written_from_delete(reply: pb::DeleteReply) -> Result<Written, Status> {
    Ok(Written {
        version: version_from_pb(reply.version)?,
        existed: reply.existed,
        owner: member_from_pb(reply.owner, "owner")?,
        acks: reply.acks as usize,
    })
}

fn value_from_pb(reply: pb::GetReply) -> Result<Value, Status> {
    Ok(Value {
        value: reply.value,
        version: version_from_pb(reply.version)?,
        expires_at: reply.expires_at_ms,
        owner: reply
            .owner
            .map(|o| member_from_pb(Some(o), "owner"))
            .transpose()?,
    })
}
