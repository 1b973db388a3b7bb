//! The EBS staging sweeper, a worker on every gateway: it resumes seals
//! whose staging logs hold COMPLETE (the gateway that accepted
//! CompleteSnapshot may have died), and ends in `error` any pending
//! EBS-direct snapshot with no put or complete for its Timeout, so none
//! stays pending forever.

use super::chunks::Region;
use super::error::EbsError;
use super::seal::{claim_key, finish, spawn_seal};
use super::start::DEFAULT_TIMEOUT;
use super::state::{is_direct, Ebs};
use cairn_core::command::Command;
use cairn_core::records::{Snapshot, SnapshotState};
use cairn_core::time::now_ms;
use cairn_worker::{Progress, Stop, Worker};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often the sweeper looks: often enough to time out within a few
/// percent of the shortest Timeout (10 minutes), never more than every 30 s.
fn sweep_interval(minute: Duration) -> Duration {
    (minute / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Sweeps once per [`sweep_interval`], the first sweep one interval after
/// the gateway started.
pub struct Sweeper {
    ebs: Arc<Ebs>,
    /// The first step only waits: the gateway has just started.
    started: bool,
}

impl Sweeper {
    pub fn new(ebs: Arc<Ebs>) -> Self {
        Sweeper { ebs, started: false }
    }
}

impl Worker for Sweeper {
    type Error = Infallible;

    fn name(&self) -> String {
        "ebs staging sweeper".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, Infallible> {
        if !std::mem::replace(&mut self.started, true) {
            return Ok(Progress::Idle);
        }
        tokio::select! {
            swept = sweep(&self.ebs) => {
                // The next sweep tries again, at the usual interval.
                if let Err(err) = swept {
                    tracing::debug!(error = %err, "ebs sweep skipped");
                }
            }
            // What a sweep cut short by shutdown left, the next gateway's redoes.
            _ = stop.wait() => {}
        }
        Ok(Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        sweep_interval(self.ebs.minute)
    }
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
        let timeout =
            if stat.timeout_minutes > 0 { stat.timeout_minutes } else { DEFAULT_TIMEOUT as u64 };
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
