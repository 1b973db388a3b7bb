//! The repairer: a [`Worker`] that drains the store's queue of buried
//! chunks (found corrupt by a read, a scrub or the check at open) and
//! rebuilds each from a good replica: it asks the other chunk nodes of this
//! node's destination (the same Outpost, or the region: every node without
//! one), found through the metadata group, for the chunk, takes the first
//! copy that verifies ([`Peer::get`]) and puts it back in its own store.
//!
//! A chunk no reachable replica has is counted unrepairable; one that could
//! not be asked of every replica (a node unreachable) is queued again, up
//! to [`ATTEMPTS`] times.

use crate::error::ChunkNodeError;
use crate::peers::{connect, Peer};
use crate::scrub::state::ScrubState;
use crate::store::ChunkStore;
use cairn_core::command::{Query, QueryOutput};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::{ChunkId, OutpostId};
use cairn_proto::pb::StoreNode;
use cairn_proto::MetadataClient;
use cairn_worker::{Progress, Stop, Worker};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ids one step repairs.
const BATCH: usize = 32;
/// Times a chunk is tried while some replica cannot be asked.
pub(crate) const ATTEMPTS: u32 = 5;
/// How long the list of replicas is reused before it is read again.
const PEERS_TTL: Duration = Duration::from_secs(30);

/// Where the good copies are.
pub enum Sources {
    /// The other registered nodes of this node's destination.
    Metadata { client: Box<MetadataClient>, node_id: String, outpost: Option<OutpostId> },
    /// These nodes (tests, and nodes that register nowhere).
    Fixed(Vec<StoreNode>),
}

impl Sources {
    /// The registered nodes of `node_id`'s destination, itself left out.
    pub fn of_destination(
        nodes: &[ChunkNodeInfo],
        node_id: &str,
        outpost: Option<&OutpostId>,
    ) -> Vec<StoreNode> {
        nodes
            .iter()
            .filter(|n| n.node_id != node_id && n.outpost.as_ref() == outpost)
            .map(StoreNode::from)
            .collect()
    }

    async fn nodes(&self) -> Result<Vec<StoreNode>, String> {
        match self {
            Sources::Fixed(nodes) => Ok(nodes.clone()),
            Sources::Metadata { client, node_id, outpost } => {
                match client.read(&Query::Nodes).await.map_err(|e| e.to_string())? {
                    QueryOutput::Nodes(all) => {
                        Ok(Self::of_destination(&all, node_id, outpost.as_ref()))
                    }
                    _ => Err("the metadata group answered Nodes with something else".into()),
                }
            }
        }
    }
}

pub(crate) struct Repairer {
    pub(crate) store: ChunkStore,
    pub(crate) state: Arc<ScrubState>,
    pub(crate) sources: Sources,
    pub(crate) peers: Option<(Instant, Vec<Peer>)>,
    /// Tries so far of chunks queued again.
    pub(crate) attempts: HashMap<ChunkId, u32>,
}

/// What asking the replicas for one chunk came to.
enum Outcome {
    Repaired,
    /// Every replica answered: none has a good copy.
    Unrepairable,
    /// Some replica could not be asked.
    Retry(ChunkNodeError),
}

impl Repairer {
    async fn peers(&mut self) -> Result<Vec<Peer>, String> {
        if let Some((at, peers)) = &self.peers {
            if at.elapsed() < PEERS_TTL {
                return Ok(peers.clone());
            }
        }
        let nodes = self.sources.nodes().await?;
        let peers = connect(&nodes).map_err(|e| e.to_string())?;
        self.peers = Some((Instant::now(), peers.clone()));
        Ok(peers)
    }

    async fn repair(&self, peers: &[Peer], id: ChunkId) -> Outcome {
        let mut failed = None;
        for peer in peers {
            match peer.get(id).await {
                Ok(Some(data)) => match self.store.put(id, data).await {
                    Ok(_) => return Outcome::Repaired,
                    Err(e) => return Outcome::Retry(e),
                },
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Outcome::Retry(e),
            None => Outcome::Unrepairable,
        }
    }

    async fn repair_all(&mut self, ids: Vec<ChunkId>) -> Result<(), String> {
        let peers = match self.peers().await {
            Ok(p) => p,
            Err(e) => {
                ids.iter().for_each(|id| self.store.queue_repair(*id));
                return Err(format!("cannot find the replicas to repair from: {e}"));
            }
        };
        for id in ids {
            let outcome = self.repair(&peers, id).await;
            let tries = self.attempts.remove(&id).unwrap_or(0) + 1;
            match outcome {
                Outcome::Repaired => {
                    tracing::info!(chunk = %id, "corrupt chunk repaired from a replica");
                    self.state.count_repair(true);
                }
                Outcome::Retry(e) if tries < ATTEMPTS => {
                    tracing::warn!(chunk = %id, error = %e, tries, "repair will be tried again");
                    self.attempts.insert(id, tries);
                    self.store.queue_repair(id);
                }
                Outcome::Unrepairable | Outcome::Retry(_) => {
                    tracing::error!(chunk = %id, replicas = peers.len(), "no replica has a good copy; chunk unrepairable here");
                    self.state.count_repair(false);
                }
            }
        }
        Ok(())
    }
}

impl Worker for Repairer {
    type Error = String;

    fn name(&self) -> String {
        "repairer".into()
    }

    async fn work(&mut self, _stop: &mut Stop) -> Result<Progress, String> {
        // Counted as repairing before the ids leave the queue, so that a
        // scrub pass never sees neither.
        self.state.repairing.fetch_add(1, Ordering::SeqCst);
        let ids = self.store.take_repairs(BATCH);
        if ids.is_empty() {
            self.state.repairing.fetch_sub(1, Ordering::SeqCst);
            return Ok(Progress::Idle);
        }
        let done = self.repair_all(ids).await;
        self.state.repairing.fetch_sub(1, Ordering::SeqCst);
        done.map(|()| Progress::Busy)
    }

    fn idle_wait(&self) -> Duration {
        // Reads bury too: look now and then; the scrubber wakes it.
        Duration::from_secs(2)
    }
}
