//! Operations: what an operator sees of a running process and ring, on
//! the admin port and from the command line.
//!
//! Sits above `node` (it reads the node's state; nothing below calls it):
//! [`run`] starts a node and, when asked, its admin port, which serves
//! Prometheus metrics ([`metrics`]) and the dashboard ([`dashboard`]);
//! [`walk`] follows successors round the ring for `chordal ring` and the
//! dashboard; [`launch`] starts `chordal` processes for `chordal local`,
//! the process tests and the benchmarks.

pub mod dashboard;
pub mod launch;
pub mod metrics;
pub mod walk;

use crate::data::DataNode;
use crate::error::{Error, Result};
use crate::node::{Node, NodeConfig, NodeStats};
use metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs a node on `listener` until `shutdown`, with its admin port on
/// `admin` if given; the node leaves the ring, then the admin port stops.
pub async fn run(
    config: NodeConfig,
    admin: Option<SocketAddr>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let advertise = config.advertise.clone();
    let data_dir = config.data_dir.clone();
    // Bound before the node starts, so that a taken admin port stops
    // nothing half-started.
    let admin = match admin {
        Some(addr) => Some((
            addr,
            TcpListener::bind(addr).await.map_err(|e| {
                Error::Config(format!("cannot listen on the admin address {addr}: {e}"))
            })?,
        )),
        None => None,
    };
    let node = Node::start(config, listener).await?;
    let stop_admin = tokio_util::sync::CancellationToken::new();
    let admin = match admin {
        Some((asked, listener)) => {
            let addr = listener.local_addr().unwrap_or(asked);
            crate::node::data_dir::write_admin_address(&data_dir, addr)?;
            tracing::info!(
                "admin port: dashboard at http://{addr}/, metrics at http://{addr}/metrics"
            );
            let metrics = Metrics::new(node.requests(), node.stats(), node.data().clone());
            let stopped = stop_admin.clone();
            Some(tokio::spawn(serve_admin(
                listener,
                metrics,
                node.stats().clone(),
                node.data().clone(),
                advertise,
                async move { stopped.cancelled().await },
            )))
        }
        None => None,
    };
    // The admin port serves until the node has left the ring.
    let outcome = node.run_until(shutdown).await;
    stop_admin.cancel();
    if let Some(admin) = admin {
        admin.await.ok();
    }
    outcome
}

/// Serves the admin port on `listener` until `shutdown`: `GET /metrics`
/// (Prometheus' text format, the gauges read afresh for every scrape) and
/// the dashboard.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Metrics,
    stats: Arc<NodeStats>,
    data: Arc<DataNode>,
    advertise: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use axum::routing::get;
    let metrics = Arc::new(metrics);
    let scrape = move || {
        let metrics = metrics.clone();
        async move {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics.encode(),
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .merge(dashboard::routes(stats, data, advertise));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("the admin port stopped: {error}");
    }
}
