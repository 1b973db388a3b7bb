//! The archive worker: every gateway scans the tiering records and does the
//! work they ask for (archive, restore, delete an archive copy), one at a
//! time, under a lease it renews as it reports progress; it also ends
//! temporary restores whose time is up. The work is idempotent, so a lease
//! lost to another gateway costs work, never data (see core's `tiering`).

use super::handle::Archive;
use super::report::{step, Reporter, LEASE_MS};
use super::restore::{purge, restore};
use super::write::archive;
use crate::ctx::Ctx;
use cairn_core::command::TierOp;
use cairn_core::records::SnapshotState;
use cairn_core::tiering::{SnapshotTiering, TierStatus};
use cairn_worker::{Progress, Stop, Worker};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often the worker looks for work unasked.
const SCAN: Duration = Duration::from_secs(5);

pub fn spawn(ctx: &Arc<Ctx>, archive: &Arc<Archive>) {
    let handle = ctx.workers.spawn(TierWorker { ctx: ctx.clone(), archive: archive.clone() });
    *archive.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
}

struct TierWorker {
    ctx: Arc<Ctx>,
    archive: Arc<Archive>,
}

impl TierWorker {
    /// Does the work `t` asks for, if this gateway wins its lease.
    async fn work_on(&self, t: SnapshotTiering) -> Result<(), String> {
        let ctx = &self.ctx;
        let me = ctx.gateway_id().to_string();
        let id = &t.snapshot_id;
        let claim = TierOp::Claim { gateway: me.clone(), lease_ms: LEASE_MS };
        let Some(t) = step(ctx, id, claim).await?.filter(|t| t.worker.as_deref() == Some(&me))
        else {
            return Ok(());
        };
        let store = self.archive.store.as_ref();
        let report = Reporter::new(ctx, id);
        let snap = ctx.snapshot(id).await.map_err(|e| e.to_string())?;
        if t.purge && !t.status.in_progress() || snap.is_none() {
            if let Some(copy) = &t.archive {
                purge(store, &copy.prefix).await?;
            } else {
                purge(store, &super::format::prefix(id.as_str())).await?;
            }
            tracing::info!(snapshot = %id, "archive copy deleted");
            step(ctx, id, TierOp::Purged { gateway: me }).await?;
            return Ok(());
        }
        let Some(snap) = snap.filter(|s| s.state == SnapshotState::Completed) else {
            return Ok(());
        };
        let outcome = match (t.status, &t.archive) {
            (TierStatus::ArchivalInProgress, _) => archive(ctx, store, &snap, &report)
                .await
                .map(|archive| TierOp::Archived { gateway: me.clone(), archive }),
            (
                TierStatus::TemporaryRestoreInProgress | TierStatus::PermanentRestoreInProgress,
                Some(copy),
            ) => restore(ctx, store, &snap, copy, &report)
                .await
                .map(|()| TierOp::Restored { gateway: me.clone() }),
            _ => return Ok(()),
        };
        let op = match outcome {
            Ok(op) => op,
            Err(message) => {
                tracing::warn!(snapshot = %id, status = t.status.as_str(), error = %message, "tier work failed");
                TierOp::Failed { gateway: me, message }
            }
        };
        step(ctx, id, op).await?;
        tracing::info!(snapshot = %id, was = t.status.as_str(), "tier work done");
        Ok(())
    }

    async fn scan(&self) -> Result<(), String> {
        let ctx = &self.ctx;
        let all = ctx.tierings().await.map_err(|e| e.to_string())?;
        let now = ctx.now_ms();
        for (id, t) in all {
            if t.status == TierStatus::TemporaryRestoreCompleted
                && t.restore_expiry_ms.is_some_and(|e| e <= now)
            {
                step(ctx, &id, TierOp::Expire).await?;
                tracing::info!(snapshot = %id, "temporary restore expired");
            } else if (t.status.in_progress() || t.purge) && t.can_work(ctx.gateway_id(), now) {
                self.work_on(t).await?;
            }
        }
        Ok(())
    }
}

impl Worker for TierWorker {
    type Error = Infallible;

    fn name(&self) -> String {
        "archive tier".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, Infallible> {
        tokio::select! {
            r = self.scan() => if let Err(e) = r {
                tracing::warn!(error = %e, "archive tier scan failed");
            },
            _ = stop.wait() => {}
        }
        Ok(Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        SCAN
    }
}
