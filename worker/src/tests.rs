//! The worker loop's promises: busy steps run back to back, idle waits end
//! on a wake, failures back off and are counted, `Done` ends the worker,
//! shutdown lets `on_stop` finish what a step left.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts steps; busy for `busy` steps, then idle (or done with `done`).
/// Fails every step while `failing` is set.
struct Counter {
    steps: Arc<AtomicU64>,
    busy: u64,
    done: bool,
    failing: Arc<std::sync::atomic::AtomicBool>,
    stopped: Arc<AtomicU64>,
}

impl Worker for Counter {
    type Error = String;

    fn name(&self) -> String {
        "counter".into()
    }

    async fn work(&mut self, _stop: &mut Stop) -> Result<Progress, String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("disk on fire".into());
        }
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(match n < self.busy {
            true => Progress::Busy,
            false if self.done => Progress::Done,
            false => Progress::Idle,
        })
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_secs(3600)
    }

    async fn on_stop(&mut self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter(
    busy: u64,
    done: bool,
) -> (Counter, Arc<AtomicU64>, Arc<std::sync::atomic::AtomicBool>, Arc<AtomicU64>) {
    let steps = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = Arc::new(AtomicU64::new(0));
    let w = Counter {
        steps: steps.clone(),
        busy,
        done,
        failing: failing.clone(),
        stopped: stopped.clone(),
    };
    (w, steps, failing, stopped)
}

/// Polls `f` every 5 ms until it holds (at most 20 s).
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..4_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn busy_steps_run_then_idle_waits_for_a_wake() {
    let workers = Workers::new();
    let (w, steps, _, stopped) = counter(5, false);
    let h = workers.spawn(w);
    until(|| h.status().state == WorkerState::Idle).await;
    assert_eq!(steps.load(Ordering::SeqCst), 5);
    h.wake();
    until(|| steps.load(Ordering::SeqCst) == 6).await;
    assert_eq!(workers.list()[0].name, "counter");
    workers.shutdown().await;
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "on_stop ran once");
    assert_eq!(h.status().state, WorkerState::Stopped);
}

#[tokio::test]
async fn failing_steps_back_off_and_are_counted() {
    let workers = Workers::new();
    let (w, steps, failing, _) = counter(1, false);
    failing.store(true, Ordering::SeqCst);
    let h = workers.spawn(w);
    until(|| h.status().errors >= 3).await;
    let s = h.status();
    assert_eq!(s.state, WorkerState::Failing);
    assert_eq!(s.last_error.as_deref(), Some("disk on fire"));
    assert_eq!(steps.load(Ordering::SeqCst), 0);
    failing.store(false, Ordering::SeqCst);
    until(|| h.status().state == WorkerState::Idle).await;
    assert_eq!(h.status().consecutive_errors, 0);
    workers.shutdown().await;
}

#[tokio::test]
async fn a_done_worker_stops_and_runs_on_stop() {
    let workers = Workers::new();
    let (w, steps, _, stopped) = counter(3, true);
    let h = workers.spawn(w);
    until(|| h.status().state == WorkerState::Stopped).await;
    assert_eq!(steps.load(Ordering::SeqCst), 3);
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
    workers.shutdown().await;
}

#[tokio::test]
async fn abort_skips_on_stop() {
    let workers = Workers::new();
    let (w, _, _, stopped) = counter(1, false);
    let h = workers.spawn(w);
    until(|| h.status().state == WorkerState::Idle).await;
    workers.abort().await;
    assert_eq!(stopped.load(Ordering::SeqCst), 0);
}
