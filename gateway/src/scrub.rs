//! Scrub, driven from the gateway: `POST /_cairn/scrub` asks every
//! registered chunk node for a pass now (`ChunkStore.Scrub`), `GET
//! /_cairn/scrub` gathers every node's scrub status (`ChunkStore.ScrubStatus`).
//! The passes themselves run in the chunk nodes (their `scrub` module); the
//! gateway keeps no state: a pass is done on a node once that node's
//! `finished` reaches the number its request answered.

use crate::ctx::Ctx;
use crate::nodes::call;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::records::ChunkNodeInfo;
use cairn_proto::pb;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Deadline of one node's call.
const CALL_SECS: u64 = 10;

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// The pace a request asks for: `bytes_per_sec` (0 or absent: unthrottled).
pub fn parse_pace(params: &HashMap<String, String>) -> Result<u64, String> {
    if let Some(k) = params.keys().find(|k| k.as_str() != "bytes_per_sec") {
        return Err(format!("unknown parameter '{k}' (the only one is bytes_per_sec)"));
    }
    match params.get("bytes_per_sec") {
        None => Ok(0),
        Some(v) => {
            v.parse().map_err(|_| format!("bytes_per_sec must be a whole number, not '{v}'"))
        }
    }
}

/// Calls `ask` on every registered node: (answers in node order, nodes that
/// did not answer).
async fn every_node<T, F, Fut>(ctx: &Arc<Ctx>, ask: F) -> Result<(Vec<T>, Vec<String>), String>
where
    F: Fn(Arc<Ctx>, ChunkNodeInfo) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut nodes = ctx.node_list().await.map_err(|e| e.to_string())?;
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let answers =
        futures::future::join_all(nodes.iter().map(|n| ask(ctx.clone(), n.clone()))).await;
    let (mut ok, mut unreachable) = (Vec::new(), Vec::new());
    for (n, a) in nodes.iter().zip(answers) {
        match a {
            Ok(v) => ok.push(v),
            Err(e) => {
                tracing::warn!(node = %n.node_id, error = %e, "scrub call failed");
                unreachable.push(n.node_id.clone());
            }
        }
    }
    Ok((ok, unreachable))
}

/// `POST /_cairn/scrub[?bytes_per_sec=N]`: a pass now on every node;
/// answers each node's pass number.
pub async fn request(
    State(ctx): State<Arc<Ctx>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let bytes_per_sec = match parse_pace(&params) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let asked = every_node(&ctx, |ctx, n| async move {
        let mut c = ctx.nodes.chunk_store(&n).map_err(|e| e.to_string())?;
        let r = call(&n.node_id, CALL_SECS, c.scrub(pb::ScrubRequest { bytes_per_sec })).await;
        r.map(|r| json!({ "node_id": n.node_id, "pass": r.pass })).map_err(|e| e.to_string())
    })
    .await;
    match asked {
        Ok((nodes, unreachable)) => {
            let body = json!({ "nodes": nodes, "unreachable": unreachable });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// One node's scrub status as the endpoint shows it.
pub fn status_json(s: &pb::ScrubStatusReply) -> Value {
    json!({
        "node_id": s.node_id, "zone": s.zone, "pass": s.pass, "running": s.running,
        "finished": s.finished, "passes_done": s.passes_done,
        "position": { "pack": s.pack, "offset": s.offset },
        "records_checked": s.records_checked, "bytes_checked": s.bytes_checked,
        "found": s.found, "repaired": s.repaired, "unrepairable": s.unrepairable,
        "errors": s.errors, "bytes_per_sec": s.bytes_per_sec,
        "corrupt_total": s.corrupt_total, "repaired_total": s.repaired_total,
        "unrepairable_total": s.unrepairable_total,
        "repair_waiting": s.repair_waiting, "repair_dropped": s.repair_dropped,
    })
}

/// `GET /_cairn/scrub`: every node's scrub status.
pub async fn status(
    State(ctx): State<Arc<Ctx>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(k) = params.keys().next() {
        return error(StatusCode::BAD_REQUEST, format!("unknown parameter '{k}' (none is taken)"));
    }
    let asked = every_node(&ctx, |ctx, n| async move {
        let mut c = ctx.nodes.chunk_store(&n).map_err(|e| e.to_string())?;
        let r = call(&n.node_id, CALL_SECS, c.scrub_status(pb::ScrubStatusRequest {})).await;
        r.map(|s| status_json(&s)).map_err(|e| e.to_string())
    })
    .await;
    match asked {
        Ok((nodes, unreachable)) => {
            (StatusCode::OK, Json(json!({ "nodes": nodes, "unreachable": unreachable })))
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parameter_and_unknown_ones() {
        let p = |kv: &[(&str, &str)]| {
            parse_pace(&kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        assert_eq!(p(&[]), Ok(0));
        assert_eq!(p(&[("bytes_per_sec", "1048576")]), Ok(1 << 20));
        assert!(p(&[("bytes_per_sec", "fast")]).unwrap_err().contains("whole number"));
        assert!(p(&[("rate", "1")]).unwrap_err().contains("unknown parameter 'rate'"));
    }
}
