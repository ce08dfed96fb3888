//! A baseline for the hand-off benchmark: the same batches a hand-off
//! sends, streamed over loopback gRPC from memory, with no store behind.

use super::data::PbBatchStream;
use super::{pb, DataClient, Pool};
use crate::data::{Peers, TransferStats, BATCH_BYTES, BATCH_RECORDS};
use crate::id::Id;
use crate::ring::NodeRef;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Status, Streaming};

/// Serves `Data.Fetch` from memory: the same batches a hand-off sends,
/// without a store behind them.
struct SyntheticData {
    batch: pb::RecordBatch,
    batches: u64,
}

#[tonic::async_trait]
impl pb::data_server::Data for SyntheticData {
    async fn write(
        &self,
        _: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn read(
        &self,
        _: tonic::Request<pb::ReadRequest>,
    ) -> Result<tonic::Response<pb::ReadReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    type FetchStream = PbBatchStream;

    async fn fetch(
        &self,
        _: tonic::Request<pb::FetchRequest>,
    ) -> Result<tonic::Response<PbBatchStream>, Status> {
        let batch = self.batch.clone();
        let stream = futures::stream::iter(0..self.batches).map(move |_| Ok(batch.clone()));
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn absorb(
        &self,
        _: tonic::Request<Streaming<pb::RecordBatch>>,
    ) -> Result<tonic::Response<pb::AbsorbReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn replicate(
        &self,
        _: tonic::Request<pb::ReplicateRequest>,
    ) -> Result<tonic::Response<pb::ReplicateReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn sync(
        &self,
        _: tonic::Request<pb::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }

    async fn forget(
        &self,
        _: tonic::Request<pb::RecordBatch>,
    ) -> Result<tonic::Response<pb::ForgetReply>, Status> {
        Err(Status::unimplemented("baseline serves fetch only"))
    }
}

/// Streams `records` records of `key_size`-byte keys and `value_size`-byte
/// values over a loopback gRPC server stream, batched as a hand-off batches
/// them, and drains it with the hand-off's client: the cost of the wire
/// alone, to set beside a real hand-off. Returns the records and bytes
/// received and the time taken.
pub async fn stream_baseline(
    records: u64,
    key_size: usize,
    value_size: usize,
) -> crate::Result<TransferStats> {
    let per_record = key_size + value_size + 32;
    let per_batch = (BATCH_BYTES.div_ceil(per_record)).clamp(1, BATCH_RECORDS) as u64;
    let batch = pb::RecordBatch {
        records: (0..per_batch)
            .map(|i| pb::StoredRecord {
                key: format!("{i:0key_size$}").into_bytes(),
                version: Some(pb::Version {
                    clock: i,
                    writer: 1,
                }),
                tombstone: false,
                expires_at_ms: None,
                value: vec![7; value_size],
            })
            .collect(),
    };
    let service = SyntheticData {
        batch,
        batches: records.div_ceil(per_batch),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let max = crate::data::DataConfig::new(crate::data::DEFAULT_MAX_VALUE, Duration::from_secs(5))
        .max_message();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                pb::data_server::DataServer::new(service)
                    .max_encoding_message_size(max)
                    .max_decoding_message_size(max),
            )
            .serve_with_incoming(super::incoming(listener)),
    );
    let started = std::time::Instant::now();
    let peer = DataClient::new(Arc::new(Pool::new(Duration::from_secs(5))), max);
    let mut stream = peer
        .fetch(&NodeRef::new(Id(0), addr), Id(0), Id(0), None)
        .await?;
    let mut stats = TransferStats::default();
    while let Some(batch) = stream.next().await {
        stats.count(&batch?);
    }
    stats.elapsed = started.elapsed();
    server.abort();
    Ok(stats)
}
