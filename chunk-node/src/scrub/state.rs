//! What the scrubber and the repairer share and report: the status of the
//! current (or last) pass, the pass asked for on demand, and the repair
//! counters. The workers change it; the `ChunkStore` service reads it.
//!
//! Pass numbers only grow. A request names the pass that serves it: the
//! next one to start, which starts at once and from the beginning (a pass
//! running at the gentle rate is abandoned for it), so everything stored
//! before the request is checked after it. Requests made before that pass
//! starts share its number.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A scrub pass's progress and findings, as `cairn admin scrub` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// The current pass's number, or the last one's.
    pub pass: u64,
    pub running: bool,
    /// The number of the last pass that checked every record (and whose
    /// findings were all repaired or found unrepairable).
    pub finished: u64,
    /// Passes finished since the store was created.
    pub passes_done: u64,
    /// Where the pass is: the next record to check is at `offset` in pack
    /// `pack` or after it.
    pub pack: u32,
    pub offset: u64,
    /// Records and payload bytes checked by this pass.
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Corrupt records this pass found (and buried).
    pub found: u64,
    /// Chunks repaired and found unrepairable while this pass ran.
    pub repaired: u64,
    pub unrepairable: u64,
    /// Records that could not be read (I/O errors) in this pass.
    pub errors: u64,
    /// The pass's pace (0: as fast as the disk goes).
    pub bytes_per_sec: u64,
    /// Unix seconds the last pass ended at (periodic passes count from it).
    pub last_end_unix: u64,
}

/// Shared by the scrubber, the repairer and the service.
#[derive(Default)]
pub struct ScrubState {
    status: Mutex<ScrubStatus>,
    /// The pass asked for and its pace, not started yet.
    requested: Mutex<Option<(u64, u64)>>,
    /// Repairs since the node started, and those in progress.
    pub(crate) repaired: AtomicU64,
    pub(crate) unrepairable: AtomicU64,
    pub(crate) repairing: AtomicU64,
}

/// The faster of two paces (0 is the fastest).
pub fn faster(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
}

impl ScrubState {
    pub fn with_status(status: ScrubStatus) -> ScrubState {
        ScrubState { status: Mutex::new(status), ..ScrubState::default() }
    }

    pub fn status(&self) -> ScrubStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut ScrubStatus) -> T) -> T {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Asks for a pass at `bytes_per_sec` (0: unthrottled); returns its
    /// number (served once `finished` reaches it).
    pub fn request(&self, bytes_per_sec: u64) -> u64 {
        let mut requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        match requested.as_mut() {
            Some((n, rate)) => {
                *rate = faster(*rate, bytes_per_sec);
                *n
            }
            None => {
                let n = self.status().pass + 1;
                *requested = Some((n, bytes_per_sec));
                n
            }
        }
    }

    /// The pass asked for, taken to be started now.
    pub(crate) fn take_request(&self) -> Option<(u64, u64)> {
        self.requested.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Chunks repaired and found unrepairable since the node started.
    pub fn repairs(&self) -> (u64, u64) {
        (self.repaired.load(Ordering::Relaxed), self.unrepairable.load(Ordering::Relaxed))
    }

    /// Counts one repair (or one chunk no replica had), for the totals and
    /// the running pass.
    pub(crate) fn count_repair(&self, repaired: bool) {
        let total = if repaired { &self.repaired } else { &self.unrepairable };
        total.fetch_add(1, Ordering::Relaxed);
        self.update(|s| {
            if s.running {
                *(if repaired { &mut s.repaired } else { &mut s.unrepairable }) += 1;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_before_a_pass_starts_share_it_and_later_ones_get_the_next() {
        let s = ScrubState::with_status(ScrubStatus { pass: 4, ..ScrubStatus::default() });
        assert_eq!(s.request(8 << 20), 5);
        assert_eq!(s.request(0), 5);
        assert_eq!(s.take_request(), Some((5, 0)), "the fastest pace asked wins");
        s.update(|st| st.pass = 5);
        assert_eq!(s.request(1 << 20), 6);
        assert_eq!(faster(3, 7), 7);
        assert_eq!(faster(3, 0), 0);
    }
}
