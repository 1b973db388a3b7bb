//! Operator endpoints under `/_cairn/`: health and chunk store figures.

use crate::ctx::Ctx;
use crate::nodes::call;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::command::Query;
use cairn_proto::pb;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// 200 when the metadata group answers a (linearizable) read within 3 s.
pub async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), ctx.meta.read(&Query::Nodes)).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(_) => unavailable("metadata group did not answer within 3s".into()),
    }
}

fn unavailable(error: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "unavailable", "error": error})),
    )
        .into_response()
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

/// `ChunkStore.Stats` of every registered chunk node, summed.
pub async fn chunks(State(ctx): State<Arc<Ctx>>) -> Response {
    let nodes = match ctx.node_list().await {
        Ok(n) => n,
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
