//! What a worker is doing, as the admin views and metrics list it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Where a worker is in its loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// In a step.
    Busy,
    /// Waiting after a step that found nothing to do.
    Idle,
    /// Waiting to retry after a failing step.
    Failing,
    /// Ended: its job was done, or the set shut down.
    Stopped,
}

impl WorkerState {
    pub fn is_final(&self) -> bool {
        *self == WorkerState::Stopped
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerState::Busy => "busy",
            WorkerState::Idle => "idle",
            WorkerState::Failing => "failing",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A snapshot of one worker's state.
#[derive(Clone, Debug)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Steps that succeeded.
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// Failures since the last step that succeeded.
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
    /// How long it has been in `state`.
    pub for_how_long: Duration,
    /// When its last step ended (done or failed); `None` before the first.
    pub last_step_at: Option<SystemTime>,
}

/// The status a worker's task updates and handles read.
pub(crate) struct Shared {
    name: String,
    inner: Mutex<Inner>,
}

struct Inner {
    state: WorkerState,
    since: Instant,
    steps: u64,
    errors: u64,
    consecutive_errors: u64,
    last_error: Option<String>,
    last_step_at: Option<SystemTime>,
}

impl Shared {
    pub(crate) fn new(name: String) -> Self {
        Shared {
            name,
            inner: Mutex::new(Inner {
                // A new worker's first step is about to start.
                state: WorkerState::Busy,
                since: Instant::now(),
                steps: 0,
                errors: 0,
                consecutive_errors: 0,
                last_error: None,
                last_step_at: None,
            }),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_state(&self, state: WorkerState) {
        let mut i = self.lock();
        if i.state != state {
            i.state = state;
            i.since = Instant::now();
        }
    }

    pub(crate) fn step_done(&self) {
        let mut i = self.lock();
        i.steps += 1;
        i.consecutive_errors = 0;
        i.last_step_at = Some(SystemTime::now());
    }

    pub(crate) fn step_failed(&self, error: String) {
        let mut i = self.lock();
        i.errors += 1;
        i.consecutive_errors += 1;
        i.last_step_at = Some(SystemTime::now());
        i.last_error = Some(error);
        if i.state != WorkerState::Failing {
            i.state = WorkerState::Failing;
            i.since = Instant::now();
        }
    }

    pub(crate) fn get(&self) -> WorkerStatus {
        let i = self.lock();
        WorkerStatus {
            name: self.name.clone(),
            state: i.state.clone(),
            steps: i.steps,
            errors: i.errors,
            consecutive_errors: i.consecutive_errors,
            last_error: i.last_error.clone(),
            for_how_long: i.since.elapsed(),
            last_step_at: i.last_step_at,
        }
    }
}
