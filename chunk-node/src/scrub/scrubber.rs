//! The scrubber: a [`Worker`] that walks every indexed record of the store
//! (see [`crate::store::scrub`]), pack by pack, at a pace, and checks it
//! against its hash; a bad record is buried and queued for repair, and the
//! repairer is woken.
//!
//! A pass starts when asked ([`ScrubState::request`]) or
//! `scrub_interval_secs` after the last one ended (the first one an
//! interval after the node first starts). It ends once every record was
//! checked and the repair queue is empty, so that a finished pass's
//! findings are all repaired or counted unrepairable. Its status is saved
//! now and then (every [`CHECKPOINT_EVERY`] and at each pack's end) to
//! `scrub-checkpoint`, atomically: a restart resumes the pass where it
//! was.

use crate::disk::files::write_versioned;
use crate::scrub::state::{ScrubState, ScrubStatus};
use crate::store::{Checked, ChunkStore, Loc};
use cairn_core::ChunkId;
use cairn_worker::{Progress, Stop, Worker, WorkerHandle};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The file a pass's status is saved to, under the data directory.
pub const CHECKPOINT: &str = "scrub-checkpoint";
pub(crate) const CHECKPOINT_VERSION: u16 = 1;
/// How often a running pass saves its position.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// Payload bytes one unthrottled step checks.
const FAST_STEP_BYTES: u64 = 64 << 20;

pub(crate) struct Scrubber {
    pub(crate) store: ChunkStore,
    pub(crate) state: Arc<ScrubState>,
    pub(crate) checkpoint: PathBuf,
    /// The pace of periodic passes, and the time between them (0: none).
    pub(crate) bytes_per_sec: u64,
    pub(crate) interval: Duration,
    /// The repairer, woken when a record is buried.
    pub(crate) repairer: WorkerHandle,
    /// Records of the pack being checked, still to check.
    pub(crate) todo: VecDeque<(ChunkId, Loc)>,
    pub(crate) saved_at: Instant,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Scrubber {
    /// Starts a pass if one is asked for (abandoning a running one) or due.
    fn maybe_start(&mut self) {
        let start = self.state.take_request().or_else(|| {
            let s = self.state.status();
            let due = !s.running
                && !self.interval.is_zero()
                && unix_now() >= s.last_end_unix.saturating_add(self.interval.as_secs());
            due.then_some((s.pass + 1, self.bytes_per_sec))
        });
        if let Some((pass, bytes_per_sec)) = start {
            self.state.update(|s| {
                *s = ScrubStatus {
                    pass,
                    running: true,
                    bytes_per_sec,
                    finished: s.finished,
                    passes_done: s.passes_done,
                    last_end_unix: s.last_end_unix,
                    ..ScrubStatus::default()
                }
            });
            self.todo.clear();
            tracing::info!(pass, bytes_per_sec, "scrub pass started");
            self.save();
        }
    }

    /// Saves the status (the checkpoint).
    fn save(&mut self) {
        let status = self.state.status();
        if let Err(e) = write_versioned(&self.checkpoint, CHECKPOINT_VERSION, &status) {
            tracing::warn!(error = %e, "cannot save the scrub checkpoint");
        }
        self.saved_at = Instant::now();
    }

    /// Loads the records of the next pack with any left; false at the end.
    async fn load_next(&mut self) -> Result<bool, String> {
        let s = self.state.status();
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            for p in store.scrub_packs().into_iter().filter(|p| *p >= s.pack) {
                let from = if p == s.pack { s.offset } else { 0 };
                let records = store.scrub_records(p, from);
                if !records.is_empty() {
                    return Some((p, records));
                }
            }
            None
        })
        .await
        .map_err(|e| e.to_string())?;
        match found {
            Some((pack, records)) => {
                self.state.update(|s| {
                    if s.pack != pack {
                        (s.pack, s.offset) = (pack, 0);
                    }
                });
                self.todo = records.into();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Checks records of the current pack, up to `budget` payload bytes.
    async fn check_some(&mut self, budget: u64) -> Result<u64, String> {
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some(r) = self.todo.front() {
            if bytes >= budget && !batch.is_empty() {
                break;
            }
            bytes += u64::from(r.1.len);
            batch.push(self.todo.pop_front().expect("front"));
        }
        let store = self.store.clone();
        let checked = tokio::task::spawn_blocking(move || {
            batch.into_iter().map(|(id, loc)| (loc, store.scrub_check(id, loc))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut buried = false;
        self.state.update(|s| {
            for (loc, r) in checked {
                s.records_checked += 1;
                s.bytes_checked += u64::from(loc.len);
                (s.pack, s.offset) = (loc.pack, loc.offset + 1);
                match r {
                    Ok(Checked::Good | Checked::Gone) => {}
                    Ok(Checked::Buried) => {
                        s.found += 1;
                        buried = true;
                    }
                    Err(e) => {
                        s.errors += 1;
                        tracing::error!(pack = loc.pack, offset = loc.offset, error = %e, "scrub could not read a record");
                    }
                }
            }
        });
        if buried {
            self.wake_repairer();
        }
        Ok(bytes)
    }

    fn wake_repairer(&self) {
        self.repairer.wake();
    }

    /// Ends the pass once the repairer has nothing left; true when ended.
    fn finish(&mut self) -> bool {
        let waiting = self.store.repairs_waiting().0;
        if waiting > 0 || self.state.repairing.load(Ordering::SeqCst) > 0 {
            self.wake_repairer();
            return false;
        }
        self.state.update(|s| {
            s.running = false;
            s.finished = s.pass;
            s.passes_done += 1;
            s.last_end_unix = unix_now();
        });
        self.save();
        let s = self.state.status();
        tracing::info!(
            pass = s.pass,
            records = s.records_checked,
            bytes = s.bytes_checked,
            found = s.found,
            repaired = s.repaired,
            unrepairable = s.unrepairable,
            "scrub pass finished"
        );
        true
    }
}

impl Worker for Scrubber {
    type Error = String;

    fn name(&self) -> String {
        "scrubber".into()
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, String> {
        self.maybe_start();
        let s = self.state.status();
        if !s.running {
            return Ok(Progress::Idle);
        }
        if self.todo.is_empty() {
            if self.saved_at.elapsed() >= Duration::from_secs(1) {
                self.save();
            }
            if !self.load_next().await? {
                if !self.finish() {
                    stop.sleep(Duration::from_millis(20)).await;
                }
                return Ok(Progress::Busy);
            }
        }
        let started = Instant::now();
        let rate = s.bytes_per_sec;
        let budget = if rate == 0 { FAST_STEP_BYTES } else { (rate / 4).max(1) };
        let bytes = self.check_some(budget).await?;
        if self.saved_at.elapsed() >= CHECKPOINT_EVERY {
            self.save();
        }
        if rate > 0 {
            let want = Duration::from_secs_f64(bytes as f64 / rate as f64);
            if let Some(rest) = want.checked_sub(started.elapsed()) {
                stop.sleep(rest).await;
            }
        }
        Ok(Progress::Busy)
    }

    fn idle_wait(&self) -> Duration {
        // Woken on demand; otherwise looks again often enough to keep the
        // interval.
        self.interval.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    async fn on_stop(&mut self) {
        if self.state.status().running {
            self.save();
        }
    }
}
