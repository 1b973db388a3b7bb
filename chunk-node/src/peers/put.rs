//! Putting chunks at RF: each chunk goes to the replicas placement picks
//! among the targets, and counts only once every one of its `min(rf,
//! targets)` replicas acknowledged it (a put is fsynced by the receiver).
//! Each target is asked which chunks it lacks (`HasChunks`) and sent only
//! those, a bounded number at a time; an unreachable replica fails the put
//! (Unavailable) rather than leaving a chunk under-replicated. This node's
//! own store, when it is a target, is written directly.

use crate::error::ChunkNodeError;
use crate::peers::client::{self, Peer};
use crate::store::{ChunkStore, LocalStore};
use bytes::Bytes;
use cairn_core::placement::{place, Candidate};
use cairn_core::ChunkId;
use cairn_proto::pb::StoreNode;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Ids per `HasChunks` call (a copy batch's worth).
const HAS_IDS: usize = 64;

/// (target, chunk) pairs a [`Sender`] remembers per generation. Two
/// generations are kept, so a copy of any size remembers at most twice
/// this many: a generation's table has 2^18 buckets of 41 bytes, about
/// 11 MiB, so 22 MiB per copy at most (outside `copy_memory_bytes`). A
/// forgotten pair costs one `HasChunks` question, never a wrong answer.
const CONFIRMED_PER_GENERATION: usize = 7 << 15;

/// What each target is known to hold: the newest confirmations, in two
/// generations; the older one is dropped when the newer one is full.
struct Confirmed {
    newer: HashSet<(usize, ChunkId)>,
    older: HashSet<(usize, ChunkId)>,
    per_generation: usize,
}

impl Confirmed {
    fn new(per_generation: usize) -> Confirmed {
        Confirmed { newer: HashSet::new(), older: HashSet::new(), per_generation }
    }

    fn contains(&self, pair: &(usize, ChunkId)) -> bool {
        self.newer.contains(pair) || self.older.contains(pair)
    }

    fn extend(&mut self, pairs: impl IntoIterator<Item = (usize, ChunkId)>) {
        for pair in pairs {
            if self.newer.len() >= self.per_generation {
                self.older = std::mem::take(&mut self.newer);
            }
            self.newer.insert(pair);
        }
    }
}

/// Stores chunks at their placement among the targets, remembering what each
/// target is known to hold so repeated content is checked and sent once.
pub(crate) struct Sender {
    peers: Vec<Peer>,
    cands: Vec<Candidate>,
    rf: usize,
    confirmed: Mutex<Confirmed>,
    /// The target that is this node, and its store.
    local: Option<(usize, ChunkStore)>,
    /// Concurrent `PutChunk` calls per [`Sender::store`].
    puts_in_flight: usize,
}

/// What one [`Sender::store`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// `PutChunk` calls made (a chunk counts once per replica that lacked it).
    pub(crate) puts: u64,
    /// Distinct chunks at least one replica lacked: new data, not deduplicated.
    pub(crate) new_chunks: u64,
}

impl Sender {
    pub(crate) fn new(
        targets: &[StoreNode],
        rf: u32,
        local: Option<LocalStore>,
        puts_in_flight: usize,
    ) -> Result<Sender, ChunkNodeError> {
        if targets.is_empty() {
            return Err(ChunkNodeError::InvalidArgument("no target chunk nodes"));
        }
        let peers = client::connect(targets)?;
        let cands = client::candidates(&peers);
        let local = local.and_then(|l| {
            targets.iter().position(|t| t.node_id == l.node_id).map(|i| (i, l.store))
        });
        Ok(Sender {
            peers,
            cands,
            rf: client::replication_factor(rf),
            confirmed: Mutex::new(Confirmed::new(CONFIRMED_PER_GENERATION)),
            local,
            puts_in_flight: puts_in_flight.max(1),
        })
    }

    /// Fetches `id` from its replicas among the targets (this node's own
    /// store first), taking the first copy that verifies.
    pub(crate) async fn fetch(&self, id: ChunkId) -> Result<Bytes, ChunkNodeError> {
        crate::peers::fetch::fetch_near(&self.peers, &self.cands, self.rf, id, self.local.as_ref())
            .await
    }

    fn local_store(&self, target: usize) -> Option<ChunkStore> {
        self.local.as_ref().filter(|(i, _)| *i == target).map(|(_, s)| s.clone())
    }

    fn confirmed(&self) -> std::sync::MutexGuard<'_, Confirmed> {
        self.confirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every chunk durable on its replicas. Returns how many
    /// `PutChunk` calls were made and how many distinct chunks some replica
    /// lacked. Calls may overlap; a chunk two of them carry is then stored
    /// twice, which the stores take as a no-op.
    pub(crate) async fn store(
        &self,
        chunks: Vec<(ChunkId, Vec<u8>)>,
    ) -> Result<Sent, ChunkNodeError> {
        let mut data: BTreeMap<ChunkId, Bytes> = BTreeMap::new();
        for (id, bytes) in chunks {
            data.entry(id).or_insert_with(|| Bytes::from(bytes));
        }
        // Per target: the ids it should hold and is not yet known to hold.
        let mut wanted: BTreeMap<usize, Vec<ChunkId>> = BTreeMap::new();
        {
            let confirmed = self.confirmed();
            for id in data.keys() {
                for t in place(id, &self.cands, self.rf) {
                    if !confirmed.contains(&(t, *id)) {
                        wanted.entry(t).or_default().push(*id);
                    }
                }
            }
        }
        let checks = wanted.into_iter().map(|(t, ids)| {
            let peer = self.peers[t].clone();
            let local = self.local_store(t);
            async move {
                let mut missing = Vec::new();
                let mut present = Vec::new();
                for part in ids.chunks(HAS_IDS) {
                    let has = match &local {
                        Some(store) => store.has(part.to_vec()).await?,
                        None => peer.has(part).await?,
                    };
                    for (id, h) in part.iter().zip(has) {
                        if h {
                            present.push((t, *id));
                        } else {
                            missing.push((t, *id));
                        }
                    }
                }
                Ok::<_, ChunkNodeError>((present, missing))
            }
        });
        let mut to_put = Vec::new();
        for r in futures::future::join_all(checks).await {
            let (present, missing) = r?;
            self.confirmed().extend(present);
            to_put.extend(missing);
        }
        let puts = to_put.into_iter().map(|(t, id)| {
            let peer = self.peers[t].clone();
            let local = self.local_store(t);
            let bytes = data.get(&id).cloned();
            async move {
                let bytes = bytes.ok_or(ChunkNodeError::ChunkUnavailable(id))?;
                match local {
                    // The reader hashed these bytes: the id is theirs.
                    Some(store) => store.put_hashed(id, bytes).await?,
                    None => peer.put(id, bytes).await?,
                };
                Ok::<_, ChunkNodeError>((t, id))
            }
        });
        let done: Vec<(usize, ChunkId)> =
            stream::iter(puts).buffer_unordered(self.puts_in_flight).try_collect().await?;
        let new: HashSet<ChunkId> = done.iter().map(|(_, id)| *id).collect();
        let sent = Sent { puts: done.len() as u64, new_chunks: new.len() as u64 };
        self.confirmed().extend(done);
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_kept_for_two_generations() {
        let mut c = Confirmed::new(2);
        let pair = |n: u8| (0usize, ChunkId::of(&[n]));
        c.extend((0..4).map(pair));
        assert!((0..4).all(|n| c.contains(&pair(n))), "two full generations");
        // A fifth starts a generation: the oldest one (0 and 1) is dropped.
        c.extend([pair(4)]);
        assert!(!c.contains(&pair(0)) && !c.contains(&pair(1)));
        assert!((2..5).all(|n| c.contains(&pair(n))));
        assert_eq!(c.newer.len() + c.older.len(), 3);
    }
}
