//! The network edge: the only module that sees protobuf types.
//!
//! Depends on `data` (whose `Peers` it implements and whose `DataNode` its
//! services call) and everything below; `node` wires it. Inbound, the
//! tonic services validate every message (sizes, list lengths, address
//! syntax) and turn it into domain types; a message that breaks a bound
//! gets `INVALID_ARGUMENT` and never reaches the protocol. Outbound, one
//! [`Pool`] keeps an HTTP/2 channel per peer address for every call this
//! process makes, and answers are validated just as strictly: a hostile or
//! broken peer's reply counts as no reply.
//!
//! One file per service, inbound and outbound: [`RingService`] (`ring.rs`)
//! and the ring's calls on the pool (`pool.rs`); [`ApiService`] (`api.rs`)
//! and [`ApiClient`] (`client.rs`); [`DataService`] (`data.rs`) and
//! [`DataClient`] (`data_client.rs`), with the record conversions they
//! share in `records.rs`; [`Relayer`] (`relay.rs`). A client type is named
//! for the service it calls (`ApiClient`, `DataClient`); the generated
//! stubs stay private here.
//!
//! Liveness is the standard `grpc.health.v1.Health/Check`, served by
//! tonic-health with one service name per member
//! ([`member_health_name`]), so any gRPC health tool can probe a member.

use crate::data::ProcessInfo;
use crate::id::Id;
use crate::ring::{LookupOutcome, NodeRef, Request, Response};
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[allow(clippy::all, missing_docs)]
pub(crate) mod pb {
    tonic::include_proto!("chordal.v1");
}

mod api;
mod baseline;
mod client;
mod data;
mod data_client;
mod pool;
mod records;
mod relay;
mod ring;
mod stats;
mod status;

pub use api::ApiService;
pub use baseline::stream_baseline;
pub use client::{ApiClient, LookupAnswer};
pub use data::DataService;
pub use data_client::DataClient;
pub use pool::Pool;
pub use relay::{failed_relay, Relayer};
pub use ring::RingService;
pub use stats::{GrpcMetricsLayer, RequestStats};
pub use status::transport_error;

pub use crate::ring::{validate_addr, MAX_ADDR_LEN};
/// Longest accepted list of members in any message.
pub const MAX_MEMBER_LIST: usize = 64;
pub use crate::store::MAX_KEY_LEN;
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

pub(crate) fn members_from_pb(
    members: Vec<pb::Member>,
    field: &str,
) -> Result<Vec<NodeRef>, Status> {
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

pub(crate) fn members_to_pb(members: &[NodeRef]) -> Vec<pb::Member> {
    members.iter().map(member_to_pb).collect()
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

/// Connections accepted on `listener`, with Nagle's algorithm off: the
/// builder's own `tcp_nodelay` applies only to listeners it binds, and
/// without it each answer's last frames wait for the client's delayed ACK
/// (~40 ms).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Who sent `request`, for the debug log.
pub(crate) fn peer<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// Rejects empty and oversized keys with INVALID_ARGUMENT.
pub(crate) fn validate_key(key: &[u8]) -> Result<(), Status> {
    crate::store::validate_key(key).map_err(Status::invalid_argument)
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
    fn keys_are_bounded() {
        assert!(validate_key(b"k").is_ok());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(&vec![b'k'; MAX_KEY_LEN + 1]).is_err());
    }

    #[test]
    fn a_message_from_a_newer_version_is_read_without_the_fields_this_one_lacks() {
        use prost::Message;
        // Fields a later version might add: a string and a number, under
        // numbers this version does not use.
        let with_new_fields = |mut bytes: Vec<u8>| {
            prost::encoding::string::encode(99, &"new".to_string(), &mut bytes);
            prost::encoding::uint64::encode(100, &7, &mut bytes);
            bytes
        };
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 5,
            write_quorum: 2,
        };
        let read = pb::PutRequest::decode(with_new_fields(put.encode_to_vec()).as_slice()).unwrap();
        assert_eq!(read, put);
        let notify = pb::NotifyRequest {
            member: 42,
            from: Some(pb::Member {
                id: 7,
                addr: "127.0.0.1:10002".into(),
            }),
        };
        let read =
            pb::NotifyRequest::decode(with_new_fields(notify.encode_to_vec()).as_slice()).unwrap();
        assert_eq!(read, notify);
    }
}
