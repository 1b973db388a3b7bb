//! The member's Prometheus metrics, read from openraft's metrics at each
//! scrape (the `cairn` binary serves them on the member's HTTP listener):
//! term, log and apply positions and the lag between them, whether it
//! leads, time since the leader last heard a quorum, followers' lag, and
//! the leader changes this member saw.

use crate::typ::Raft;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts the changes of leader this member sees (a new leader known, not
/// the moments with none), in a task that ends with Raft.
pub fn count_leader_changes(raft: &Raft) -> Arc<AtomicU64> {
    let changes = Arc::new(AtomicU64::new(0));
    let mut rx = raft.metrics();
    let count = changes.clone();
    tokio::spawn(async move {
        let mut last = rx.borrow().current_leader;
        while rx.changed().await.is_ok() {
            let now = rx.borrow().current_leader;
            if now.is_some() && now != last {
                count.fetch_add(1, Ordering::Relaxed);
            }
            if now.is_some() {
                last = now;
            }
        }
    });
    changes
}

/// A running member's metrics and readiness, for its HTTP listener.
#[derive(Clone)]
pub struct Observer {
    raft: Raft,
    leader_changes: Arc<AtomicU64>,
}

impl Observer {
    pub fn new(raft: Raft, leader_changes: Arc<AtomicU64>) -> Observer {
        Observer { raft, leader_changes }
    }

    pub fn metrics_text(&self) -> String {
        render(&self.raft, self.leader_changes.load(Ordering::Relaxed))
    }

    /// Ready to serve: the member knows a leader (a quorum elected one).
    pub fn is_ready(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The text exposition of the member's metrics now.
pub fn render(raft: &Raft, leader_changes: u64) -> String {
    let m = raft.metrics().borrow().clone();
    let mut registry = Registry::with_prefix("cairn_metadata_raft");
    let last_log = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    gauge(&mut registry, "term", "The current Raft term", m.current_term as i64);
    gauge(
        &mut registry,
        "last_log_index",
        "Index of the last entry in this member's log",
        last_log as i64,
    );
    gauge(
        &mut registry,
        "applied_index",
        "Index of the last entry applied to the records",
        applied as i64,
    );
    gauge(
        &mut registry,
        "apply_lag_entries",
        "Entries in the log not applied yet",
        last_log.saturating_sub(applied) as i64,
    );
    let leading = m.current_leader == Some(m.id);
    gauge(&mut registry, "is_leader", "1 while this member is the leader", leading as i64);
    gauge(
        &mut registry,
        "has_leader",
        "1 while this member knows a leader",
        m.current_leader.is_some() as i64,
    );
    if let Some(ms) = m.millis_since_quorum_ack {
        gauge(
            &mut registry,
            "quorum_ack_age_milliseconds",
            "On the leader: time since a quorum last acknowledged it",
            ms as i64,
        );
    }
    if let Some(rep) = &m.replication {
        let lag = rep
            .values()
            .map(|matched| last_log.saturating_sub(matched.map(|l| l.index).unwrap_or(0)))
            .max()
            .unwrap_or(0);
        gauge(
            &mut registry,
            "max_follower_lag_entries",
            "On the leader: entries the furthest-behind follower lacks",
            lag as i64,
        );
    }
    let changes = Counter::<u64>::default();
    changes.inc_by(leader_changes);
    registry.register("leader_changes", "Leader changes this member saw since it started", changes);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}
