//! Garbage collection, driven from the gateway: the worker that runs a pass
//! every `gc_interval_secs` and on demand (`cairn admin gc`), what the last
//! pass did, and what deleting one snapshot would free.
//!
//! The mechanism is mark and sweep with a generation fence (see [`pass`]):
//! the gateway marks every manifest a completed snapshot or a hold needs
//! into a live filter ([`mark`], `cairn_core::gc`), and each chunk node
//! sweeps what the filter lacks and was not touched since the fence of the
//! oldest pending holder, then compacts its packs. Passes of several
//! gateways may overlap: each is safe on its own, so they need no lease.
//! What the passes did is kept in `crate::gc_state`, below the context.

pub mod mark;
pub mod pass;
pub mod usage;

use crate::ctx::Ctx;
use cairn_worker::{Progress, Stop, Worker};
use pass::run_pass;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the garbage collector among the gateway's workers.
pub fn spawn(ctx: &Arc<Ctx>) {
    // The first periodic pass comes one interval after start.
    let handle = ctx.workers.spawn(GcWorker { ctx: ctx.clone(), last_pass: Some(Instant::now()) });
    ctx.gc.set_worker(handle);
}

struct GcWorker {
    ctx: Arc<Ctx>,
    last_pass: Option<Instant>,
}

impl GcWorker {
    fn due(&self) -> bool {
        let s = self.ctx.gc.status();
        if s.requested > s.finished {
            return true;
        }
        let every = self.ctx.config.gc_interval_secs;
        every > 0 && self.last_pass.is_none_or(|t| t.elapsed() >= Duration::from_secs(every))
    }
}

impl Worker for GcWorker {
    type Error = String;

    fn name(&self) -> String {
        "garbage collector".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, String> {
        if !self.due() {
            return Ok(Progress::Idle);
        }
        let gc = &self.ctx.gc;
        let serving = gc.status().requested;
        gc.update(|s| s.running = true);
        let outcome = tokio::select! {
            r = run_pass(&self.ctx) => r,
            _ = stop.wait() => Err("stopped by shutdown".to_string()),
        };
        self.last_pass = Some(Instant::now());
        gc.update(|s| {
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
        // Wakes on demand; otherwise looks again often enough to keep the
        // interval (checking is free).
        Duration::from_secs(self.ctx.config.gc_interval_secs.clamp(1, 60))
    }
}
