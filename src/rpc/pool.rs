//! The one pool of connections every call to another process goes
//! through, and the ring's calls on it.

use super::pb::ring_client::RingClient as RingStub;
use super::ring::{ack_from_pb, find_reply_from_pb, state_reply_from_pb};
use super::{member_health_name, member_to_pb, pb, validate_addr, MAX_POOLED_CHANNELS};
use crate::ring::{Outgoing, Request, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One lazily connected HTTP/2 channel per peer address, shared by every
/// kind of call this process makes to others (ring, data, relay). Each
/// caller bounds its own calls ([`Pool::within_deadline`]); the channel
/// itself bounds only connecting.
pub struct Pool {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
}

impl Pool {
    /// `timeout` bounds connecting and each ring call.
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

    /// A channel of its own for one long transfer (a hand-off): no
    /// deadline, but keep-alive pings to notice a peer that went away.
    pub async fn bulk_channel(&self, addr: &str) -> Result<Channel, Status> {
        validate_addr(addr).map_err(Status::invalid_argument)?;
        Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(self.timeout * 2)
            .keep_alive_timeout(self.timeout * 2)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))
    }

    /// Runs `call` to `addr` for at most `deadline`. A call that got no
    /// answer drops the channel, so the next one dials afresh instead of
    /// waiting out a broken connection's reconnect backoff.
    pub async fn within_deadline<T>(
        &self,
        addr: &str,
        deadline: Duration,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let result = tokio::time::timeout(deadline, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
        if let Err(status) = &result {
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
            ) {
                self.evict(addr);
            }
        }
        result
    }

    /// Sends one request of the state machine and returns the validated
    /// answer. Any error means "no answer".
    pub async fn call(&self, outgoing: &Outgoing) -> Result<Response, Status> {
        self.within_deadline(&outgoing.to, self.timeout, self.call_inner(outgoing))
            .await
    }

    pub(super) async fn call_inner(&self, outgoing: &Outgoing) -> Result<Response, Status> {
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
                let reply = RingStub::new(channel)
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
                    RingStub::new(channel).notify(request).await?.into_inner(),
                ))
            }
            Request::Leaving { leaving } => {
                let request = pb::LeavingRequest {
                    member: member.0,
                    leaving: Some(member_to_pb(leaving)),
                };
                Ok(ack_from_pb(
                    RingStub::new(channel).leaving(request).await?.into_inner(),
                ))
            }
            Request::FindStep { target } => {
                let reply = RingStub::new(channel)
                    .find_step(pb::FindStepRequest { target: target.0 })
                    .await?;
                find_reply_from_pb(reply.into_inner())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(pool: &Pool) -> usize {
        pool.channels.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_call_with_no_answer_drops_its_channel_and_a_refusal_keeps_it() {
        let pool = Pool::new(Duration::from_secs(1));
        let addr = "127.0.0.1:1";
        for (status, dropped) in [
            (Status::unavailable("down"), true),
            (Status::unknown("broken"), true),
            (Status::deadline_exceeded("slow"), true),
            (Status::not_found("no such key"), false),
            (Status::invalid_argument("bad"), false),
        ] {
            pool.channel(addr).unwrap();
            assert_eq!(pooled(&pool), 1);
            let code = status.code();
            let answer = pool
                .within_deadline(addr, Duration::from_secs(1), async { Err::<(), _>(status) })
                .await;
            assert_eq!(answer.unwrap_err().code(), code);
            assert_eq!(pooled(&pool), usize::from(!dropped), "{code:?}");
        }
        // A call that outlives its deadline is answered DEADLINE_EXCEEDED
        // and drops the channel too.
        pool.channel(addr).unwrap();
        let answer = pool
            .within_deadline(
                addr,
                Duration::from_millis(10),
                std::future::pending::<Result<(), Status>>(),
            )
            .await;
        assert_eq!(answer.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        assert_eq!(pooled(&pool), 0);
    }

    #[tokio::test]
    async fn the_pool_holds_at_most_its_bound_of_channels() {
        let pool = Pool::new(Duration::from_secs(1));
        for port in 1..=(MAX_POOLED_CHANNELS as u16 + 10) {
            pool.channel(&format!("127.0.0.1:{port}")).unwrap();
        }
        assert_eq!(pooled(&pool), MAX_POOLED_CHANNELS);
        assert_eq!(
            pool.channel("not an address").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
