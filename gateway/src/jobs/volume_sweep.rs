//! The volume sweep: the worker that, every `job_scan_ms`, looks for volumes
//! left `creating` or `deleting` and drives each to its end (`available` or
//! `error`, or gone) with a job of [`super::volumes`], and for modifications
//! left `modifying`, which it finishes with [`super::modify`]. Such volumes are what
//! a gateway that died mid-request left, a job that gave up (host down), or
//! a record write that failed.
//!
//! A volume is swept only once the sweep has seen it in the same state for
//! `volume_stall_ms` on its own monotonic clock, with no job for it running
//! here (the claims of `tasks.rs`, so one gateway never runs two jobs for a
//! volume): the request that set the state has finished by then, here or
//! on another gateway. Gateways do not coordinate beyond that; two sweeping
//! one volume at once is harmless, as every step is idempotent.

use super::modify;
use super::volumes::{spawn_finish_delete, spawn_restore};
use crate::ctx::Ctx;
use crate::retry::policy;
use cairn_core::records::{ModificationState, Volume, VolumeModification, VolumeState};
use cairn_core::VolumeId;
use cairn_proto::MetaClientError;
use cairn_worker::{Backoff, Progress, Stop, Worker, WorkerHandle};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts this gateway's volume sweep among its workers.
pub fn spawn_sweep(ctx: &Arc<Ctx>) -> WorkerHandle {
    ctx.workers.spawn(VolumeSweep {
        ctx: ctx.clone(),
        watched: HashMap::new(),
        watched_modifications: HashMap::new(),
    })
}

pub struct VolumeSweep {
    ctx: Arc<Ctx>,
    /// Volumes `creating` or `deleting`: the state seen and since when.
    watched: HashMap<VolumeId, (VolumeState, Instant)>,
    /// Modifications `modifying`: since when.
    watched_modifications: HashMap<VolumeId, Instant>,
}

/// The volumes could not be read this time.
#[derive(Debug, thiserror::Error)]
#[error("cannot read volumes to sweep: {0}")]
pub struct NotYet(#[from] MetaClientError);

/// The volumes among `volumes` that stayed `creating` or `deleting` for
/// `stall` by `now` and run no job here (`running`), updating `watched`.
/// A volume chosen is watched afresh, so a job that fails is retried only
/// after another `stall`.
fn stalled(
    watched: &mut HashMap<VolumeId, (VolumeState, Instant)>,
    volumes: Vec<Volume>,
    running: impl Fn(&VolumeId) -> bool,
    stall: Duration,
    now: Instant,
) -> Vec<Volume> {
    let unfinished: Vec<Volume> = volumes
        .into_iter()
        .filter(|v| matches!(v.state, VolumeState::Creating | VolumeState::Deleting))
        .collect();
    watched.retain(|id, _| unfinished.iter().any(|v| &v.id == id));
    let mut out = Vec::new();
    for v in unfinished {
        if running(&v.id) {
            watched.remove(&v.id);
            continue;
        }
        let (state, since) = watched.entry(v.id.clone()).or_insert((v.state, now));
        if *state != v.state {
            (*state, *since) = (v.state, now);
        } else if now.duration_since(*since) >= stall {
            watched.remove(&v.id);
            out.push(v);
        }
    }
    out
}

/// The volumes among `mods` whose modification stayed `modifying` for
/// `stall` by `now` and run no job here, updating `watched` (as [`stalled`]).
fn stalled_modifications(
    watched: &mut HashMap<VolumeId, Instant>,
    mods: Vec<VolumeModification>,
    running: impl Fn(&VolumeId) -> bool,
    stall: Duration,
    now: Instant,
) -> Vec<VolumeId> {
    let modifying: Vec<VolumeId> = mods
        .into_iter()
        .filter(|m| m.state == ModificationState::Modifying)
        .map(|m| m.volume_id)
        .collect();
    watched.retain(|id, _| modifying.contains(id));
    let mut out = Vec::new();
    for id in modifying {
        if running(&id) {
            watched.remove(&id);
            continue;
        }
        let since = *watched.entry(id.clone()).or_insert(now);
        if now.duration_since(since) >= stall {
            watched.remove(&id);
            out.push(id);
        }
    }
    out
}

impl Worker for VolumeSweep {
    type Error = NotYet;

    fn name(&self) -> String {
        "volume sweep".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, NotYet> {
        let c = &self.ctx;
        let volumes = tokio::select! {
            v = c.volumes() => v?,
            _ = stop.wait() => return Ok(Progress::Idle),
        };
        let stall = Duration::from_millis(c.config.volume_stall_ms);
        let running = |id: &VolumeId| c.jobs.is_running(id.as_str());
        for v in stalled(&mut self.watched, volumes, running, stall, Instant::now()) {
            tracing::info!(volume = %v.id, state = v.state.as_str(), "finishing a stalled volume");
            match v.state {
                VolumeState::Deleting => spawn_finish_delete(c, v),
                _ => spawn_restore(c, v),
            }
        }
        let mods = tokio::select! {
            m = c.modifications() => m?,
            _ = stop.wait() => return Ok(Progress::Idle),
        };
        let now = Instant::now();
        for id in stalled_modifications(&mut self.watched_modifications, mods, running, stall, now)
        {
            tracing::info!(volume = %id, "finishing a stalled volume modification");
            modify::spawn_finish(c, id);
        }
        Ok(Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_millis(self.ctx.config.job_scan_ms)
    }

    fn backoff(&self) -> Backoff {
        policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::volume;

    #[test]
    fn a_volume_is_swept_once_it_stayed_unfinished_for_the_stall_time() {
        let stall = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut watched = HashMap::new();
        let mut v = volume();
        v.state = VolumeState::Creating;
        let idle = |_: &VolumeId| false;
        let ids = |vs: Vec<Volume>| vs.into_iter().map(|v| v.id).collect::<Vec<_>>();
        assert!(stalled(&mut watched, vec![v.clone()], idle, stall, t0).is_empty());
        // A change of state restarts the watch.
        v.state = VolumeState::Deleting;
        assert!(stalled(&mut watched, vec![v.clone()], idle, stall, t0 + stall).is_empty());
        // A job running here for it: not swept, and watched afresh after.
        let busy = |_: &VolumeId| true;
        let t2 = t0 + stall * 2;
        assert!(stalled(&mut watched, vec![v.clone()], busy, stall, t2).is_empty());
        assert!(stalled(&mut watched, vec![v.clone()], idle, stall, t2).is_empty());
        let t3 = t2 + stall;
        assert_eq!(ids(stalled(&mut watched, vec![v.clone()], idle, stall, t3)), [v.id.clone()]);
        // Chosen once: the next time needs another stall.
        assert!(stalled(&mut watched, vec![v.clone()], idle, stall, t3).is_empty());
        // Finished volumes are not watched.
        v.state = VolumeState::Available;
        assert!(stalled(&mut watched, vec![v], idle, stall, t3 + stall).is_empty());
        assert!(watched.is_empty());
    }
}
