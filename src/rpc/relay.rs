//! The relay's side of onion-routed chat messages (see
//! [`crate::room::onion`]): open this process's layer, then pass the rest
//! on or store the room message.

use super::{pb, Pool};
use crate::data::{DataNode, WriteOp};
use crate::room::onion::{Layer, OnionKey, MAX_ONION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// What the last relay answers when the ring did not store the message.
pub const STORE_FAILED: &str = "relay: the ring did not store it";
/// What a relay answers when the next one did not answer.
pub const NEXT_FAILED: &str = "relay: the next hop did not answer";

/// The error a relay passes back for a failed call to the next relay,
/// naming no address: the first relay knows the sender, and must not learn
/// the rest of the path from an error. A relay's own answer is passed on
/// with one more `> ` in front (so the client can tell which hop failed:
/// `> > relay: the next hop did not answer` means the third relay could
/// not reach the fourth); a call that got no relay's answer at all (the
/// next relay is down) becomes [`NEXT_FAILED`], and `evict` drops the
/// connection to it.
fn upstream_error(status: Status, evict: impl FnOnce()) -> Status {
    let message = status.message();
    if message.starts_with("relay: ") || message.starts_with("> ") {
        Status::new(status.code(), format!("> {message}"))
    } else {
        evict();
        Status::unavailable(NEXT_FAILED)
    }
}

/// Which relay of a circuit failed, from the error the first relay
/// answered (see `upstream_error`): `Some(index)` in the circuit, or
/// `None` when the relays worked and the ring did not store the message.
/// An error no relay wrote means the first did not answer.
pub fn failed_relay(message: &str) -> Option<usize> {
    let mut rest = message;
    let mut depth = 0;
    while let Some(inner) = rest.strip_prefix("> ") {
        rest = inner;
        depth += 1;
    }
    if rest.starts_with(NEXT_FAILED) {
        Some(depth + 1)
    } else if rest.starts_with(STORE_FAILED) {
        None
    } else if depth == 0 {
        Some(0)
    } else {
        None
    }
}

/// This process as a relay: its onion key and its connections to others.
pub struct Relayer {
    key: OnionKey,
    pool: Arc<Pool>,
    /// Bounds the rest of the circuit.
    timeout: Duration,
}

impl Relayer {
    /// A relay with `key`; `timeout` bounds the rest of the circuit, so
    /// it should allow for several hops and a quorum write.
    pub fn new(key: OnionKey, pool: Arc<Pool>, timeout: Duration) -> Relayer {
        Relayer { key, pool, timeout }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Handles one onion received from `from`. What is logged (at debug
    /// level) is all a relay learns: who handed it the onion, and whom it
    /// passed it to or that it stored a message.
    pub async fn relay(
        &self,
        data: &Arc<DataNode>,
        onion: Vec<u8>,
        from: Option<SocketAddr>,
    ) -> Result<(), Status> {
        if onion.len() > MAX_ONION {
            return Err(Status::invalid_argument(format!(
                "an onion of {} bytes is over the {MAX_ONION}-byte limit",
                onion.len()
            )));
        }
        let from = from.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        match self
            .key
            .peel(&onion)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            Layer::Forward { next, onion } => {
                tracing::debug!("relay: an onion from {from} passed on to {next}");
                let mut client = pb::api_client::ApiClient::new(self.pool.channel(&next)?)
                    .max_encoding_message_size(MAX_ONION + 1024);
                let call = client.relay(pb::RelayRequest { onion });
                let answer = tokio::time::timeout(self.timeout, call)
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
                if let Err(status) = answer {
                    return Err(upstream_error(status, || self.pool.evict(&next)));
                }
            }
            Layer::Deliver { key, value, ttl_ms } => {
                tracing::debug!("relay: an onion from {from} delivered as a room message");
                let stored = data
                    .put(WriteOp {
                        key,
                        value,
                        delete: false,
                        ttl_ms,
                        write_quorum: 0,
                    })
                    .await;
                if let Err(error) = stored {
                    // Not the details: they name the storing processes.
                    let status = Status::from(error);
                    return Err(Status::new(
                        status.code(),
                        format!("{STORE_FAILED} ({:?})", status.code()),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_failed_hop_and_no_address() {
        let down = Status::unavailable("tcp connect error: 10.0.0.7:10001 refused");
        let mut evicted = false;
        let first = upstream_error(down, || evicted = true);
        assert!(evicted);
        assert_eq!(first.message(), NEXT_FAILED);
        // Passed back through two more relays.
        let relayed = upstream_error(upstream_error(first, || panic!()), || panic!());
        assert_eq!(relayed.message(), format!("> > {NEXT_FAILED}"));
        assert!(!relayed.message().contains("10.0.0.7"));
        assert_eq!(failed_relay(relayed.message()), Some(3));
        assert_eq!(failed_relay(NEXT_FAILED), Some(1));
        assert_eq!(failed_relay("cannot connect to 127.0.0.1:1"), Some(0));
        assert_eq!(
            failed_relay(&format!("> > {STORE_FAILED} (Unavailable)")),
            None
        );
    }
}
