//! Sealing an EBS-direct snapshot after CompleteSnapshot, and the sweeper.
//!
//! The seal reads the staged block map, rebuilds only the manifest pages it
//! touches on top of the parent's (untouched pages keep the parent's ids;
//! core's `IncrementalBuilder`),
//! stores the pages and the root at RF, and commits `CompleteSnapshot` with
//! the root: from then on the snapshot is like any other. Transient failures
//! are retried with backoff; after that, or on a permanent one, the snapshot
//! ends in `error` with the reason. Every step is idempotent (same map, same
//! pages, same root), so a seal redone by another gateway is harmless.
//!
//! The sweeper runs on every gateway: it resumes seals whose staging logs
//! hold COMPLETE (the gateway that accepted CompleteSnapshot may have died),
//! and ends in `error` any pending EBS-direct snapshot with no put or
//! complete for its Timeout, so none stays pending forever.

use super::chunks::{load_page, load_root, put_chunk, Region};
use super::error::EbsError;
use super::state::{is_direct, Ebs};
use crate::retry::backoff;
use cairn_core::command::{Command, CommandOutput, MetaError};
use cairn_core::manifest::{IncrementalBuilder, ManifestBuilder, ManifestError};
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, BLOCK_SIZE};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Attempts of a seal before the snapshot ends in `error`.
const SEAL_ATTEMPTS: u32 = 5;

fn claim_key(id: &str) -> String {
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
async fn finish(ebs: &Ebs, snap: &Snapshot, cmd: &Command) {
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
/// full size (bytes of non-zero blocks). With a parent, core's
/// `IncrementalBuilder` reads only the parent pages holding a staged block
/// and writes only pages whose content changed.
async fn seal_once(ebs: &Ebs, snap: &Snapshot) -> Result<(ChunkId, u64), EbsError> {
    let ctx = &ebs.ctx;
    let region = Region::load(ctx).await?;
    let staged = ebs.staging.block_map(&region, snap.id.as_str()).await?;
    let size_bytes = snap.volume_size_gib << 30;
    let corrupt = |e: ManifestError| EbsError::Internal(format!("manifest: {e}"));
    let built = match &snap.parent {
        Some(pid) => {
            let p = ctx
                .snapshot(pid)
                .await?
                .ok_or_else(|| EbsError::SnapshotNotFound(pid.to_string()))?;
            let root_id = p.manifest_root.ok_or_else(|| {
                EbsError::Internal(format!("parent snapshot {pid} has no manifest"))
            })?;
            let root = load_root(ctx, &region, root_id).await?;
            let mut b = IncrementalBuilder::new(root_id, root, size_bytes).map_err(corrupt)?;
            for (idx, s) in &staged {
                b.set(*idx, s.chunk);
            }
            let mut pages = BTreeMap::new();
            for (n, id) in b.pages_needed() {
                pages.insert(n, load_page(ctx, &region, id).await?);
            }
            b.finish(&pages).map_err(corrupt)?
        }
        None => {
            let mut b = ManifestBuilder::new(size_bytes);
            for (idx, s) in &staged {
                b.set(*idx, s.chunk);
            }
            b.finish()
        }
    };
    // Pages first, root last: a root is never stored before what it names.
    for (id, bytes) in &built.pages {
        put_chunk(ctx, &region, *id, bytes).await?;
    }
    put_chunk(ctx, &region, built.root_id, &built.root).await?;
    Ok((built.root_id, built.data_blocks * BLOCK_SIZE as u64))
}

/// How often the sweeper looks: often enough to time out within a few
/// percent of the shortest Timeout (10 minutes), never more than every 30 s.
fn sweep_interval(minute: Duration) -> Duration {
    (minute / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

pub fn spawn_sweeper(ebs: Arc<Ebs>) {
    let e = ebs.clone();
    ebs.ctx.jobs.spawn(async move {
        let every = sweep_interval(e.minute);
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = sweep(&e).await {
                tracing::debug!(error = %err, "ebs sweep skipped");
            }
        }
    });
}

/// When an idle pending snapshot times out: its last activity (or start)
/// plus its Timeout.
pub fn deadline_ms(last_activity_ms: u64, timeout_minutes: u64, minute: Duration) -> u64 {
    last_activity_ms.saturating_add(timeout_minutes.saturating_mul(minute.as_millis() as u64))
}

async fn sweep(ebs: &Arc<Ebs>) -> Result<(), EbsError> {
    let pending: Vec<Snapshot> = ebs
        .ctx
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| s.state == SnapshotState::Pending && is_direct(s))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let region = Region::load(&ebs.ctx).await?;
    for snap in pending {
        let stat = match ebs.staging.stat(&region, snap.id.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(snapshot = %snap.id, error = %e, "staging unreadable; later");
                continue;
            }
        };
        if stat.completed {
            spawn_seal(ebs.clone(), snap);
            continue;
        }
        let timeout = if stat.timeout_minutes > 0 {
            stat.timeout_minutes
        } else {
            super::start::DEFAULT_TIMEOUT as u64
        };
        let last = stat.last_activity_ms.max(snap.start_time_ms);
        if now_ms() < deadline_ms(last, timeout, ebs.minute) {
            continue;
        }
        // A seal that started meanwhile wins: claim first.
        let Some(_claim) = ebs.ctx.jobs.claim(&claim_key(snap.id.as_str())) else { continue };
        let cmd = Command::FailSnapshot {
            id: snap.id.clone(),
            message: format!(
                "The snapshot timed out: no PutSnapshotBlock or CompleteSnapshot for {timeout} minutes."
            ),
            at_ms: now_ms(),
        };
        tracing::info!(snapshot = %snap.id, timeout, "ebs snapshot timed out");
        finish(ebs, &snap, &cmd).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_and_intervals() {
        let minute = Duration::from_secs(60);
        assert_eq!(deadline_ms(1_000, 10, minute), 601_000);
        assert_eq!(deadline_ms(u64::MAX, 10, minute), u64::MAX);
        assert_eq!(sweep_interval(minute), Duration::from_secs(15));
        assert_eq!(sweep_interval(Duration::from_millis(100)), Duration::from_millis(100));
        assert_eq!(sweep_interval(Duration::from_secs(3600)), Duration::from_secs(30));
    }
}
