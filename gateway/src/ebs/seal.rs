//! Sealing an EBS-direct snapshot after CompleteSnapshot, and ending one
//! (sealed, failed or timed out) with its staging logs dropped.
//!
//! The seal streams the staged block map (merged from the staging replicas in
//! block order), rebuilds only the manifest pages it touches on top of the
//! parent's (untouched pages keep the parent's ids; core's `ManifestWriter`),
//! stores the pages as each is whole and the root last, and commits
//! `CompleteSnapshot` with the root: from then on the snapshot is like any
//! other. Transient failures are retried with backoff; after that, or on a
//! permanent one, the snapshot ends in `error` with the reason. Every step is
//! idempotent (same map, same pages, same root), so a seal redone by another
//! gateway is harmless.
//!
//! The sweeper (`ebs/sweeper.rs`) resumes the seals a gateway left and ends
//! the snapshots that timed out through the same steps.

use super::chunks::{load_page, load_root, put_chunk, Region};
use super::error::EbsError;
use super::state::Ebs;
use crate::retry::backoff;
use cairn_core::command::{Command, CommandOutput, MetaError};
use cairn_core::manifest::{ManifestError, ManifestWriter, PAGE_BLOCKS};
use cairn_core::records::{Holder, Snapshot};
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, BLOCK_SIZE};
use std::sync::Arc;

/// Attempts of a seal before the snapshot ends in `error`.
const SEAL_ATTEMPTS: u32 = 5;

/// The job slot of a snapshot's seal (or timeout): one at a time.
pub fn claim_key(id: &str) -> String {
    format!("ebs-seal/{id}")
}

/// Seals `snap` in the background, unless a seal of it already runs here.
pub fn spawn_seal(ebs: Arc<Ebs>, snap: Snapshot) {
    let Some(claim) = ebs.ctx.jobs.claim(&claim_key(snap.id.as_str())) else { return };
    let e = ebs.clone();
    ebs.ctx.jobs.spawn(async move {
        let _claim = claim;
        seal_job(&e, snap).await;
    });
}

fn transient(e: &EbsError) -> bool {
    matches!(e, EbsError::Throttled(_))
}

async fn seal_job(ebs: &Ebs, snap: Snapshot) {
    let mut n = 0;
    let outcome = loop {
        n += 1;
        match seal_once(ebs, &snap).await {
            Err(e) if transient(&e) && n < SEAL_ATTEMPTS => {
                tracing::warn!(snapshot = %snap.id, attempt = n, error = %e, "seal interrupted, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            other => break other,
        }
    };
    let cmd = match &outcome {
        Ok((root, full)) => Command::CompleteSnapshot {
            id: snap.id.clone(),
            manifest_root: *root,
            full_size_bytes: *full,
            at_ms: now_ms(),
        },
        Err(e) => Command::FailSnapshot {
            id: snap.id.clone(),
            message: format!("The snapshot could not be sealed: {e}"),
            at_ms: now_ms(),
        },
    };
    finish(ebs, &snap, &cmd).await;
}

/// Commits the outcome, then drops the staging logs.
pub async fn finish(ebs: &Ebs, snap: &Snapshot, cmd: &Command) {
    match ebs.ctx.meta.write(cmd).await {
        Ok(Ok(CommandOutput::Snapshot(s))) => {
            tracing::info!(snapshot = %s.id, state = s.state.as_str(), message = ?s.state_message, "ebs snapshot sealed");
        }
        Ok(Ok(_)) => {}
        Ok(Err(MetaError::SnapshotNotFound(_))) => {
            tracing::info!(snapshot = %snap.id, "snapshot deleted while it was pending");
        }
        Ok(Err(e)) => tracing::warn!(snapshot = %snap.id, error = %e, "snapshot outcome refused"),
        // Still pending: the sweeper retries.
        Err(e) => {
            tracing::warn!(snapshot = %snap.id, error = %e, "could not record the outcome");
            return;
        }
    }
    match Region::load(&ebs.ctx).await {
        Ok(region) => ebs.staging.remove(&region, snap.id.as_str()).await,
        Err(e) => tracing::warn!(snapshot = %snap.id, error = %e, "staging logs not removed"),
    }
}

/// Builds and stores the manifest; returns its root and the snapshot's
/// full size (bytes of non-zero blocks). The staged map streams in block
/// order into core's `ManifestWriter` a page at a time: with a parent, only
/// the parent pages holding a staged block are read, and only pages whose
/// content changed are stored, each as soon as it is whole. So the seal
/// holds one page, whatever the volume's size.
async fn seal_once(ebs: &Ebs, snap: &Snapshot) -> Result<(ChunkId, u64), EbsError> {
    let ctx = &ebs.ctx;
    let region = Region::load(ctx).await?;
    let mut staged = ebs.staging.block_map(&region, snap.id.as_str()).await?;
    let size_bytes = snap.volume_size_gib << 30;
    let mut writer = match &snap.parent {
        Some(pid) => {
            // A parent deleted since StartSnapshot is still named by the
            // snapshot's hold, which keeps its manifest.
            let held = ctx.hold(&Holder::Snapshot(snap.id.clone())).await?;
            let root_id = match ctx.snapshot(pid).await?.and_then(|p| p.manifest_root) {
                Some(root) => root,
                None => held.and_then(|h| h.roots.first().copied()).ok_or_else(|| {
                    EbsError::Internal(format!("parent snapshot {pid} has no manifest"))
                })?,
            };
            let root = load_root(ctx, &region, root_id).await?;
            let parent_blocks = match root.data_blocks {
                Some(n) => n,
                // A version 1 root does not record it: count its pages.
                None => {
                    let mut n = 0;
                    for (_, id) in &root.pages {
                        n += load_page(ctx, &region, *id).await?.entries.len() as u64;
                    }
                    n
                }
            };
            ManifestWriter::incremental(root_id, &root, size_bytes, parent_blocks)
                .map_err(corrupt)?
        }
        None => ManifestWriter::full(size_bytes, None),
    };
    // Pages first, root last: a root is never stored before what it names.
    let mut page: Option<(u64, Changes)> = None;
    let mut blocks = 0u64;
    while let Some((idx, s)) = staged.next().await? {
        blocks += 1;
        let n = idx / PAGE_BLOCKS;
        if let Some((done, changes)) = page.take_if(|(p, _)| *p != n) {
            store_page(ebs, &region, &mut writer, done, changes).await?;
        }
        page.get_or_insert_with(|| (n, Vec::new())).1.push((idx, s.chunk));
    }
    if let Some((done, changes)) = page {
        store_page(ebs, &region, &mut writer, done, changes).await?;
    }
    // CompleteSnapshot counted the map it checked into the COMPLETE mark.
    // Fewer blocks now: never seal a snapshot without them. While a replica
    // was missing from the merge that may pass (it held a counted write the
    // others missed), so the seal is tried again; with every replica whole
    // the blocks are gone. (More is a put that raced the completion and was
    // acknowledged: it is kept.)
    let expected = ebs.staging.stat(&region, snap.id.as_str()).await?;
    if expected.completed && blocks < expected.changed_blocks_count {
        let short = format!(
            "the staged block map has {blocks} blocks; CompleteSnapshot counted {}",
            expected.changed_blocks_count
        );
        return Err(match staged.from_every_replica() {
            true => EbsError::Internal(short),
            false => EbsError::Throttled(format!("{short} while a staging replica was missing")),
        });
    }
    let root = writer.finish();
    put_chunk(ctx, &region, root.root_id, bytes::Bytes::from(root.root)).await?;
    Ok((root.root_id, root.data_blocks * BLOCK_SIZE as u64))
}

/// A page's staged blocks: (block, chunk or `None` for zero), ascending.
type Changes = Vec<(u64, Option<ChunkId>)>;

fn corrupt(e: ManifestError) -> EbsError {
    EbsError::Internal(format!("manifest: {e}"))
}

/// Writes page `page` from its parent's (read when there is one) and the
/// staged `changes`, and stores it when it changed.
async fn store_page(
    ebs: &Ebs,
    region: &Region,
    writer: &mut ManifestWriter,
    page: u64,
    changes: Changes,
) -> Result<(), EbsError> {
    let parent = match writer.parent_page(page) {
        Some(id) => Some(load_page(&ebs.ctx, region, id).await?),
        None => None,
    };
    if let Some((id, bytes)) = writer.write_page(page, parent.as_ref(), changes).map_err(corrupt)? {
        put_chunk(&ebs.ctx, region, id, bytes::Bytes::from(bytes)).await?;
    }
    Ok(())
}
