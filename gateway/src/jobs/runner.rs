//! The copy job runner: the worker that scans the copy jobs every
//! `job_scan_ms` and starts those this gateway can acquire. The copies it
//! starts are jobs of their own ([`super::copy::spawn_copy`]), each holding
//! its snapshot's claim; a scan only starts them.

use super::copy::spawn_copy;
use crate::ctx::Ctx;
use cairn_core::time::now_ms;
use cairn_worker::{Progress, Stop, Worker, WorkerHandle};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Starts this gateway's copy job runner among its workers.
pub fn spawn_runner(ctx: &Arc<Ctx>) -> WorkerHandle {
    tracing::info!(gateway_id = ctx.gateway_id(), "copy job runner started");
    ctx.workers.spawn(CopyRunner { ctx: ctx.clone() })
}

/// Runs the copy jobs this gateway can acquire: lapsed leases of other
/// gateways, and its own jobs not running here (after a restart under a
/// fixed `gateway_id`).
pub struct CopyRunner {
    ctx: Arc<Ctx>,
}

impl CopyRunner {
    /// One scan: starts a copy for every job this gateway can take.
    async fn scan(&self) {
        let c = &self.ctx;
        match c.copy_jobs().await {
            Ok(jobs) => {
                let now = now_ms();
                for j in jobs {
                    if j.can_acquire(c.gateway_id(), now)
                        && !c.jobs.is_running(j.snapshot_id.as_str())
                    {
                        tracing::info!(
                            snapshot = %j.snapshot_id,
                            previous_owner = ?j.owner,
                            "taking over a copy job"
                        );
                        spawn_copy(c, j.snapshot_id, None);
                    }
                }
            }
            // The next scan tries again, at the usual interval.
            Err(e) => tracing::debug!(error = %e, "cannot scan copy jobs"),
        }
    }
}

impl Worker for CopyRunner {
    type Error = Infallible;

    fn name(&self) -> String {
        "copy job runner".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, Infallible> {
        tokio::select! {
            _ = self.scan() => {}
            // A scan cut short by shutdown starts nothing more.
            _ = stop.wait() => {}
        }
        Ok(Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_millis(self.ctx.config.job_scan_ms)
    }
}
