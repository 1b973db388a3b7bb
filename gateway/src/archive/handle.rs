//! The archive store as the rest of the gateway holds it.

use cairn_worker::WorkerHandle;
use object_store::ObjectStore;
use std::sync::{Arc, Mutex};

/// The cluster's archive store, and the worker that uses it.
pub struct Archive {
    pub store: Arc<dyn ObjectStore>,
    /// What the configuration named (for messages).
    pub name: String,
    pub(super) worker: Mutex<Option<WorkerHandle>>,
}

impl Archive {
    pub fn new(store: Arc<dyn ObjectStore>, name: String) -> Archive {
        Archive { store, name, worker: Mutex::new(None) }
    }

    /// Asks the worker to look for work now.
    pub fn wake(&self) {
        if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake();
        }
    }
}
