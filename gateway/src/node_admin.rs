//! Operator endpoints for chunk nodes and re-replication:
//!
//! - `GET /_cairn/nodes`: every registered node with its zone, state and
//!   since when, its chunks and bytes (asked now; removed nodes are not
//!   asked) and its repair backlog (replicas it should hold and lacked at
//!   the end of the last re-replication pass), plus that pass's totals.
//! - `POST /_cairn/nodes/{id}/drain` and `.../remove`: change the node's
//!   state and ask for a re-replication pass; 202 with the request's number
//!   (served once `GET /_cairn/repair` shows `finished` at least that), 404
//!   for an unknown node, 409 with the reason when refused (the last node
//!   of a zone or destination placement could pick). A refused or unknown
//!   node changes nothing.
//! - `GET /_cairn/nodes/{id}/volumes`: the volumes the node hosts (their
//!   only live copy: what is lost with its disk, or must be moved before
//!   it is stopped), 404 for an unknown node.
//! - `GET /_cairn/repair`, `POST /_cairn/repair`: the last pass, a pass now.

use crate::ctx::Ctx;
use crate::nodes::call;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::command::{Command, MetaError, NodeEntry};
use cairn_core::records::NodeState;
use cairn_proto::pb;
use serde::Serialize;
use std::sync::Arc;

/// One node as `cairn admin node list` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub zone: String,
    pub az: String,
    pub outpost: Option<String>,
    pub state: &'static str,
    pub since_ms: u64,
    /// `None` when the node did not answer (or, removed, was not asked).
    pub chunks: Option<u64>,
    pub bytes: Option<u64>,
    /// The node's file system: bytes free and in all (when it answered).
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub backlog: u64,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// `GET /_cairn/nodes`.
pub async fn list(State(ctx): State<Arc<Ctx>>) -> Response {
    let fleet = match ctx.fleet().await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let asks = fleet.iter().map(|e| {
        let ctx = ctx.clone();
        async move {
            if e.state == NodeState::Removed {
                return None;
            }
            let mut c = ctx.nodes.chunk_store(&e.info).ok()?;
            call(&e.info.node_id, 5, c.stats(pb::ChunkStatsRequest {})).await.ok()
        }
    });
    let stats = futures::future::join_all(asks).await;
    let repair = ctx.repair.status();
    let backlog = |id: &str| {
        repair.last.as_ref().and_then(|r| r.backlog_by_node.get(id).copied()).unwrap_or(0)
    };
    let mut rows: Vec<NodeRow> =
        fleet.iter().zip(stats).map(|(e, s)| row(e, s, backlog(&e.info.node_id))).collect();
    rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let body = serde_json::json!({ "nodes": rows, "repair": repair });
    (StatusCode::OK, Json(body)).into_response()
}

fn row(e: &NodeEntry, stats: Option<pb::ChunkStatsReply>, backlog: u64) -> NodeRow {
    NodeRow {
        node_id: e.info.node_id.clone(),
        zone: e.info.zone(),
        az: e.info.az.clone(),
        outpost: e.info.outpost.as_ref().map(|o| o.to_string()),
        state: e.state.as_str(),
        since_ms: e.since_ms,
        chunks: stats.as_ref().map(|s| s.chunks),
        bytes: stats.as_ref().map(|s| s.bytes),
        disk_free_bytes: stats.as_ref().map(|s| s.disk_free_bytes),
        disk_total_bytes: stats.as_ref().map(|s| s.disk_total_bytes),
        backlog,
    }
}

/// `GET /_cairn/nodes/{id}/volumes`.
pub async fn volumes(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let (nodes, volumes) = match tokio::try_join!(ctx.node_list(), ctx.volumes()) {
        Ok(both) => both,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if !nodes.iter().any(|n| n.node_id == id) {
        return error(StatusCode::NOT_FOUND, format!("no chunk node is named {id}"));
    }
    let mut ids: Vec<String> =
        volumes.into_iter().filter(|v| v.host_node == id).map(|v| v.id.to_string()).collect();
    ids.sort();
    (StatusCode::OK, Json(serde_json::json!({ "node_id": id, "volumes": ids }))).into_response()
}

/// `POST /_cairn/nodes/{id}/drain`.
pub async fn drain(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let at_ms = ctx.now_ms();
    change(&ctx, Command::DrainNode { node_id: id, at_ms }).await
}

/// `POST /_cairn/nodes/{id}/remove`.
pub async fn remove(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let at_ms = ctx.now_ms();
    change(&ctx, Command::RemoveNode { node_id: id, at_ms }).await
}

async fn change(ctx: &Ctx, cmd: Command) -> Response {
    match ctx.meta.write(&cmd).await {
        Ok(Ok(_)) => {
            let requested = ctx.repair.request();
            let body = serde_json::json!({ "requested": requested });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Ok(Err(e @ MetaError::NodeNotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /_cairn/repair`: asks for a re-replication pass now.
pub async fn repair_request(State(ctx): State<Arc<Ctx>>) -> Response {
    let requested = ctx.repair.request();
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "requested": requested }))).into_response()
}

/// `GET /_cairn/repair`: whether a pass runs, and the last one's report.
pub async fn repair_status(State(ctx): State<Arc<Ctx>>) -> Response {
    (StatusCode::OK, Json(ctx.repair.status())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::records::ChunkNodeInfo;

    #[test]
    fn rows_show_zone_state_and_figures() {
        let e = NodeEntry {
            info: ChunkNodeInfo {
                node_id: "a1".into(),
                az: "cairn-1a".into(),
                outpost: None,
                grpc_addr: "http://a1:1".into(),
                nbd_addr: "a1:2".into(),
            },
            state: NodeState::Draining,
            since_ms: 9,
        };
        let stats = pb::ChunkStatsReply {
            node_id: "a1".into(),
            zone: "cairn-1a".into(),
            chunks: 3,
            bytes: 30,
            disk_free_bytes: 70,
            disk_total_bytes: 100,
        };
        let v = serde_json::to_value(row(&e, Some(stats), 2)).unwrap();
        assert_eq!(v["state"], "draining");
        assert_eq!(v["zone"], "cairn-1a");
        assert_eq!(
            (v["chunks"].as_u64(), v["bytes"].as_u64(), v["backlog"].as_u64()),
            (Some(3), Some(30), Some(2))
        );
        assert!(serde_json::to_value(row(&e, None, 0)).unwrap()["chunks"].is_null());
    }
}
