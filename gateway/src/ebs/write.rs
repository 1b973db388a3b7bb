//! PutSnapshotBlock and CompleteSnapshot.
//!
//! A block is held in memory once, for the one request carrying it: its
//! BLAKE3 id (which placement needs) and its SHA-256 (which the client's
//! checksum needs) are both over the whole block before any byte may be
//! stored, so streaming it further would not lower the peak; the body-limit
//! layer caps each request at `max_body_bytes`, and the concurrency limit
//! caps how many are in flight.

use super::checksum::{self, AGGREGATION, ALGORITHM};
use super::chunks::{put_chunk, Region};
use super::error::{EbsError, Invalid};
use super::seal;
use super::state::{is_direct, own_snapshot, Ebs};
use crate::http::auth::Caller;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_core::command::Command;
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::time::now_ms;
use cairn_core::{is_zero, ChunkId, BLOCK_SIZE};
use cairn_proto::pb::{StagingEntry, StagingKind};
use std::sync::Arc;

/// Blocks per GiB of volume.
const BLOCKS_PER_GIB: u64 = (1 << 30) / BLOCK_SIZE as u64;
/// Progress (x-amz-Progress) is committed when it rose by this many points.
const PROGRESS_STEP: u8 = 5;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, EbsError> {
    h.get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                EbsError::invalid(
                    Invalid::ParameterValue,
                    format!("The {name} header is not valid text."),
                )
            })
        })
        .transpose()
}

fn required<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, EbsError> {
    header(h, name)?.ok_or_else(|| {
        EbsError::invalid(Invalid::ParameterValue, format!("The {name} header is required."))
    })
}

fn check_algorithm(h: &HeaderMap) -> Result<(), EbsError> {
    match header(h, "x-amz-Checksum-Algorithm")? {
        None => Ok(()),
        Some(a) if a == ALGORITHM => Ok(()),
        Some(a) => Err(EbsError::invalid(
            Invalid::ParameterValue,
            format!("The checksum algorithm '{a}' is not supported; use {ALGORITHM}."),
        )),
    }
}

/// The caller's pending EBS-direct snapshot `id`, which can take blocks.
async fn writable(ebs: &Ebs, caller: &Caller, id: &str) -> Result<Snapshot, EbsError> {
    let s = own_snapshot(ebs, caller, id).await?;
    if !is_direct(&s) {
        return Err(EbsError::invalid(
            Invalid::SnapshotId,
            format!(
                "The snapshot '{id}' was not started with StartSnapshot; it cannot be written."
            ),
        ));
    }
    if s.state != SnapshotState::Pending {
        return Err(not_pending(id, s.state.as_str()));
    }
    Ok(s)
}

fn not_pending(id: &str, state: &str) -> EbsError {
    EbsError::invalid(
        Invalid::SnapshotId,
        format!("The snapshot '{id}' is {state}; blocks can be written only while it is pending."),
    )
}

pub async fn put(
    ebs: &Ebs,
    caller: &Caller,
    id: &str,
    index: u64,
    h: &HeaderMap,
    body: Bytes,
) -> Result<Response, EbsError> {
    let len = required(h, "x-amz-Data-Length")?;
    if len != BLOCK_SIZE.to_string() {
        return Err(EbsError::invalid(
            Invalid::ParameterValue,
            format!("DataLength must be {BLOCK_SIZE}, not '{len}'."),
        ));
    }
    if body.len() != BLOCK_SIZE {
        return Err(EbsError::invalid(
            Invalid::ParameterValue,
            format!("The block is {} bytes; it must be {BLOCK_SIZE}.", body.len()),
        ));
    }
    let sent = required(h, "x-amz-Checksum")?.to_string();
    check_algorithm(h)?;
    let progress = match header(h, "x-amz-Progress")? {
        None => None,
        Some(p) => Some(p.parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| {
            EbsError::invalid(
                Invalid::ParameterValue,
                format!("Progress must be 0 to 100, not '{p}'."),
            )
        })?),
    };
    let snap = writable(ebs, caller, id).await?;
    let blocks = snap.volume_size_gib * BLOCKS_PER_GIB;
    if index >= blocks {
        return Err(EbsError::invalid(
            Invalid::Block,
            format!(
                "Block index {index} is past the end of the {}-GiB volume ({blocks} blocks).",
                snap.volume_size_gib
            ),
        ));
    }
    // Hashing 512 KiB twice is CPU work: keep it off the async workers.
    let data = body.clone();
    let (sha, chunk) = tokio::task::spawn_blocking(move || {
        let sha = checksum::sha256(&data);
        let chunk = (!is_zero(&data)).then(|| ChunkId::of(&data));
        (sha, chunk)
    })
    .await
    .map_err(|e| EbsError::Internal(format!("hashing failed: {e}")))?;
    // A mismatch stores nothing.
    checksum::verify_block(&sent, &sha)?;

    let region = Region::load(&ebs.ctx).await?;
    if let Some(c) = chunk {
        put_chunk(&ebs.ctx, &region, c, body.clone()).await?;
    }
    drop(body);
    let entry = StagingEntry {
        kind: if chunk.is_some() { StagingKind::Block } else { StagingKind::Zero } as i32,
        block_index: index,
        chunk_id: chunk.map(|c| c.0.to_vec()).unwrap_or_default(),
        sha256: sha.to_vec(),
        at_ms: now_ms(),
        value: 0,
    };
    if !ebs.staging.append(&region, snap.id.as_str(), vec![entry]).await? {
        return Err(not_pending(id, "being completed"));
    }
    if let Some(p) = progress.map(|p| p.min(99)) {
        if p >= snap.progress.saturating_add(PROGRESS_STEP) {
            // Advisory: DescribeSnapshots shows it; a failure loses nothing.
            if let Err(e) = ebs
                .ctx
                .meta
                .write(&Command::SnapshotProgress { id: snap.id.clone(), progress: p })
                .await
            {
                tracing::debug!(snapshot = %snap.id, error = %e, "progress not committed");
            }
        }
    }
    let mut resp = StatusCode::CREATED.into_response();
    let hs = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&checksum::to_b64(&sha)) {
        hs.insert("x-amz-Checksum", v);
    }
    hs.insert("x-amz-Checksum-Algorithm", HeaderValue::from_static(ALGORITHM));
    Ok(resp)
}

fn status(state: &str) -> Response {
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "Status": state }))).into_response()
}

pub async fn complete(
    ebs: &Arc<Ebs>,
    caller: &Caller,
    id: &str,
    h: &HeaderMap,
) -> Result<Response, EbsError> {
    let count_text = required(h, "x-amz-ChangedBlocksCount")?;
    let count: u64 = count_text.parse().map_err(|_| {
        EbsError::invalid(
            Invalid::ParameterValue,
            format!("ChangedBlocksCount must be a non-negative integer, not '{count_text}'."),
        )
    })?;
    let aggregate = header(h, "x-amz-Checksum")?.map(str::to_string);
    check_algorithm(h)?;
    if let Some(m) = header(h, "x-amz-Checksum-Aggregation-Method")? {
        if m != AGGREGATION {
            return Err(EbsError::invalid(
                Invalid::ParameterValue,
                format!("The aggregation method '{m}' is not supported; use {AGGREGATION}."),
            ));
        }
    }
    let snap = own_snapshot(ebs, caller, id).await?;
    if !is_direct(&snap) {
        return Err(EbsError::invalid(
            Invalid::SnapshotId,
            format!("The snapshot '{id}' was not started with StartSnapshot."),
        ));
    }
    match snap.state {
        SnapshotState::Pending => {}
        // Completing again is a retry: answer what it became.
        other => return Ok(status(other.as_str())),
    }
    let region = Region::load(&ebs.ctx).await?;
    if ebs.staging.stat(&region, snap.id.as_str()).await?.completed {
        seal::spawn_seal(ebs.clone(), snap);
        return Ok(status("pending"));
    }
    // One pass over the merged map, a block at a time: it can be 33 M
    // blocks long.
    let mut blocks = ebs.staging.block_map(&region, snap.id.as_str()).await?;
    let mut written = 0u64;
    let mut linear = aggregate.is_some().then(checksum::Linear::default);
    while let Some((_, staged)) = blocks.next().await? {
        written += 1;
        if let Some(l) = &mut linear {
            l.add(&staged.sha256);
        }
    }
    if written != count {
        return Err(EbsError::invalid(
            Invalid::ParameterValue,
            format!("ChangedBlocksCount is {count}, but {written} blocks were written."),
        ));
    }
    if let (Some(agg), Some(l)) = (aggregate, linear) {
        l.verify(&agg)?;
    }
    let mark = StagingEntry {
        kind: StagingKind::Complete as i32,
        at_ms: now_ms(),
        value: count,
        ..Default::default()
    };
    ebs.staging.append(&region, snap.id.as_str(), vec![mark]).await?;
    tracing::info!(snapshot = %snap.id, blocks = count, "ebs snapshot completing");
    seal::spawn_seal(ebs.clone(), snap);
    Ok(status("pending"))
}
