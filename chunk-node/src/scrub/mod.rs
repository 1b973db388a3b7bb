//! Scrub and repair: finding rotten copies before a restore needs them, and
//! rebuilding them from good replicas.
//!
//! The [`scrubber`] re-reads every stored record at a gentle pace
//! (`scrub_bytes_per_sec`) every `scrub_interval_secs`, or now and as fast
//! as asked (`Scrub` RPC, `cairn admin scrub`), and checks it against its
//! hash. A bad record is buried (tombstoned, out of the index, so `has`
//! answers false and no copy counts it as a replica) and its id queued; the
//! [`repair`]er drains that queue (which reads and the check at open feed
//! too), fetching each chunk from another node of the same destination
//! with a verified fetch and putting it back. [`state`] holds what both
//! report. Both are [`cairn_worker`] workers of the node.
//!
//! Invariants: a pass's status is saved atomically (`scrub-checkpoint`),
//! so a restart resumes it; a pass is finished only once its findings were
//! all repaired or counted unrepairable; only verified bytes are ever put
//! back (the peer client checks the hash, and so does the store).

pub mod repair;
pub mod scrubber;
pub mod state;

pub use repair::Sources;
pub use state::{ScrubState, ScrubStatus};

use crate::disk::files::read_versioned;
use crate::error::ChunkNodeError;
use crate::store::ChunkStore;
use cairn_worker::Workers;
use scrubber::{unix_now, Scrubber, CHECKPOINT, CHECKPOINT_VERSION};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a node scrubs: the pace and spacing of periodic passes.
#[derive(Clone, Copy, Debug)]
pub struct ScrubConfig {
    /// 0: unthrottled.
    pub bytes_per_sec: u64,
    /// 0: no periodic passes (only those asked for).
    pub interval_secs: u64,
}

/// A node's scrubber and repairer: ask for a pass, read their status.
#[derive(Clone)]
pub struct Scrub {
    state: Arc<ScrubState>,
    scrubber: cairn_worker::WorkerHandle,
}

impl Scrub {
    /// Starts the scrubber and the repairer of `store` among `workers`,
    /// resuming the pass saved under `data_dir`, if any.
    pub fn start(
        store: &ChunkStore,
        data_dir: &Path,
        config: ScrubConfig,
        sources: Sources,
        workers: &Workers,
    ) -> Result<Scrub, ChunkNodeError> {
        let checkpoint = data_dir.join(CHECKPOINT);
        let status = match read_versioned::<ScrubStatus>(&checkpoint, CHECKPOINT_VERSION) {
            Ok(Some(s)) => s,
            Ok(None) => ScrubStatus { last_end_unix: unix_now(), ..ScrubStatus::default() },
            Err(e) => {
                tracing::warn!(error = %e, "scrub checkpoint unreadable; starting afresh");
                ScrubStatus { last_end_unix: unix_now(), ..ScrubStatus::default() }
            }
        };
        if status.running {
            tracing::info!(
                pass = status.pass,
                pack = status.pack,
                offset = status.offset,
                "resuming a scrub pass"
            );
        }
        let state = Arc::new(ScrubState::with_status(status));
        let repairer = workers.spawn(repair::Repairer {
            store: store.clone(),
            state: state.clone(),
            sources,
            peers: None,
            attempts: Default::default(),
        });
        let scrubber = workers.spawn(Scrubber {
            store: store.clone(),
            state: state.clone(),
            checkpoint,
            bytes_per_sec: config.bytes_per_sec,
            interval: Duration::from_secs(config.interval_secs),
            repairer,
            todo: Default::default(),
            saved_at: Instant::now(),
        });
        Ok(Scrub { state, scrubber })
    }

    /// Asks for a pass now at `bytes_per_sec` (0: unthrottled); returns its
    /// number: it is done once [`ScrubStatus::finished`] reaches it.
    pub fn request(&self, bytes_per_sec: u64) -> u64 {
        let n = self.state.request(bytes_per_sec);
        self.scrubber.wake();
        n
    }

    pub fn status(&self) -> ScrubStatus {
        self.state.status()
    }

    /// Chunks repaired and found unrepairable since the node started.
    pub fn repairs(&self) -> (u64, u64) {
        self.state.repairs()
    }
}
