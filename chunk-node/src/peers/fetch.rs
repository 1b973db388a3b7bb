//! Fetching a chunk by placement: from its placement replicas first (this
//! node's own store first among them), then from every other source, taking
//! the first copy that verifies.

use crate::error::ChunkNodeError;
use crate::peers::client::Peer;
use crate::store::ChunkStore;
use bytes::Bytes;
use cairn_core::placement::{place, Candidate};
use cairn_core::ChunkId;

/// Fetches `id` from its placement replicas among `peers` first, then from
/// every other peer. Fails only when no peer has a valid copy.
pub async fn fetch(
    peers: &[Peer],
    cands: &[Candidate],
    rf: usize,
    id: ChunkId,
) -> Result<Bytes, ChunkNodeError> {
    fetch_near(peers, cands, rf, id, None).await
}

/// [`fetch`], where peer `local.0` is this node, whose store `local.1` is
/// read directly (first, when it is one of the placement replicas).
pub async fn fetch_near(
    peers: &[Peer],
    cands: &[Candidate],
    rf: usize,
    id: ChunkId,
    local: Option<&(usize, ChunkStore)>,
) -> Result<Bytes, ChunkNodeError> {
    let mut preferred = place(&id, cands, rf);
    if let Some(at) = local.and_then(|(l, _)| preferred.iter().position(|i| i == l)) {
        let l = preferred.remove(at);
        preferred.insert(0, l);
    }
    let rest = (0..peers.len()).filter(|i| !preferred.contains(i));
    let order: Vec<usize> = preferred.iter().copied().chain(rest).collect();
    for i in order {
        let got = match local {
            Some((l, store)) if *l == i => store.get(id).await.map(|d| d.map(Bytes::from)),
            _ => peers[i].get(id).await,
        };
        match got {
            Ok(Some(data)) => return Ok(data),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(chunk = %id, error = %e, "fetch failed; trying the next source")
            }
        }
    }
    Err(ChunkNodeError::ChunkUnavailable(id))
}
