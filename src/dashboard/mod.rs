//! The dashboard on the admin port: a picture of the ring (`/`), this
//! process's routing state and storage (`/node`), and the JSON they are
//! drawn from (`/api/ring`, `/api/node`), redrawn every two seconds.
//!
//! The ring is walked from this process (`admin::walk_ring`), so the
//! dashboard of any process shows the whole ring as seen from there.

use crate::data::Data;
use crate::metrics::Metrics;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Membership events kept for the dashboard.
const MAX_EVENTS: usize = 50;
/// Members a walk of the ring visits at most.
const MAX_WALK: usize = 4096;

/// The last membership changes of this process's members, newest last.
#[derive(Debug, Default)]
pub struct Events {
    events: Mutex<VecDeque<(u64, String)>>,
}

impl Events {
    pub fn push(&self, text: String) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back((crate::data::wall_ms(), text));
    }

    pub fn list(&self) -> Vec<(u64, String)> {
        self.events
            .lock()
            .expect("events lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// The dashboard's routes.
pub fn routes(metrics: Arc<Metrics>, data: Arc<Data>, advertise: String) -> Router {
    let ring = {
        let (metrics, advertise) = (metrics.clone(), advertise.clone());
        move || ring_json(metrics.clone(), advertise.clone())
    };
    let node = move || node_json(metrics.clone(), data.clone(), advertise.clone());
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

async fn ring_json(metrics: Arc<Metrics>, advertise: String) -> Response {
    let walk = match crate::admin::walk_ring(&advertise, Duration::from_secs(3), MAX_WALK).await {
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
    let events: Vec<Value> = metrics
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

async fn node_json(metrics: Arc<Metrics>, data: Arc<Data>, advertise: String) -> Response {
    let info = async {
        let mut conn = crate::rpc::ApiConn::connect(&advertise, Duration::from_secs(3)).await?;
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
        "stabilize_rounds": metrics.stabilize_rounds.get(),
        "anti_entropy_bytes": metrics.anti_entropy_bytes.get(),
    }))
    .into_response()
}
