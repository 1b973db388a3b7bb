//! Operator endpoints under `/_cairn/`: health (with the background
//! workers' states), chunk store figures, garbage collection (ask for a
//! pass, see the last one) and what deleting a snapshot would free.

use crate::ctx::Ctx;
use crate::gc::usage::{snapshot_usage, UsageError};
use crate::nodes::call;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::command::Query;
use cairn_core::records::NodeState;
use cairn_core::SnapshotId;
use cairn_proto::pb;
use cairn_worker::WorkerStatus;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// `GET /metrics`: [`crate::metrics::Metrics`], workers as they are now.
pub async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    // Counted by the metadata group; left out of this scrape if it is slow.
    let counts =
        tokio::time::timeout(Duration::from_secs(2), ctx.counts()).await.ok().and_then(Result::ok);
    let body = ctx.metrics.render(&ctx.workers.list(), counts.as_ref());
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE_VALUE)], body).into_response()
}

/// `/healthz`: the process is alive and serving HTTP (it does not look at
/// anything else, so a restart is only asked for when the process hangs).
pub async fn alive() -> &'static str {
    "ok\n"
}

/// `/readyz` and `/_cairn/health`: 200 when the metadata group answers a (linearizable) read within 3 s.
/// Either way the answer lists the background workers.
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    let workers = workers_json(&ctx.workers.list());
    let (status, mut body) =
        match tokio::time::timeout(Duration::from_secs(3), ctx.meta.read(&Query::Nodes)).await {
            Ok(Ok(_)) => (StatusCode::OK, serde_json::json!({"status": "ok"})),
            Ok(Err(e)) => unavailable_json(e.to_string()),
            Err(_) => unavailable_json("metadata group did not answer within 3s".into()),
        };
    body["workers"] = workers;
    (status, Json(body)).into_response()
}

fn unavailable_json(error: String) -> (StatusCode, serde_json::Value) {
    (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "unavailable", "error": error}))
}

fn unavailable(error: String) -> Response {
    let (status, body) = unavailable_json(error);
    (status, Json(body)).into_response()
}

/// The workers as the health answer lists them.
pub fn workers_json(workers: &[WorkerStatus]) -> serde_json::Value {
    workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.name,
                "state": w.state.as_str(),
                "steps": w.steps,
                "errors": w.errors,
                "consecutive_errors": w.consecutive_errors,
                "last_error": w.last_error,
                "for_ms": w.for_how_long.as_millis() as u64,
            })
        })
        .collect()
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NodeChunks {
    pub node_id: String,
    pub zone: String,
    pub chunks: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChunkTotals {
    pub nodes: Vec<NodeChunks>,
    pub chunks: u64,
    pub bytes: u64,
    /// Registered nodes that did not answer; their chunks are not counted.
    pub unreachable: Vec<String>,
}

/// Sums the answering nodes' figures.
pub fn totals(nodes: Vec<NodeChunks>, unreachable: Vec<String>) -> ChunkTotals {
    ChunkTotals {
        chunks: nodes.iter().map(|n| n.chunks).sum(),
        bytes: nodes.iter().map(|n| n.bytes).sum(),
        nodes,
        unreachable,
    }
}

/// `ChunkStore.Stats` of every registered chunk node but the removed ones, summed.
pub async fn chunks(State(ctx): State<Arc<Ctx>>) -> Response {
    let nodes: Vec<_> = match ctx.fleet().await {
        Ok(f) => f.into_iter().filter(|e| e.state != NodeState::Removed).map(|e| e.info).collect(),
        Err(e) => return unavailable(e.to_string()),
    };
    let asks = nodes.iter().map(|n| {
        let ctx = ctx.clone();
        async move {
            let mut c = ctx.nodes.chunk_store(n)?;
            call(&n.node_id, 5, c.stats(pb::ChunkStatsRequest {})).await
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut ok = Vec::new();
    let mut unreachable = Vec::new();
    for (n, a) in nodes.iter().zip(answers) {
        match a {
            Ok(s) => ok.push(NodeChunks {
                node_id: n.node_id.clone(),
                zone: if s.zone.is_empty() { n.zone() } else { s.zone },
                chunks: s.chunks,
                bytes: s.bytes,
            }),
            Err(e) => {
                tracing::warn!(node = %n.node_id, error = %e, "chunk stats unavailable");
                unreachable.push(n.node_id.clone());
            }
        }
    }
    ok.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    (StatusCode::OK, Json(totals(ok, unreachable))).into_response()
}

/// `POST /_cairn/gc`: asks for a pass now; answers the request's number
/// (it is served once `GET /_cairn/gc` shows `finished` at least that).
pub async fn gc_request(State(ctx): State<Arc<Ctx>>) -> Response {
    let requested = ctx.gc.request();
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "requested": requested }))).into_response()
}

/// `GET /_cairn/gc`: whether a pass runs, and the last one's report or error.
pub async fn gc_status(State(ctx): State<Arc<Ctx>>) -> Response {
    (StatusCode::OK, Json(ctx.gc.status())).into_response()
}

/// `GET /_cairn/snapshots/{id}/usage`: the bytes deleting the snapshot
/// would free now, and those it shares.
pub async fn usage(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let not_found = |id: &str| {
        let msg = UsageError::NotFound(id.to_string()).to_string();
        (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let Some(sid) = SnapshotId::parse(&id) else { return not_found(&id) };
    match snapshot_usage(&ctx, &sid).await {
        Ok(u) => (StatusCode::OK, Json(u)).into_response(),
        Err(UsageError::NotFound(id)) => not_found(&id),
        Err(UsageError::Unavailable(e)) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_shape() {
        let t = totals(
            vec![
                NodeChunks { node_id: "a".into(), zone: "cairn-1a".into(), chunks: 2, bytes: 10 },
                NodeChunks { node_id: "b".into(), zone: "cairn-1b".into(), chunks: 3, bytes: 20 },
            ],
            vec!["c".into()],
        );
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["chunks"], 5);
        assert_eq!(v["bytes"], 30);
        assert_eq!(v["nodes"][1]["node_id"], "b");
        assert_eq!(v["nodes"][0]["zone"], "cairn-1a");
        assert_eq!(v["unreachable"][0], "c");
    }
}
