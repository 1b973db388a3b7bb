//! One copy per snapshot, fenced by epoch. Every `Copy` call names the
//! epoch of the copy job that makes it (the job's `acquisitions`, which the
//! metadata group raises on every change of holder). Per snapshot the fence
//! keeps the newest epoch it saw and the copy that runs, and keeps these
//! invariants:
//!
//! - at most one copy of a snapshot runs on this host at any instant, so
//!   two never write one copy log at once: a new copy starts only once the
//!   one before it has ended (cancelled, then awaited);
//! - a call of an older epoch than the newest seen is refused
//!   ([`Superseded`]), whether a copy runs or not; a call of a newer or
//!   equal epoch (a takeover, or the holder retrying) stops the running copy
//!   and runs;
//! - epoch 0 (a gateway that predates epochs) is not fenced while no epoch
//!   was seen for the snapshot, and is refused once one was.
//!
//! The state is in memory only. That is enough: a restarted host runs no
//! copy, so the first invariant holds across restarts; the copy itself is
//! idempotent given one writer at a time, and the lease in the metadata
//! group, not this fence, decides whose checkpoints and completion count.
//! After a restart a stale caller may start a copy once, and the next call
//! of the current holder stops it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A call refused because a newer epoch was seen for its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("superseded by epoch {newest}")]
pub struct Superseded {
    pub newest: u64,
}

/// The copies of this host, one slot per snapshot.
#[derive(Clone, Default)]
pub struct CopyFence {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

#[derive(Default)]
struct Slot {
    /// The newest epoch a call named for this snapshot.
    newest: u64,
    /// The copy running now, if any.
    running: Option<Running>,
}

/// A copy that runs: how to stop it, and how to learn that it stopped.
struct Running {
    id: u64,
    epoch: u64,
    cancel: CancellationToken,
    done: CancellationToken,
}

/// The right to run the copy of one snapshot, until dropped. The copy
/// stops (returns) once [`Ticket::cancelled`] fires.
pub struct Ticket {
    fence: CopyFence,
    snapshot: String,
    id: u64,
    cancel: CancellationToken,
    done: CancellationToken,
}

/// Identifies each ticket, so an ended copy clears only its own slot.
static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl CopyFence {
    /// Admits a copy of `snapshot` at `epoch`: refuses it if a newer epoch
    /// was seen, otherwise stops the copy running (waiting until it ended)
    /// and answers the ticket to run this one.
    pub async fn enter(&self, snapshot: &str, epoch: u64) -> Result<Ticket, Superseded> {
        loop {
            let wait = {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                let slot = slots.entry(snapshot.to_string()).or_default();
                if epoch < slot.newest {
                    return Err(Superseded { newest: slot.newest });
                }
                slot.newest = epoch;
                match &slot.running {
                    Some(r) => {
                        tracing::info!(
                            snapshot,
                            running_epoch = r.epoch,
                            epoch,
                            "stopping the running copy for a newer call"
                        );
                        r.cancel.cancel();
                        r.done.clone()
                    }
                    None => {
                        let id = NEXT_TICKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let cancel = CancellationToken::new();
                        let done = CancellationToken::new();
                        slot.running =
                            Some(Running { id, epoch, cancel: cancel.clone(), done: done.clone() });
                        return Ok(Ticket {
                            fence: self.clone(),
                            snapshot: snapshot.to_string(),
                            id,
                            cancel,
                            done,
                        });
                    }
                }
            };
            // Outside the lock: the running copy clears its slot as it ends.
            // Then look again: a newer call may have come meanwhile.
            wait.cancelled().await;
        }
    }

    /// Forgets a snapshot whose frozen image was released: no copy of it
    /// can run any more.
    pub fn forget(&self, snapshot: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(snapshot).is_some_and(|s| s.running.is_none()) {
            slots.remove(snapshot);
        }
    }

    /// The newest epoch seen for `snapshot`, if any call named it.
    pub fn newest(&self, snapshot: &str) -> Option<u64> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(snapshot).map(|s| s.newest)
    }
}

impl Ticket {
    /// Fires when a newer (or equal) call wants the snapshot: the copy must
    /// stop at its next step.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The epoch that stopped this copy, once it was stopped.
    pub fn superseded(&self) -> Option<Superseded> {
        self.cancel
            .is_cancelled()
            .then(|| Superseded { newest: self.fence.newest(&self.snapshot).unwrap_or_default() })
    }
}

impl Drop for Ticket {
    /// The copy ended (returned, failed or was aborted): its slot is free
    /// and whoever waits for it goes on.
    fn drop(&mut self) {
        {
            let mut slots = self.fence.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get_mut(&self.snapshot) {
                if slot.running.as_ref().is_some_and(|r| r.id == self.id) {
                    slot.running = None;
                }
            }
        }
        self.done.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn older_epochs_are_refused_and_newer_ones_wait_for_the_running_copy() {
        let fence = CopyFence::default();
        let first = fence.enter("snap-1", 1).await.expect("first");
        let f = fence.clone();
        let second = tokio::spawn(async move { f.enter("snap-1", 2).await });
        first.cancelled().cancelled().await;
        assert_eq!(first.superseded(), Some(Superseded { newest: 2 }));
        assert!(!second.is_finished(), "the second waits for the first to end");
        drop(first);
        let second = second.await.expect("join").expect("second");
        assert_eq!(fence.enter("snap-1", 1).await.err(), Some(Superseded { newest: 2 }));
        assert_eq!(fence.enter("snap-1", 0).await.err(), Some(Superseded { newest: 2 }));
        assert!(second.superseded().is_none());
        // Another snapshot is fenced apart; epoch 0 runs where none was seen.
        let other = fence.enter("snap-2", 0).await.expect("unfenced");
        drop((second, other));
        fence.forget("snap-1");
        assert_eq!(fence.newest("snap-1"), None);
    }
}
