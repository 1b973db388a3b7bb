//! Operator endpoints for watching work end (`cairn snapshot wait`,
//! `cairn snapshot restore --wait`, the console):
//!
//! - `GET /_cairn/snapshots/{id}/progress`: the snapshot's state, committed
//!   progress and volume size, and the live figures of its copy when this
//!   gateway follows it ([`crate::live`]): percent, bytes read, bytes sent
//!   after deduplication. 404 for an unknown snapshot.
//! - `GET /_cairn/volumes/{id}/hydration`: a volume's state and, for one
//!   restored from a snapshot, how much of it is local on its host already
//!   (blocks not yet local are fetched on first read). 404 for an unknown
//!   volume; `hydrated_bytes` is null while the host does not answer.

use crate::ctx::Ctx;
use crate::nodes::call;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::block::BLOCK_SIZE;
use cairn_core::records::VolumeState;
use cairn_core::{SnapshotId, VolumeId};
use cairn_proto::pb;
use serde_json::json;
use std::sync::Arc;

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn not_found(what: &str, id: &str) -> Response {
    answer(StatusCode::NOT_FOUND, json!({ "error": format!("The {what} '{id}' does not exist.") }))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e.to_string() }))
}

/// `GET /_cairn/snapshots/{id}/progress`.
pub async fn snapshot(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let Some(sid) = SnapshotId::parse(&id) else { return not_found("snapshot", &id) };
    let snap = match ctx.snapshot(&sid).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found("snapshot", &id),
        Err(e) => return unavailable(e),
    };
    let body = json!({
        "snapshot_id": snap.id.to_string(),
        "volume_id": snap.volume_id.to_string(),
        "state": snap.state.as_str(),
        "state_message": snap.state_message,
        "progress": snap.progress,
        "volume_size_bytes": snap.volume_size_gib << 30,
        "full_size_bytes": snap.full_size_bytes,
        "live": ctx.live.get(&sid),
    });
    answer(StatusCode::OK, body)
}

/// `GET /_cairn/volumes/{id}/hydration`.
pub async fn hydration(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Response {
    let Some(vid) = VolumeId::parse(&id) else { return not_found("volume", &id) };
    let volume = match ctx.volume(&vid).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found("volume", &id),
        Err(e) => return unavailable(e),
    };
    let total = volume.size_bytes();
    // A volume not made from a snapshot has nothing to fetch.
    let mut hydrated = volume.snapshot_id.is_none().then_some(total);
    let ready = matches!(volume.state, VolumeState::Available | VolumeState::InUse);
    if hydrated.is_none() && ready {
        hydrated = host_hydrated(&ctx, &volume.host_node, &vid, total).await;
    }
    let body = json!({
        "volume_id": vid.to_string(),
        "state": volume.state.as_str(),
        "snapshot_id": volume.snapshot_id.as_ref().map(|s| s.to_string()),
        "total_bytes": total,
        "hydrated_bytes": hydrated,
        "done": ready && hydrated == Some(total),
    });
    answer(StatusCode::OK, body)
}

/// The bytes of `volume` (`total` in all) its host holds locally, `None` when it does not answer.
async fn host_hydrated(ctx: &Ctx, host: &str, volume: &VolumeId, total: u64) -> Option<u64> {
    let node = ctx.node(host).await.ok()?.ok()?;
    let mut c = ctx.nodes.volume_host(&node).ok()?;
    let req = pb::VolumeStatsRequest { volume_id: volume.to_string() };
    let s = call(host, 5, c.volume_stats(req)).await.ok()?;
    if !s.exists {
        return None;
    }
    if s.hydrated_blocks >= s.total_blocks {
        return Some(total);
    }
    Some(s.hydrated_blocks.saturating_mul(BLOCK_SIZE as u64).min(total))
}
