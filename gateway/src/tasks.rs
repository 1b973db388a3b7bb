//! The gateway's one-off background jobs ([`Jobs`]: copies, seals,
//! restores, deletes): one task set, stopped together at shutdown, with a
//! slot per resource ([`Claim`]) so one resource never has two jobs running
//! here at once. The loops that start them are workers (`Ctx::workers`).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// The background jobs of one gateway, stopped together at shutdown.
pub struct Jobs {
    tasks: Mutex<JoinSet<()>>,
    /// Resources with a job running here, so one resource never has two.
    running: Arc<Mutex<HashSet<String>>>,
    /// The lease-holder name used when the configuration names none: random
    /// per process start (see `GatewayConfig::gateway_id`).
    random_id: String,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            tasks: Mutex::default(),
            running: Arc::default(),
            random_id: format!("gw-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Holds a resource's job slot; frees it when dropped.
pub struct Claim {
    key: String,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Jobs {
    /// This process's random lease-holder name.
    pub fn random_id(&self) -> &str {
        &self.random_id
    }

    /// True while a job for `key` runs here.
    pub fn is_running(&self, key: &str) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    /// Claims `key` for one job, unless a job for it already runs.
    pub fn claim(&self, key: &str) -> Option<Claim> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(key.to_string())
            .then(|| Claim { key: key.to_string(), running: self.running.clone() })
    }

    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished jobs so the set does not grow with history.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Stops every job. Jobs are resumable: what they had not committed is
    /// redone by the next gateway start.
    pub async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let jobs = Jobs::default();
        let a = jobs.claim("snap-1").expect("first claim");
        assert!(jobs.claim("snap-1").is_none());
        assert!(jobs.claim("snap-2").is_some());
        drop(a);
        assert!(jobs.claim("snap-1").is_some());
    }
}
