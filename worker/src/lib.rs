//! cairn-worker: the one model for background work in every Cairn process.
//!
//! A [`Worker`] is a loop cut into steps: it has a name, does one step of
//! work at a time and says whether there is more ([`Progress`]). The
//! [`Workers`] set runs each worker in its own task and owns what every loop
//! used to write for itself: waiting when idle (cut short by
//! [`WorkerHandle::wake`]), backing off after a failing step (the shared
//! [`Backoff`] policy), a [`WorkerStatus`] that can be listed while it runs,
//! and a clean shutdown: the step in flight finishes (a step that may take
//! long watches the [`Stop`] it is given), then the worker's
//! [`Worker::on_stop`] runs.
//!
//! The hydrator of a restored volume, node registration, the EBS staging
//! sweeper, the copy-job runner and the resume-on-start pass are workers;
//! garbage collection, scrub, repair and re-replication are meant to be
//! more of the same kind, listed by the same views.

pub mod metrics;
mod status;

pub use cairn_core::backoff::Backoff;
pub use status::{WorkerState, WorkerStatus};

use status::Shared;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// What a step of work found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// There is more to do now: the next step starts at once.
    Busy,
    /// Nothing to do now: wait [`Worker::idle_wait`] (or a wake) first.
    Idle,
    /// This worker's job is over; it stops.
    Done,
}

/// Background work, one step at a time.
pub trait Worker: Send + 'static {
    type Error: Display + Send;

    /// The name the worker is listed under (e.g. `hydrator vol-0123...`).
    fn name(&self) -> String;

    /// Does one step. A step that may take long (a network call, a long
    /// scan) should end early once `stop` is set.
    fn work(
        &mut self,
        stop: &mut Stop,
    ) -> impl Future<Output = Result<Progress, Self::Error>> + Send;

    /// How long to wait after an idle step before the next.
    fn idle_wait(&self) -> Duration;

    /// The delays between failing steps; reset after a step that succeeds.
    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Runs once after the last step when the set shuts down or the worker
    /// is done: finish what the steps left in flight.
    fn on_stop(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Tells a running step that its worker set is shutting down.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// True once shutdown began.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown began (or the set was dropped).
    pub async fn wait(&mut self) {
        // A dropped sender is a shutdown too.
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Sleeps `d`, or less if shutdown begins meanwhile. True if shutdown
    /// began.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_set(),
            _ = self.wait() => true,
        }
    }
}

/// A running worker: wake it, or read its status.
#[derive(Clone)]
pub struct WorkerHandle {
    wake: Arc<Notify>,
    status: Arc<Shared>,
}

impl WorkerHandle {
    /// Cuts an idle wait short: the next step starts now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self) -> WorkerStatus {
        self.status.get()
    }
}

/// The background workers of one process.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    running: Mutex<Vec<Arc<Shared>>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        Workers {
            inner: Arc::new(Inner {
                stop: watch::channel(false).0,
                tasks: Mutex::new(JoinSet::new()),
                running: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts `worker` in its own task. After shutdown began, the worker
    /// only runs its [`Worker::on_stop`].
    pub fn spawn<W: Worker>(&self, worker: W) -> WorkerHandle {
        let status = Arc::new(Shared::new(worker.name()));
        let wake = Arc::new(Notify::new());
        let handle = WorkerHandle { wake: wake.clone(), status: status.clone() };
        let stop = Stop(self.inner.stop.subscribe());
        let mut running = lock(&self.inner.running);
        running.retain(|s| !s.get().state.is_final());
        running.push(status.clone());
        let mut tasks = lock(&self.inner.tasks);
        // Reap finished workers so the set does not grow with history.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run(worker, stop, wake, status));
        handle
    }

    /// Every worker still running, and those that ended since the last
    /// spawn, by name.
    pub fn list(&self) -> Vec<WorkerStatus> {
        let mut all: Vec<WorkerStatus> =
            lock(&self.inner.running).iter().map(|s| s.get()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A handle that says when shutdown begins, for work the set does not
    /// run itself.
    pub fn stop_signal(&self) -> Stop {
        Stop(self.inner.stop.subscribe())
    }

    /// Stops every worker: each finishes its step in flight and runs its
    /// [`Worker::on_stop`]; returns when all have.
    pub async fn shutdown(&self) {
        // Receivers may be gone already; that is a shutdown too.
        let _ = self.inner.stop.send(true);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        while tasks.join_next().await.is_some() {}
    }

    /// Stops every worker at once, mid-step, without `on_stop`: what a
    /// SIGKILL leaves behind (for crash tests).
    pub async fn abort(&self) {
        let _ = self.inner.stop.send(true);
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop every worker runs in.
async fn run<W: Worker>(mut worker: W, mut stop: Stop, wake: Arc<Notify>, status: Arc<Shared>) {
    let mut backoff = worker.backoff();
    while !stop.is_set() {
        status.set_state(WorkerState::Busy);
        let wait = match worker.work(&mut stop).await {
            Ok(Progress::Busy) => {
                status.step_done();
                backoff.reset();
                // Let other tasks run between busy steps.
                tokio::task::yield_now().await;
                continue;
            }
            Ok(Progress::Idle) => {
                status.step_done();
                backoff.reset();
                status.set_state(WorkerState::Idle);
                worker.idle_wait()
            }
            Ok(Progress::Done) => {
                status.step_done();
                break;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(worker = %status.name(), error = %e, retry_in = ?delay, "worker step failed");
                status.step_failed(e.to_string());
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = stop.wait() => {}
        }
    }
    worker.on_stop().await;
    status.set_state(WorkerState::Stopped);
}

#[cfg(test)]
mod tests;
