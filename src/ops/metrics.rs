//! Prometheus metrics of one process, served on the admin port
//! (`GET /metrics`): every gRPC request it served by method and status,
//! with its latency ([`crate::rpc::RequestStats`]); lookups and their hops
//! and stabilization rounds ([`crate::node::NodeStats`]); anti-entropy
//! traffic ([`crate::data::DataStats`]); and records, bytes, hints and
//! members, read afresh at every scrape.
//!
//! Each layer counts into handles of its own; this module only registers
//! them under their names, so nothing below `ops` knows the admin port.

use crate::data::DataNode;
use crate::node::NodeStats;
use crate::rpc::RequestStats;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// One process's metrics: the layers' counters and the gauges set at
/// scrape time.
pub struct Metrics {
    registry: Registry,
    data: Arc<DataNode>,
    records: Gauge,
    stored_bytes: Gauge,
    hints: Gauge,
    members_joined: Gauge,
}

impl Metrics {
    /// Registers the counters of `requests`, `node` and `data`.
    pub fn new(requests: &RequestStats, node: &NodeStats, data: Arc<DataNode>) -> Metrics {
        let mut registry = Registry::with_prefix("chordal");
        registry.register(
            "requests",
            "gRPC requests served, by method and status",
            requests.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a gRPC request (for a stream, until it ends)",
            requests.request_seconds.clone(),
        );
        registry.register(
            "lookup_hops",
            "Processes asked by each lookup this process ran",
            node.lookup_hops.clone(),
        );
        registry.register(
            "stabilize_rounds",
            "Stabilization rounds run by this process's members",
            node.stabilize_rounds.clone(),
        );
        registry.register(
            "anti_entropy_bytes",
            "Bytes of anti-entropy requests and answers of rounds this process drove",
            data.stats().anti_entropy_bytes.clone(),
        );
        registry.register(
            "anti_entropy_records",
            "Records anti-entropy rounds this process drove sent or received",
            data.stats().anti_entropy_records.clone(),
        );
        let records = Gauge::default();
        registry.register(
            "records",
            "Records stored, tombstones included",
            records.clone(),
        );
        let stored_bytes = Gauge::default();
        registry.register(
            "stored_bytes",
            "Bytes of live data files in this process's RocksDB database",
            stored_bytes.clone(),
        );
        let hints = Gauge::default();
        registry.register(
            "hints",
            "Writes held for replicas that could not be reached",
            hints.clone(),
        );
        let members_joined = Gauge::default();
        registry.register(
            "members_joined",
            "This process's members that are in the ring",
            members_joined.clone(),
        );
        Metrics {
            registry,
            data,
            records,
            stored_bytes,
            hints,
            members_joined,
        }
    }

    /// The metrics in Prometheus' text format, the gauges read now.
    pub fn encode(&self) -> String {
        let data = &self.data;
        self.records.set(data.store().tree().root().count as i64);
        self.hints.set(data.hints_held() as i64);
        self.stored_bytes
            .set(data.store().engine().stored_bytes() as i64);
        self.members_joined.set(data.members_joined() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::data::{
        BatchStream, DataConfig, Peers, ReadAnswer, Router, SyncExchange, Wiring, WriteAnswer,
        WriteOp,
    };
    use crate::error::{Error, Result};
    use crate::id::Id;
    use crate::ring::{LookupOutcome, NodeRef};
    use crate::store::{Entry, MemoryEngine, SharedEngine, Store};
    use crate::sync::{ArcRange, SyncRequest};
    use std::time::{Duration, Instant};

    /// A ring and peers nobody can reach: metrics need neither.
    struct Nowhere;

    fn nowhere<T>() -> Result<T> {
        Err(Error::Unavailable("nowhere".into()))
    }

    #[async_trait::async_trait]
    impl Router for Nowhere {
        async fn lookup(&self, _: Id) -> Result<LookupOutcome> {
            nowhere()
        }
    }

    #[async_trait::async_trait]
    impl Peers for Nowhere {
        async fn write(&self, _: &NodeRef, _: &WriteOp) -> Result<WriteAnswer> {
            nowhere()
        }
        async fn read(&self, _: &NodeRef, _: &[u8], _: bool, _: u32) -> Result<ReadAnswer> {
            nowhere()
        }
        async fn replicate(&self, _: &NodeRef, _: &[Entry], _: Option<&NodeRef>) -> Result<u64> {
            nowhere()
        }
        async fn forget(&self, _: &NodeRef, _: &[Entry]) -> Result<u64> {
            nowhere()
        }
        async fn sync(&self, _: &NodeRef, _: ArcRange, _: SyncRequest) -> Result<SyncExchange> {
            nowhere()
        }
        async fn state(&self, _: &NodeRef) -> Result<(Option<NodeRef>, Vec<NodeRef>)> {
            nowhere()
        }
        async fn fetch(
            &self,
            _: &NodeRef,
            _: Id,
            _: Id,
            _: Option<Vec<u8>>,
        ) -> Result<BatchStream> {
            nowhere()
        }
        async fn absorb(&self, _: &NodeRef, _: BatchStream) -> Result<()> {
            nowhere()
        }
    }

    #[test]
    fn the_text_format_names_every_family() {
        let records: SharedEngine = Arc::new(MemoryEngine::new());
        let (_members, receiver) = tokio::sync::watch::channel(Default::default());
        let data = DataNode::new(
            Store::new(records).unwrap(),
            Arc::new(MemoryEngine::new()),
            DataConfig::new(1024, Duration::from_secs(1)),
            Wiring {
                addr: "127.0.0.1:1".into(),
                members: receiver,
                router: Arc::new(Nowhere),
                peers: Arc::new(Nowhere),
                clock: Clock::System,
                seed: 1,
            },
        )
        .unwrap();
        let (requests, node) = (RequestStats::default(), NodeStats::default());
        let metrics = Metrics::new(&requests, &node, Arc::new(data));
        requests.finished("Api/Put", "OK", Instant::now());
        node.lookup_hops.observe(2.0);
        let text = metrics.encode();
        for name in [
            "chordal_requests_total{method=\"Api/Put\",code=\"OK\"} 1",
            "chordal_request_duration_seconds_count{method=\"Api/Put\"} 1",
            "chordal_lookup_hops_count 1",
            "chordal_stabilize_rounds_total",
            "chordal_anti_entropy_bytes_total",
            "chordal_records",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
