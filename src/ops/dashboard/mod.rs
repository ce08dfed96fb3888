//! The dashboard on the admin port: a picture of the ring (`/`), this
//! process's routing state and storage (`/node`), and the JSON they are
//! drawn from (`/api/ring`, `/api/node`), redrawn every two seconds.
//!
//! The ring is walked from this process ([`super::walk::walk_ring`]), so the
//! dashboard of any process shows the whole ring as seen from there.

use crate::data::DataNode;
use crate::node::NodeStats;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Members a walk of the ring visits at most.
const MAX_WALK: usize = 4096;

/// The dashboard's routes.
pub fn routes(stats: Arc<NodeStats>, data: Arc<DataNode>, advertise: String) -> Router {
    let ring = {
        let (stats, advertise) = (stats.clone(), advertise.clone());
        move || ring_json(stats.clone(), advertise.clone())
    };
    let node = move || node_json(stats.clone(), data.clone(), advertise.clone());
    Router::new()
        .route("/", get(|| async { Html(include_str!("ring.html")) }))
        .route("/node", get(|| async { Html(include_str!("node.html")) }))
        .route("/api/ring", get(ring))
        .route("/api/node", get(node))
}

fn unavailable(error: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": error.to_string() })),
    )
        .into_response()
}

fn hex(id: crate::id::Id) -> String {
    format!("{:016x}", id.0)
}

async fn ring_json(stats: Arc<NodeStats>, advertise: String) -> Response {
    let walk = match super::walk::walk_ring(&advertise, Duration::from_secs(3), MAX_WALK).await {
        Ok(walk) => walk,
        Err(error) => return unavailable(error),
    };
    let members: Vec<Value> = walk
        .members
        .iter()
        .map(|m| {
            json!({
                "id": hex(m.me.id),
                "position": m.me.id.0 as f64 / 2f64.powi(64),
                "addr": m.me.addr,
                "predecessor": m.predecessor.as_ref().map(|p| hex(p.id)),
                "records": m.owned_records,
                "replicas": m.replicas.iter().map(|r| json!({
                    "addr": r.replica.addr,
                    "in_sync": r.in_sync,
                    "last_round_ago_ms": r.last_round_ago.map(|d| d.as_millis() as u64),
                    "error": r.error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let processes: Vec<Value> = walk
        .process_info
        .iter()
        .map(|p| json!({ "addr": p.addr, "records": p.records, "hints": p.hints }))
        .collect();
    let events: Vec<Value> = stats
        .events
        .list()
        .into_iter()
        .map(|(at_ms, text)| json!({ "at_ms": at_ms, "text": text }))
        .collect();
    Json(json!({
        "via": advertise,
        "closed": walk.closed,
        "ordered": walk.ordered,
        "problems": walk.problems,
        "members": members,
        "processes": processes,
        "events": events,
    }))
    .into_response()
}

async fn node_json(stats: Arc<NodeStats>, data: Arc<DataNode>, advertise: String) -> Response {
    let info = async {
        let mut conn = crate::rpc::ApiClient::connect(&advertise, Duration::from_secs(3)).await?;
        conn.describe().await
    }
    .await;
    let info = match info {
        Ok(info) => info,
        Err(error) => return unavailable(error),
    };
    let refs = |list: &[crate::ring::NodeRef]| -> Vec<Value> {
        list.iter()
            .map(|n| json!({ "id": hex(n.id), "addr": n.addr }))
            .collect()
    };
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|m| {
            json!({
                "id": hex(m.me.id),
                "joined": m.joined,
                "predecessor": m.predecessor.as_ref().map(|p| json!({ "id": hex(p.id), "addr": p.addr })),
                "successors": refs(&m.successors),
                "fingers": refs(&m.fingers),
                "records": m.owned_records,
            })
        })
        .collect();
    Json(json!({
        "addr": info.addr,
        "members": members,
        "records": info.records,
        "hints": info.hints,
        "stored_bytes": data.store().engine().stored_bytes(),
        "replicas": info.replicas,
        "write_quorum": info.write_quorum,
        "read_quorum": info.read_quorum,
        "stabilize_rounds": stats.stabilize_rounds.get(),
        "anti_entropy_bytes": data.stats().anti_entropy_bytes.get(),
    }))
    .into_response()
}
