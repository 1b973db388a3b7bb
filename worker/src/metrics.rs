//! The workers' Prometheus metrics, the same in every process: steps done
//! and failed, when the last one ended, and the state each worker is in now, labelled by worker name
//! (a fixed set per process, never an id).

use crate::WorkerStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    worker: String,
    state: &'static str,
}

/// `worker_steps`, `worker_errors` and `worker_state` (1 for the current
/// state), registered once; [`WorkerMetrics::update`] sets them from the
/// workers' status before each scrape.
#[derive(Clone, Default)]
pub struct WorkerMetrics {
    steps: Family<WorkerLabels, Gauge>,
    errors: Family<WorkerLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    last_step: Family<WorkerLabels, Gauge<f64, AtomicU64>>,
}

impl WorkerMetrics {
    pub fn register(registry: &mut Registry) -> WorkerMetrics {
        let m = WorkerMetrics::default();
        registry.register(
            "worker_steps",
            "Steps a background worker completed since the process started",
            m.steps.clone(),
        );
        registry.register(
            "worker_errors",
            "Steps a background worker failed since the process started",
            m.errors.clone(),
        );
        registry.register(
            "worker_state",
            "1 for the state each background worker is in (busy, idle, failing, stopped)",
            m.state.clone(),
        );
        registry.register(
            "worker_last_step_timestamp_seconds",
            "When a background worker's last step ended (done or failed), in seconds since the epoch",
            m.last_step.clone(),
        );
        m
    }

    pub fn update(&self, workers: &[WorkerStatus]) {
        self.state.clear();
        for w in workers {
            let worker = WorkerLabels { worker: w.name.clone() };
            self.steps.get_or_create(&worker).set(w.steps as i64);
            self.errors.get_or_create(&worker).set(w.errors as i64);
            if let Some(at) = w.last_step_at {
                let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                self.last_step.get_or_create(&worker).set(secs);
            }
            let state = StateLabels { worker: w.name.clone(), state: w.state.as_str() };
            self.state.get_or_create(&state).set(1);
        }
    }
}
