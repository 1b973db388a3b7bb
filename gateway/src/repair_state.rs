//! What re-replication's passes did and what is asked of them, kept where
//! every handler sees it (in the context): requests for a pass, the last
//! pass's report or error, and the report's shape. The passes themselves
//! are in [`crate::repair`].

use cairn_worker::WorkerHandle;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What the gateway knows of its re-replication passes, for `/_cairn/repair`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairStatus {
    pub running: bool,
    /// Passes asked for so far (by the operator, a drain or remove, a node
    /// going down or coming back), and the last one served: a request
    /// numbered `n` is served once `finished >= n`.
    pub requested: u64,
    pub finished: u64,
    pub passes: u64,
    pub last: Option<RepairReport>,
    pub last_error: Option<String>,
}

/// What one pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Manifests walked (completed snapshots, pending snapshots' parents).
    pub roots: u64,
    /// Chunk ids (blocks, pages, roots) checked against their placement.
    pub checked: u64,
    /// Replicas placement wants that their node lacked: below RF.
    pub missing: u64,
    /// The missing replicas by the node that lacked them: after a fault, a
    /// node that lost its disk is the only one that should show here.
    pub missing_by_node: BTreeMap<String, u64>,
    /// Of those, copied from a verified copy elsewhere.
    pub copied: u64,
    /// Replicas not made: no node had a verified copy, the copy failed, or
    /// the node did not answer `HasChunks` (so nothing is known of it).
    pub backlog: u64,
    /// The backlog by the node that should hold those replicas.
    pub backlog_by_node: BTreeMap<String, u64>,
    /// Manifests that could not be read (their chunks were not checked).
    pub unreadable: Vec<String>,
    pub duration_ms: u64,
}

/// The re-replication worker's shared state: requests and the last outcome.
#[derive(Default)]
pub struct Repair {
    status: Mutex<RepairStatus>,
    worker: Mutex<Option<WorkerHandle>>,
}

impl Repair {
    /// The worker that runs the passes, woken by [`Repair::request`].
    pub fn set_worker(&self, handle: WorkerHandle) {
        *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    pub fn status(&self) -> RepairStatus {
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

    pub fn update(&self, f: impl FnOnce(&mut RepairStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
