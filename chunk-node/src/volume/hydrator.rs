//! The background hydrator of a restored volume, a [`Worker`] doing one
//! round per step: which blocks to fetch next, the fetch/install pipeline,
//! background mark flushes and retries (see [`crate::volume::hydration`] for
//! the design).

use crate::error::ChunkNodeError;
use crate::store::LocalStore;
use crate::volume::hydration::{Hydration, Sources, MARKS_PER_SYNC};
use cairn_core::command::{Query, QueryOutput};
use cairn_core::records::ChunkNodeInfo;
use cairn_proto::pb::StoreNode;
use cairn_proto::MetadataClient;
use cairn_worker::{Backoff, Progress, Stop, Worker};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Blocks the hydrator installs per round (32 MiB).
const ROUND_BLOCKS: usize = 64;
/// Blocks per round while random reads are fetching (2 MiB): at most this
/// many hydrator fetches and writes are ahead of such a read. With 64 the
/// first reads of a hydrating volume had a p99 of 35-55 ms here, most of it
/// waiting for the disk and the two cores behind the hydrator's work.
const YIELDING_ROUND_BLOCKS: usize = 4;

/// A hydrator round being installed on the blocking pool: the blocks it wrote.
type Installing = tokio::task::JoinHandle<Result<Vec<u64>, ChunkNodeError>>;
/// A flush of hydration marks running on the blocking pool.
type Flushing = tokio::task::JoinHandle<Result<(), ChunkNodeError>>;

impl Hydration {
    /// The next blocks the hydrator should fetch: not yet local, from the
    /// read hint on, wrapping around, leaving out `busy` (ascending: the
    /// round being installed).
    ///
    /// The hint then moves past the round (unless a read moved it
    /// meanwhile), so the next round does not walk again over the blocks
    /// this one hydrates: without reads, a volume of N blocks would cost
    /// N x N / [`ROUND_BLOCKS`] steps.
    fn next_round(&self, busy: &[u64]) -> Vec<u64> {
        let size = if self.pressure.active() { YIELDING_ROUND_BLOCKS } else { ROUND_BLOCKS };
        let hint = self.hint.load(Ordering::Relaxed);
        let round: Vec<u64> = self
            .ids
            .iter_from(hint)
            .chain(self.ids.iter_from(0).take_while(|i| *i < hint))
            .filter(|i| !self.bit(*i) && busy.binary_search(i).is_err())
            .take(size)
            .collect();
        if let Some(last) = round.last() {
            let _ =
                self.hint.compare_exchange(hint, last + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
        round
    }

    /// Takes the current addresses of the source nodes from `nodes` (by node
    /// id; the set of sources, and so placement, stays the same). Chunk nodes
    /// may come back on other ports after a restart.
    pub fn update_sources(&self, nodes: &[ChunkNodeInfo]) -> Result<(), ChunkNodeError> {
        let current = self.sources.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut changed = false;
        let updated: Vec<StoreNode> = current
            .peers
            .iter()
            .map(|p| {
                let mut n = p.node.clone();
                if let Some(info) = nodes.iter().find(|i| i.node_id == n.node_id) {
                    if info.grpc_addr != n.grpc_addr {
                        n.grpc_addr = info.grpc_addr.clone();
                        changed = true;
                    }
                }
                n
            })
            .collect();
        if changed {
            let local = current.local.as_ref().map(|(i, store)| LocalStore {
                node_id: current.peers[*i].node.node_id.clone(),
                store: store.clone(),
            });
            *self.sources.write().unwrap_or_else(|e| e.into_inner()) =
                Arc::new(Sources::new(&updated, local.as_ref())?);
            tracing::info!(dir = %self.dir.display(), "hydration sources moved; addresses updated");
        }
        Ok(())
    }
}

/// The background hydrator of one restored volume: runs until every block
/// is local or the volume is deleted; the worker set stops it at close.
/// Failures are retried with back-off; with `metadata`, the sources'
/// addresses are looked up again first.
///
/// Rounds are pipelined: round N is written, synced and marked on the
/// blocking pool while round N+1 is fetched; its blocks are left out of the
/// next round until it is done.
pub struct Hydrator {
    volume: String,
    hydration: Arc<Hydration>,
    metadata: Option<Arc<MetadataClient>>,
    /// The round being installed, with its blocks.
    installing: Option<(Vec<u64>, Installing)>,
    /// Marks being made durable in the background.
    flush: Option<Flushing>,
}

/// A failed hydrator step: what failed, and why.
#[derive(Debug)]
pub struct StepError {
    what: &'static str,
    error: ChunkNodeError,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

/// The outcome of a blocking-pool task that returns a result.
async fn joined<T>(
    task: tokio::task::JoinHandle<Result<T, ChunkNodeError>>,
) -> Result<T, ChunkNodeError> {
    task.await.map_err(ChunkNodeError::from).and_then(|r| r)
}

impl Hydrator {
    /// The hydrator of volume `volume`, restored as `hydration`.
    pub fn new(
        volume: &str,
        hydration: Arc<Hydration>,
        metadata: Option<Arc<MetadataClient>>,
    ) -> Hydrator {
        Hydrator { volume: volume.to_string(), hydration, metadata, installing: None, flush: None }
    }

    /// Every block is local and no round is in flight, but the volume is not
    /// whole yet: the last finish failed. Retries it.
    async fn finish(&self) -> Result<Progress, StepError> {
        let me = self.hydration.clone();
        match joined(tokio::task::spawn_blocking(move || me.finish())).await {
            Ok(()) => Ok(Progress::Done),
            Err(error) => Err(StepError { what: "finishing hydration failed", error }),
        }
    }

    /// Fetches `round` while the previous round is installed, then starts
    /// installing it. A shutdown drops the round being fetched.
    async fn round(&mut self, round: Vec<u64>, stop: &mut Stop) -> Result<(), ChunkNodeError> {
        let h = self.hydration.clone();
        // Unlike a reader's `ensure`, leave the hint alone.
        let fetched = if round.is_empty() {
            Ok(Vec::new())
        } else {
            tokio::select! {
                fetched = h.fetch_yielding(&round) => fetched,
                // `on_stop` finishes the round being installed.
                _ = stop.wait() => return Ok(()),
            }
        };
        let installed = match self.installing.take() {
            Some((_, task)) => joined(task).await,
            None => Ok(Vec::new()),
        };
        self.flush_marks().await;
        let fetched = installed.and(fetched)?;
        if !fetched.is_empty() {
            // Block by block, each locked only while it is written: locking
            // the whole round made a reader of any block sharing a lock
            // stripe with it wait for all of it (32 MiB, ~50 ms here), which
            // was the tail of first reads while hydrating.
            let task = tokio::task::spawn_blocking(move || {
                let mut installed = Vec::with_capacity(fetched.len());
                for one in fetched.chunks(1) {
                    installed.extend(h.lock_and_install(one)?);
                }
                Ok(installed)
            });
            self.installing = Some((round, task));
        }
        Ok(())
    }

    /// Once the last flush is done, starts the next if enough marks wait.
    async fn flush_marks(&mut self) {
        if !self.flush.as_ref().is_none_or(|f| f.is_finished()) {
            return;
        }
        if let Some(done) = self.flush.take() {
            if let Err(e) = joined(done).await {
                tracing::warn!(dir = %self.hydration.dir.display(), error = %e, "flushing hydration marks failed; retrying later");
            }
        }
        if self.hydration.pending_marks() >= MARKS_PER_SYNC {
            let me = self.hydration.clone();
            self.flush = Some(tokio::task::spawn_blocking(move || me.flush_marks()));
        }
    }

    /// After a failed round: the source nodes may have moved; takes their
    /// registered addresses.
    async fn look_up_sources(&self) {
        let Some(m) = &self.metadata else { return };
        match m.read(&Query::Nodes).await {
            Ok(QueryOutput::Nodes(nodes)) => {
                if let Err(e) = self.hydration.update_sources(&nodes) {
                    tracing::warn!(error = %e, "cannot use the registered addresses");
                }
            }
            Ok(_) => tracing::warn!("metadata answered Nodes with something else"),
            Err(e) => tracing::warn!(error = %e, "cannot look up source nodes"),
        }
    }
}

impl Worker for Hydrator {
    type Error = StepError;

    fn name(&self) -> String {
        format!("hydrator {}", self.volume)
    }

    /// One round; once nothing is left to fetch or install, the finish.
    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, StepError> {
        let h = &self.hydration;
        let over = h.is_complete() || h.cancelled.load(Ordering::Acquire);
        let busy = self.installing.as_ref().map_or(&[][..], |(b, _)| b.as_slice());
        let round = if over { Vec::new() } else { h.next_round(busy) };
        if round.is_empty() && self.installing.is_none() {
            if over || h.is_complete() {
                return Ok(Progress::Done);
            }
            if h.remaining.load(Ordering::Acquire) > 0 {
                // Another install is between setting bits and counting.
                return Ok(Progress::Idle);
            }
            return self.finish().await;
        }
        match self.round(round, stop).await {
            Ok(()) => Ok(Progress::Busy),
            Err(error) => {
                self.look_up_sources().await;
                Err(StepError { what: "hydration round failed", error })
            }
        }
    }

    fn idle_wait(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Waits for the round being installed and the flush under way: nothing
    /// the hydrator started writes the volume once it has stopped.
    async fn on_stop(&mut self) {
        if let Some((_, task)) = self.installing.take() {
            if let Err(e) = joined(task).await {
                tracing::warn!(volume = %self.volume, error = %e, "installing a hydration round failed");
            }
        }
        if let Some(task) = self.flush.take() {
            if let Err(e) = joined(task).await {
                tracing::warn!(volume = %self.volume, error = %e, "flushing hydration marks failed");
            }
        }
    }
}
