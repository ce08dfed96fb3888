//! The `Data` service other members call: each call decoded, handed to
//! the data layer's `serve_*` side, and answered.

use super::records::*;
use super::{member_from_pb, pb, validate_key};
use crate::data::{DataNode, WriteAnswer, WriteOp};
use crate::id::Id;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Status, Streaming};

/// The service ring members use to read, write and hand over records: each
/// call decoded, handed to the data layer's `serve_*` side, and answered.
pub struct DataService {
    data: Arc<DataNode>,
}

impl DataService {
    pub fn server(data: Arc<DataNode>) -> pb::data_server::DataServer<DataService> {
        let limit = data.config().max_message();
        pb::data_server::DataServer::new(DataService { data })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

pub(super) type PbBatchStream = Pin<Box<dyn Stream<Item = Result<pb::RecordBatch, Status>> + Send>>;

#[tonic::async_trait]
impl pb::data_server::Data for DataService {
    async fn write(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteReply>, Status> {
        tracing::debug!("write from {}", super::peer(&request));
        let request = request.into_inner();
        let op = WriteOp {
            key: request.key,
            value: request.value,
            delete: request.delete,
            ttl_ms: request.ttl_ms,
            write_quorum: request.write_quorum,
        };
        use pb::write_reply::Answer;
        let answer = match self.data.serve_write(Id(request.member), op).await {
            Ok(WriteAnswer::Written {
                version,
                existed,
                acks,
            }) => Answer::Written(pb::Written {
                version: Some(version_to_pb(version)),
                existed,
                acks: acks as u32,
            }),
            Ok(WriteAnswer::NotOwner(not_owner)) => Answer::NotOwner(not_owner_to_pb(not_owner)),
            Err(crate::Error::Quorum(message)) => Answer::QuorumFailed(quorum_failed(message)),
            Err(error) => return Err(error.into()),
        };
        Ok(tonic::Response::new(pb::WriteReply {
            answer: Some(answer),
        }))
    }

    async fn read(
        &self,
        request: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, Status> {
        let request = request.into_inner();
        let answer = match self
            .data
            .serve_read(
                Id(request.member),
                &request.key,
                request.raw,
                request.read_quorum,
            )
            .await
        {
            Ok(answer) => answer,
            Err(crate::Error::Quorum(message)) => {
                return Ok(tonic::Response::new(pb::ReadReply {
                    answer: Some(pb::read_reply::Answer::QuorumFailed(quorum_failed(message))),
                }))
            }
            Err(error) => return Err(error.into()),
        };
        Ok(tonic::Response::new(read_reply(answer)))
    }

    type FetchStream = PbBatchStream;

    async fn fetch(
        &self,
        request: tonic::Request<pb::FetchRequest>,
    ) -> Result<tonic::Response<PbBatchStream>, Status> {
        let request = request.into_inner();
        if let Some(after) = &request.after {
            validate_key(after)?;
        }
        let batches = self
            .data
            .serve_fetch(
                Id(request.member),
                Id(request.from),
                Id(request.to),
                request.after,
            )
            .await?;
        let stream = batches.map(|batch| {
            batch
                .map(|entries| batch_to_pb(&entries))
                .map_err(Status::from)
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn absorb(
        &self,
        request: tonic::Request<Streaming<pb::RecordBatch>>,
    ) -> Result<tonic::Response<pb::AbsorbReply>, Status> {
        let batches = batches_from_pb(request.into_inner(), self.data.config().max_value);
        let applied = self.data.serve_absorb(batches).await?;
        Ok(tonic::Response::new(pb::AbsorbReply { applied }))
    }

    async fn replicate(
        &self,
        request: tonic::Request<pb::ReplicateRequest>,
    ) -> Result<tonic::Response<pb::ReplicateReply>, Status> {
        tracing::debug!("copies from {}", super::peer(&request));
        let request = request.into_inner();
        let hint_for = request
            .hint_for
            .map(|m| member_from_pb(Some(m), "hint_for"))
            .transpose()?;
        let entries = batch_from_pb(
            pb::RecordBatch {
                records: request.records,
            },
            self.data.config().max_value,
        )?;
        let applied = self.data.serve_replicate(&entries, hint_for.as_ref())?;
        Ok(tonic::Response::new(pb::ReplicateReply { applied }))
    }

    async fn sync(
        &self,
        request: tonic::Request<pb::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncReply>, Status> {
        let request = sync_request_from_pb(request.into_inner(), self.data.config().max_value)?;
        let reply = self.data.serve_sync(request).await?;
        Ok(tonic::Response::new(sync_reply_to_pb(&reply)))
    }

    async fn forget(
        &self,
        request: tonic::Request<pb::RecordBatch>,
    ) -> Result<tonic::Response<pb::ForgetReply>, Status> {
        let entries = batch_from_pb(request.into_inner(), self.data.config().max_value)?;
        let forgotten = self.data.serve_forget(&entries)?;
        Ok(tonic::Response::new(pb::ForgetReply { forgotten }))
    }
}
