//! The copy job runner: the worker that scans the copy jobs every
//! `job_scan_ms` and starts those this gateway can acquire. The copies it
//! starts are jobs of their own ([`super::copy::spawn_copy`]), each holding
//! its snapshot's claim; a scan only starts them.
//!
//! Whether another gateway's lease lapsed is judged without clocks: the
//! runner remembers, per job, the holder and lease expiry it last saw and
//! since when (its own monotonic [`Instant`]). Only once one value stayed
//! unchanged for a full `job_lease_ms` does it try a takeover, and the
//! metadata group grants it only if the expiry is still that value
//! (`JobOp::AcquireObserved`). A holder that renews changes the value, so a
//! live holder is never taken over however far apart the clocks are.

use super::copy::spawn_copy;
use crate::ctx::Ctx;
use cairn_core::records::CopyJob;
use cairn_core::SnapshotId;
use cairn_worker::{Progress, Stop, Worker, WorkerHandle};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts this gateway's copy job runner among its workers.
pub fn spawn_runner(ctx: &Arc<Ctx>) -> WorkerHandle {
    tracing::info!(gateway_id = ctx.gateway_id(), "copy job runner started");
    ctx.workers.spawn(CopyRunner { ctx: ctx.clone(), watched: HashMap::new() })
}

/// Runs the copy jobs this gateway can acquire: lapsed leases of other
/// gateways, and its own jobs not running here (after a restart under a
/// fixed `gateway_id`).
pub struct CopyRunner {
    ctx: Arc<Ctx>,
    /// Jobs held by other gateways: what their lease looked like and since
    /// when it has looked so.
    watched: HashMap<SnapshotId, Watch>,
}

/// One other gateway's lease as the runner watches it.
#[derive(Debug, Clone, PartialEq)]
struct Watch {
    owner: Option<String>,
    lease_expires_ms: u64,
    since: Instant,
}

/// What the runner does about one job at one scan.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Nothing: it runs here, or its holder's lease was not seen lapse.
    Wait,
    /// Run it: it is this gateway's or nobody's.
    Run,
    /// Take it over from a holder whose expiry stayed at this value for a lease.
    TakeOver(u64),
}

/// Decides about `job` at `now`, updating what `watched` holds for it.
fn decide(
    watched: &mut HashMap<SnapshotId, Watch>,
    me: &str,
    job: &CopyJob,
    lease: Duration,
    now: Instant,
) -> Decision {
    if job.owner.is_none() || job.owner.as_deref() == Some(me) {
        watched.remove(&job.snapshot_id);
        return Decision::Run;
    }
    let seen =
        Watch { owner: job.owner.clone(), lease_expires_ms: job.lease_expires_ms, since: now };
    let w = watched.entry(job.snapshot_id.clone()).or_insert_with(|| seen.clone());
    if w.owner != seen.owner || w.lease_expires_ms != seen.lease_expires_ms {
        // Renewed (or taken) since the last scan: watch the new value.
        *w = seen;
        return Decision::Wait;
    }
    if now.duration_since(w.since) >= lease {
        Decision::TakeOver(w.lease_expires_ms)
    } else {
        Decision::Wait
    }
}

impl CopyRunner {
    /// One scan: starts a copy for every job this gateway can take.
    async fn scan(&mut self) {
        let c = &self.ctx;
        let jobs = match c.copy_jobs().await {
            Ok(jobs) => jobs,
            // The next scan tries again, at the usual interval.
            Err(e) => return tracing::debug!(error = %e, "cannot scan copy jobs"),
        };
        let lease = Duration::from_millis(c.config.job_lease_ms);
        let now = Instant::now();
        // Jobs that ended are watched no more.
        self.watched.retain(|id, _| jobs.iter().any(|j| &j.snapshot_id == id));
        for j in jobs {
            if c.jobs.is_running(j.snapshot_id.as_str()) {
                self.watched.remove(&j.snapshot_id);
                continue;
            }
            match decide(&mut self.watched, c.gateway_id(), &j, lease, now) {
                Decision::Wait => {}
                Decision::Run => spawn_copy(c, j.snapshot_id, None, None),
                Decision::TakeOver(seen) => {
                    tracing::info!(
                        snapshot = %j.snapshot_id,
                        previous_owner = ?j.owner,
                        "taking over a copy job"
                    );
                    // Watched afresh if the takeover fails (the holder renewed).
                    self.watched.remove(&j.snapshot_id);
                    spawn_copy(c, j.snapshot_id, None, Some(seen));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::copy_job;

    #[test]
    fn a_takeover_waits_for_an_unchanged_expiry_over_a_full_lease() {
        let lease = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut watched = HashMap::new();
        let mut j = copy_job("gw-a", 1_000);
        assert_eq!(decide(&mut watched, "gw-b", &j, lease, t0), Decision::Wait);
        let t1 = t0 + Duration::from_millis(1_999);
        assert_eq!(decide(&mut watched, "gw-b", &j, lease, t1), Decision::Wait);
        // A renewal restarts the watch, whatever value it writes.
        j.lease_expires_ms = 5;
        assert_eq!(decide(&mut watched, "gw-b", &j, lease, t0 + lease), Decision::Wait);
        let t2 = t0 + lease + lease;
        assert_eq!(decide(&mut watched, "gw-b", &j, lease, t2), Decision::TakeOver(5));
        // Its own job, or nobody's, runs at once.
        assert_eq!(decide(&mut watched, "gw-a", &j, lease, t0), Decision::Run);
        j.owner = None;
        assert_eq!(decide(&mut watched, "gw-b", &j, lease, t0), Decision::Run);
    }
}
