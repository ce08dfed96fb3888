//! The relay's side of onion-routed chat messages (see
//! [`crate::chat::onion`]): open this process's layer, then pass the rest
//! on or store the room message.

use super::{pb, Pool};
use crate::chat::onion::{Layer, OnionKey, MAX_ONION};
use crate::data::{Data, WriteOp};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// This process as a relay: its onion key and its connections to others.
pub struct Relayer {
    key: OnionKey,
    pool: Pool,
}

impl Relayer {
    /// A relay with `key`; `timeout` bounds the rest of the circuit, so
    /// it should allow for several hops and a quorum write.
    pub fn new(key: OnionKey, timeout: Duration) -> Relayer {
        Relayer {
            key,
            pool: Pool::new(timeout),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Handles one onion received from `from`. What is logged (at debug
    /// level) is all a relay learns: who handed it the onion, and whom it
    /// passed it to or that it stored a message.
    pub async fn relay(
        &self,
        data: &Arc<Data>,
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
                pb::api_client::ApiClient::new(self.pool.channel(&next)?)
                    .max_encoding_message_size(MAX_ONION + 1024)
                    .relay(pb::RelayRequest { onion })
                    .await
                    .map_err(|status| {
                        if matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) {
                            self.pool.evict(&next);
                        }
                        Status::new(status.code(), format!("relay {next}: {}", status.message()))
                    })?;
            }
            Layer::Deliver { key, value, ttl_ms } => {
                tracing::debug!("relay: an onion from {from} delivered as a room message");
                data.put(WriteOp {
                    key,
                    value,
                    delete: false,
                    ttl_ms,
                    write_quorum: 0,
                })
                .await?;
            }
        }
        Ok(())
    }
}
