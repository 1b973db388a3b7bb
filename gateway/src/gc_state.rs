//! What garbage collection's passes did and what is asked of them, kept
//! where every handler sees it (in the context): requests for a pass, the
//! last pass's report or error, and the reports' shapes. The passes
//! themselves are in [`crate::gc`].

use cairn_worker::WorkerHandle;
use serde::Serialize;
use std::sync::Mutex;

/// What the gateway knows of its passes, for `/_cairn/gc`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcStatus {
    pub running: bool,
    /// Passes asked for on demand so far, and the last one finished: a
    /// request numbered `n` is served once `finished >= n`.
    pub requested: u64,
    pub finished: u64,
    pub passes: u64,
    pub last: Option<PassReport>,
    pub last_error: Option<String>,
}

/// The garbage collector's shared state: requests and the last outcome.
#[derive(Default)]
pub struct Gc {
    status: Mutex<GcStatus>,
    worker: Mutex<Option<WorkerHandle>>,
}

impl Gc {
    /// The worker that runs the passes, woken by [`Gc::request`].
    pub fn set_worker(&self, handle: WorkerHandle) {
        *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    pub fn status(&self) -> GcStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks for a pass now; returns the request's number.
    pub fn request(&self) -> u64 {
        let n = {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.requested += 1;
            s.requested
        };
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake();
        }
        n
    }

    pub fn update(&self, f: impl FnOnce(&mut GcStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What one mark walked.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MarkStats {
    pub roots: u64,
    pub pages_read: u64,
    pub entries: u64,
}

/// What one node did in a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub node_id: String,
    /// False when the node was not swept (it knew no fence old enough, or
    /// did not answer): it keeps everything until a later pass.
    pub swept: bool,
    pub examined: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub packs_rewritten: u64,
    pub packs_removed: u64,
    pub bytes_freed: u64,
    pub error: Option<String>,
}

/// What a pass examined and freed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub generation: u64,
    pub oldest_generation: u64,
    pub snapshots: u64,
    pub holds: u64,
    pub holds_released: u64,
    pub partitions: u32,
    pub filter_bytes: u64,
    pub mark: MarkStats,
    pub nodes: Vec<NodeReport>,
    /// Chunks looked at, chunks deleted and their bytes, over every node.
    pub examined: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Bytes of pack files given back to the file systems.
    pub bytes_freed: u64,
    pub duration_ms: u64,
    /// Where the time went: reading manifests into the filter, the nodes'
    /// sweeps, their compactions.
    pub mark_ms: u64,
    pub sweep_ms: u64,
    pub compact_ms: u64,
}
