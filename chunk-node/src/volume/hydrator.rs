//! The background hydrator of a restored volume: which blocks to fetch next,
//! the fetch/install pipeline, background mark flushes and retries (see
//! [`crate::volume::hydration`] for the design).

use crate::error::ChunkNodeError;
use crate::store::LocalStore;
use crate::volume::hydration::{Hydration, Sources, MARKS_PER_SYNC};
use cairn_core::backoff::Backoff;
use cairn_core::command::{Query, QueryOutput};
use cairn_core::records::ChunkNodeInfo;
use cairn_proto::pb::StoreNode;
use cairn_proto::MetadataClient;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Blocks the hydrator installs per round (32 MiB).
const ROUND_BLOCKS: usize = 64;

/// A hydrator round being installed on the blocking pool: the blocks it wrote.
type Installing = tokio::task::JoinHandle<Result<Vec<u64>, ChunkNodeError>>;

impl Hydration {
    /// The next blocks the hydrator should fetch: not yet local, from the
    /// read hint on, wrapping around, leaving out `busy` (ascending: the
    /// round being installed).
    fn next_round(&self, busy: &[u64]) -> Vec<u64> {
        let hint = self.hint.load(Ordering::Relaxed);
        self.entries
            .range(hint..)
            .chain(self.entries.range(..hint))
            .map(|(i, _)| *i)
            .filter(|i| !self.bit(*i) && busy.binary_search(i).is_err())
            .take(ROUND_BLOCKS)
            .collect()
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

    /// The background hydrator: runs until every block is local, the volume
    /// is deleted or `shutdown` flips. Failures are retried with back-off;
    /// with `metadata`, the sources' addresses are looked up again first.
    ///
    /// Rounds are pipelined: round N is written, synced and marked on the
    /// blocking pool while round N+1 is fetched; its blocks are left out of
    /// the next round until it is done.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        metadata: Option<Arc<MetadataClient>>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut installing: Option<(Vec<u64>, Installing)> = None;
        let mut flush: Option<tokio::task::JoinHandle<Result<(), ChunkNodeError>>> = None;
        loop {
            let stop =
                self.is_complete() || self.cancelled.load(Ordering::Acquire) || *shutdown.borrow();
            let busy = installing.as_ref().map_or(&[][..], |(b, _)| b.as_slice());
            let round = if stop { Vec::new() } else { self.next_round(busy) };
            if round.is_empty() && installing.is_none() {
                let left = self.remaining.load(Ordering::Acquire);
                if stop || self.is_complete() {
                    break;
                }
                if left > 0 {
                    // Another install is between setting bits and counting.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                // Every block is local but the last finish failed: retry it.
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.finish()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "finishing hydration failed; retrying")
                    }
                    Err(e) => tracing::warn!(error = %e, "finishing hydration panicked; retrying"),
                }
                back_off(&mut backoff, &mut shutdown).await;
                if *shutdown.borrow() {
                    break;
                }
                continue;
            }
            // Unlike a reader's `ensure`, leave the hint alone.
            let fetched = if round.is_empty() { Ok(Vec::new()) } else { self.fetch(&round).await };
            let installed = match installing.take() {
                Some((_, task)) => task.await.map_err(ChunkNodeError::from).and_then(|r| r),
                None => Ok(Vec::new()),
            };
            if flush.as_ref().is_none_or(|f| f.is_finished()) {
                if let Some(done) = flush.take() {
                    if let Err(e) = done.await.map_err(ChunkNodeError::from).and_then(|r| r) {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "flushing hydration marks failed; retrying later");
                    }
                }
                if self.pending_marks() >= MARKS_PER_SYNC {
                    let me = self.clone();
                    flush = Some(tokio::task::spawn_blocking(move || me.flush_marks()));
                }
            }
            let result = installed.and(fetched).map(|fetched| {
                if !fetched.is_empty() {
                    let me = self.clone();
                    let task = tokio::task::spawn_blocking(move || me.lock_and_install(&fetched));
                    installing = Some((round, task));
                }
            });
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "hydration round failed; retrying");
                    if let Some(m) = &metadata {
                        match m.read(&Query::Nodes).await {
                            Ok(QueryOutput::Nodes(nodes)) => {
                                if let Err(e) = self.update_sources(&nodes) {
                                    tracing::warn!(error = %e, "cannot use the registered addresses");
                                }
                            }
                            Ok(_) => tracing::warn!("metadata answered Nodes with something else"),
                            Err(e) => tracing::warn!(error = %e, "cannot look up source nodes"),
                        }
                    }
                    back_off(&mut backoff, &mut shutdown).await;
                }
            }
        }
    }
}

/// Waits out the next delay of `backoff`, or until shutdown flips.
async fn back_off(backoff: &mut Backoff, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next_delay()) => {}
        _ = shutdown.changed() => {}
    }
}
