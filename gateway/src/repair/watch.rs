//! Down detection: the node watch asks every node that is not removed for
//! its stats, every quarter of `node_down_secs` (1 to 15 s). It remembers,
//! on this gateway's monotonic clock, when each last answered (from the
//! watch's start for a node never heard); a node up and silent for
//! `node_down_secs` is proposed `down`, and a down node that answers is
//! proposed `up`. Either change asks for a re-replication pass: a down
//! node's chunks are copied from the surviving replicas, and a node back
//! from down is reconciled by the next passes (what placement wants there
//! is kept or copied back; the rest is garbage collection's).
//!
//! Gateways watch on their own; the commands are idempotent and move only
//! between up and down, so two gateways agreeing twice is harmless, and a
//! drain or remove by the operator is never undone here.

use crate::ctx::Ctx;
use crate::nodes::call;
use cairn_core::command::{Command, NodeEntry};
use cairn_core::records::NodeState;
use cairn_proto::pb;
use cairn_worker::{Progress, Stop, Worker};
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadline of one stats call.
const STATS_SECS: u64 = 5;

pub struct NodeWatch {
    ctx: Arc<Ctx>,
    started: Instant,
    last_answer: HashMap<String, Instant>,
}

impl NodeWatch {
    pub fn new(ctx: Arc<Ctx>) -> NodeWatch {
        NodeWatch { ctx, started: Instant::now(), last_answer: HashMap::new() }
    }

    /// The change `entry` needs, given whether it answered now.
    fn verdict(&mut self, entry: &NodeEntry, answered: bool) -> Option<Command> {
        let now = Instant::now();
        let id = entry.info.node_id.clone();
        let at_ms = self.ctx.now_ms();
        if answered {
            self.last_answer.insert(id.clone(), now);
            return (entry.state == NodeState::Down)
                .then_some(Command::NodeUp { node_id: id, at_ms });
        }
        let since = *self.last_answer.get(&id).unwrap_or(&self.started);
        let limit = Duration::from_secs(self.ctx.config.node_down_secs);
        (entry.state == NodeState::Up && now.duration_since(since) >= limit)
            .then_some(Command::NodeDown { node_id: id, at_ms })
    }
}

impl Worker for NodeWatch {
    type Error = String;

    fn name(&self) -> String {
        "node watch".into()
    }

    async fn work(&mut self, _stop: &mut Stop) -> Result<Progress, String> {
        let fleet = self.ctx.fleet().await.map_err(|e| e.to_string())?;
        let watched: Vec<&NodeEntry> =
            fleet.iter().filter(|e| e.state != NodeState::Removed).collect();
        let ctx = &self.ctx;
        let asks = watched.iter().map(|e| async move {
            let mut c = ctx.nodes.chunk_store(&e.info)?;
            call(&e.info.node_id, STATS_SECS, c.stats(pb::ChunkStatsRequest {})).await
        });
        let answers = join_all(asks).await;
        let mut changed = false;
        for (entry, answer) in watched.into_iter().zip(answers) {
            let Some(cmd) = self.verdict(entry, answer.is_ok()) else { continue };
            match self.ctx.meta.write(&cmd).await {
                Ok(Ok(_)) => {
                    tracing::warn!(node = %entry.info.node_id, change = ?cmd, "node state changed");
                    changed = true;
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %entry.info.node_id, error = %e, "node state change refused")
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if changed {
            self.ctx.repair.request();
        }
        Ok(Progress::Idle)
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_secs((self.ctx.config.node_down_secs / 4).clamp(1, 15))
    }
}
