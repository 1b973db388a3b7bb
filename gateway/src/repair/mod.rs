//! Nodes that leave, driven from the gateway: re-replication (every
//! referenced chunk back at RF on the nodes placement picks now) and down
//! detection.
//!
//! - [`pass`]: one re-replication pass over every live manifest, run by
//!   the worker here every `repair_interval_secs` and on demand: after an
//!   operator drains or removes a node (`/_cairn/nodes/...`), when a node
//!   is declared down or comes back, and on `POST /_cairn/repair`.
//! - [`missing`]: which replicas are missing (pure).
//! - [`watch`]: asks every node for its stats; a node unreachable for
//!   `node_down_secs` is proposed `down`, a down node that answers `up`.
//!
//! Placement everywhere excludes nodes that are not up (`Ctx::fleet`), so
//! once a node leaves, new copies go elsewhere and a pass copies what it
//! held to the nodes placement picks instead. What the passes did is kept
//! in `crate::repair_state`, below the context.

pub mod missing;
pub mod pass;
pub mod watch;

use crate::ctx::Ctx;
use cairn_worker::{Progress, Stop, Worker};
use pass::run_pass;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts re-replication and down detection among the gateway's workers.
pub fn spawn(ctx: &Arc<Ctx>) {
    let handle =
        ctx.workers.spawn(RepairWorker { ctx: ctx.clone(), last_pass: Some(Instant::now()) });
    ctx.repair.set_worker(handle);
    ctx.workers.spawn(watch::NodeWatch::new(ctx.clone()));
}

struct RepairWorker {
    ctx: Arc<Ctx>,
    last_pass: Option<Instant>,
}

impl RepairWorker {
    fn due(&self) -> bool {
        let s = self.ctx.repair.status();
        if s.requested > s.finished {
            return true;
        }
        let every = self.ctx.config.repair_interval_secs;
        every > 0 && self.last_pass.is_none_or(|t| t.elapsed() >= Duration::from_secs(every))
    }
}

impl Worker for RepairWorker {
    type Error = String;

    fn name(&self) -> String {
        "re-replication".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, String> {
        if !self.due() {
            return Ok(Progress::Idle);
        }
        let repair = &self.ctx.repair;
        let serving = repair.status().requested;
        repair.update(|s| s.running = true);
        let outcome = tokio::select! {
            r = run_pass(&self.ctx) => r,
            _ = stop.wait() => Err("stopped by shutdown".to_string()),
        };
        self.last_pass = Some(Instant::now());
        repair.update(|s| {
            s.running = false;
            s.finished = s.finished.max(serving);
            s.passes += 1;
            match &outcome {
                Ok(r) => {
                    s.last = Some(r.clone());
                    s.last_error = None;
                }
                Err(e) => s.last_error = Some(e.clone()),
            }
        });
        outcome.map(|_| Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_secs(self.ctx.config.repair_interval_secs.clamp(1, 60))
    }
}
