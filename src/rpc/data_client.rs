//! [`DataClient`]: the data layer's [`Peers`] over gRPC, through the one
//! connection pool.

use super::records::*;
use super::{member_to_pb, pb, Pool};
use crate::data::{BatchStream, Entry, Peers, ReadAnswer, SyncExchange, WriteAnswer, WriteOp};
use crate::id::Id;
use crate::ring::NodeRef;
use crate::sync::{ArcRange, SyncRequest};
use futures::StreamExt;
use prost::Message;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Status;

/// Calls of the `Data` service on other processes: the data layer's
/// [`Peers`], over gRPC.
pub struct DataClient {
    pool: Arc<Pool>,
    max_message: usize,
}

impl DataClient {
    /// Calls through `pool`, accepting messages of up to `max_message`
    /// bytes.
    pub fn new(pool: Arc<Pool>, max_message: usize) -> DataClient {
        DataClient { pool, max_message }
    }

    fn client(&self, addr: &str) -> Result<pb::data_client::DataClient<Channel>, Status> {
        Ok(pb::data_client::DataClient::new(self.pool.channel(addr)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    /// A client for one long transfer (see [`Pool::bulk_channel`]).
    async fn bulk_client(
        &self,
        addr: &str,
    ) -> Result<pb::data_client::DataClient<Channel>, Status> {
        Ok(
            pb::data_client::DataClient::new(self.pool.bulk_channel(addr).await?)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message),
        )
    }

    /// A point call to `addr`, within the pool's deadline. Point calls get
    /// twice the request deadline: an owner in the middle of a hand-off
    /// may itself ask the old owner before answering.
    async fn call<T>(
        &self,
        addr: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        self.pool
            .within_deadline(addr, self.pool.timeout() * 2, call)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[async_trait::async_trait]
impl Peers for DataClient {
    async fn write(&self, to: &NodeRef, op: &WriteOp) -> crate::Result<WriteAnswer> {
        let request = pb::WriteRequest {
            member: to.id.0,
            key: op.key.clone(),
            value: op.value.clone(),
            delete: op.delete,
            ttl_ms: op.ttl_ms,
            write_quorum: op.write_quorum,
        };
        let mut client = self.client(&to.addr)?;
        let reply = self.call(&to.addr, client.write(request)).await?;
        use pb::write_reply::Answer;
        match reply.answer {
            Some(Answer::Written(written)) => Ok(WriteAnswer::Written {
                version: version_from_pb(written.version)?,
                existed: written.existed,
                acks: written.acks as usize,
            }),
            Some(Answer::NotOwner(not_owner)) => {
                Ok(WriteAnswer::NotOwner(not_owner_from_pb(not_owner)?))
            }
            Some(Answer::QuorumFailed(failed)) => Err(quorum_error(failed)),
            None => Err(Status::invalid_argument("empty write answer").into()),
        }
    }

    async fn read(
        &self,
        to: &NodeRef,
        key: &[u8],
        raw: bool,
        read_quorum: u32,
    ) -> crate::Result<ReadAnswer> {
        let request = pb::ReadRequest {
            member: to.id.0,
            key: key.to_vec(),
            raw,
            read_quorum,
        };
        let mut client = self.client(&to.addr)?;
        let reply = self.call(&to.addr, client.read(request)).await?;
        use pb::read_reply::Answer;
        match reply.answer {
            Some(Answer::Record(mut record)) => {
                // Answers to a read carry no key; it is the one asked for.
                record.key = key.to_vec();
                Ok(ReadAnswer::Found(
                    entry_from_pb(record, self.max_message)?.record,
                ))
            }
            Some(Answer::Missing(_)) => Ok(ReadAnswer::Missing),
            Some(Answer::NotOwner(not_owner)) => {
                Ok(ReadAnswer::NotOwner(not_owner_from_pb(not_owner)?))
            }
            Some(Answer::QuorumFailed(failed)) => Err(quorum_error(failed)),
            None => Err(Status::invalid_argument("empty read answer").into()),
        }
    }

    async fn replicate(
        &self,
        to: &NodeRef,
        entries: &[Entry],
        hint_for: Option<&NodeRef>,
    ) -> crate::Result<u64> {
        let request = pb::ReplicateRequest {
            records: entries.iter().map(entry_to_pb).collect(),
            hint_for: hint_for.map(member_to_pb),
        };
        let mut client = self.client(&to.addr)?;
        Ok(self
            .call(&to.addr, client.replicate(request))
            .await?
            .applied)
    }

    async fn forget(&self, to: &NodeRef, tombstones: &[Entry]) -> crate::Result<u64> {
        let request = pb::RecordBatch {
            records: tombstones.iter().map(entry_to_pb).collect(),
        };
        let mut client = self.client(&to.addr)?;
        Ok(self.call(&to.addr, client.forget(request)).await?.forgotten)
    }

    async fn sync(
        &self,
        to: &NodeRef,
        arc: ArcRange,
        request: SyncRequest,
    ) -> crate::Result<SyncExchange> {
        let request = sync_request_to_pb(arc, &request);
        let bytes_sent = request.encoded_len();
        let mut client = self.client(&to.addr)?;
        let reply = self.call(&to.addr, client.sync(request)).await?;
        let bytes_received = reply.encoded_len();
        Ok(SyncExchange {
            reply: sync_reply_from_pb(reply, self.max_message)?,
            bytes_sent,
            bytes_received,
        })
    }

    async fn state(&self, of: &NodeRef) -> crate::Result<(Option<NodeRef>, Vec<NodeRef>)> {
        let outgoing = crate::ring::Outgoing {
            id: 0,
            to: of.addr.clone(),
            member: Some(of.id),
            request: crate::ring::Request::GetState,
        };
        // A point call of the data layer's: twice the ring's deadline.
        let deadline = self.pool.timeout() * 2;
        let answer = self
            .pool
            .within_deadline(&of.addr, deadline, self.pool.call_inner(&outgoing))
            .await?;
        match answer {
            crate::ring::Response::State {
                predecessor,
                successors,
            } => Ok((predecessor, successors)),
            other => Err(crate::Error::Unavailable(format!(
                "{of} did not give its state: {other:?}"
            ))),
        }
    }

    async fn fetch(
        &self,
        source: &NodeRef,
        from: Id,
        to: Id,
        after: Option<Vec<u8>>,
    ) -> crate::Result<BatchStream> {
        let request = pb::FetchRequest {
            member: source.id.0,
            from: from.0,
            to: to.0,
            after,
        };
        let inner = self
            .bulk_client(&source.addr)
            .await?
            .fetch(request)
            .await?
            .into_inner();
        Ok(batches_from_pb(inner, self.max_message))
    }

    async fn absorb(&self, target: &NodeRef, mut batches: BatchStream) -> crate::Result<()> {
        let mut client = self.bulk_client(&target.addr).await?;
        // The batches are encoded on a task of their own and handed over
        // through a channel (its bound is the back-pressure): rustc cannot
        // prove tonic's streaming call `Send` over a boxed `dyn Stream`
        // inside this trait's future, but can over a channel's receiver.
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let encode = tokio::spawn(async move {
            while let Some(batch) = batches.next().await {
                if sender.send(batch_to_pb(&batch?)).await.is_err() {
                    break; // the upload ended
                }
            }
            Ok::<(), crate::Error>(())
        });
        let uploaded = client
            .absorb(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await;
        let read = encode
            .await
            .map_err(|e| crate::Error::Unavailable(format!("reading the arc failed: {e}")))?;
        if let Err(error) = read {
            return Err(crate::Error::Unavailable(format!(
                "reading the arc failed: {error}"
            )));
        }
        uploaded?;
        Ok(())
    }
}
