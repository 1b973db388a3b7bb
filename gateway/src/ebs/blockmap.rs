//! A pending EBS-direct snapshot's staged block map, merged from its
//! staging replicas as they stream it: each replica sends its log's map
//! sorted by block, one entry per block (`chunk-node/src/staging/sort.rs`),
//! and the merge takes the smallest block of the replicas' heads, so the
//! gateway holds one batch per replica whatever the volume's size.
//!
//! Which write wins: the latest acceptance time (`at_ms`), and between
//! equal times the later replica in placement order, as each node does
//! within its log. Every acknowledged write is on every replica, so any one
//! replica that streams its whole map has them all; the union also covers
//! replicas that missed unacknowledged writes. A replica that fails, or
//! sends a bad entry or one out of order, leaves the merge (what it sent
//! before stays: the other replicas hold it too); the map fails only when
//! no replica streamed its whole map. A replica without the log (placement
//! moved since StartSnapshot) answers NotFound and takes no part.

use super::error::EbsError;
use cairn_core::ChunkId;
use cairn_proto::pb::{self, StagingKind};
use futures::stream::BoxStream;
use futures::StreamExt;

/// One staged block: its chunk (`None`: all zero) and the SHA-256 the
/// client sent for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    pub chunk: Option<ChunkId>,
    pub sha256: [u8; 32],
    at_ms: u64,
}

/// One replica's map, a batch at a time.
pub type Batches = BoxStream<'static, Result<Vec<pb::StagingEntry>, EbsError>>;

/// One replica's map as it arrives.
struct Source {
    node: String,
    batches: Batches,
    batch: std::vec::IntoIter<pb::StagingEntry>,
    /// Its next block, decoded; `None` once it ended.
    head: Option<(u64, Staged)>,
}

impl Source {
    /// Moves to the next block; `head` is `None` when the map ended whole.
    async fn advance(&mut self) -> Result<(), EbsError> {
        let prev = self.head.take().map(|(i, _)| i);
        loop {
            if let Some(e) = self.batch.next() {
                let Some(staged) = decode(&e)? else { continue };
                if prev.is_some_and(|p| e.block_index <= p) {
                    return Err(EbsError::Internal(format!(
                        "staging replica {} sent block {} out of order",
                        self.node, e.block_index
                    )));
                }
                self.head = Some((e.block_index, staged));
                return Ok(());
            }
            match self.batches.next().await {
                Some(Ok(b)) => self.batch = b.into_iter(),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
}

/// A block entry decoded; `None` for entries that are not blocks.
fn decode(e: &pb::StagingEntry) -> Result<Option<Staged>, EbsError> {
    let chunk = match StagingKind::try_from(e.kind) {
        Ok(StagingKind::Block) => Some(ChunkId::from_slice(&e.chunk_id).ok_or_else(|| {
            EbsError::Internal(format!(
                "staging entry of block {} has a bad chunk id",
                e.block_index
            ))
        })?),
        Ok(StagingKind::Zero) => None,
        _ => return Ok(None),
    };
    let sha256: [u8; 32] = e.sha256.as_slice().try_into().map_err(|_| {
        EbsError::Internal(format!("staging entry of block {} has a bad checksum", e.block_index))
    })?;
    Ok(Some(Staged { chunk, sha256, at_ms: e.at_ms }))
}

/// The merged map, read block by block in ascending order with
/// [`StagedBlocks::next`].
pub struct StagedBlocks {
    /// Replicas still streaming, in placement order.
    live: Vec<Source>,
    /// Replicas that streamed their whole map.
    whole: usize,
    /// The last replica failure, for the error when none is whole.
    failure: Option<EbsError>,
}

impl StagedBlocks {
    /// Starts the merge over the replicas' maps (node, batches), in
    /// placement order, and the failures of replicas that did not answer.
    pub async fn start(
        sources: Vec<(String, Batches)>,
        failure: Option<EbsError>,
    ) -> Result<StagedBlocks, EbsError> {
        let mut merged = StagedBlocks { live: Vec::new(), whole: 0, failure };
        // The first batches at once: a replica sorts its log before it.
        let firsts = sources.into_iter().map(|(node, batches)| async move {
            let mut s = Source { node, batches, batch: Vec::new().into_iter(), head: None };
            let read = s.advance().await;
            (s, read)
        });
        for (s, read) in futures::future::join_all(firsts).await {
            merged.keep(s, read);
        }
        merged.check()?;
        Ok(merged)
    }

    /// Keeps `s` streaming, or counts it whole, or drops it after a failure.
    fn keep(&mut self, s: Source, read: Result<(), EbsError>) {
        match read {
            Ok(()) if s.head.is_some() => self.live.push(s),
            Ok(()) => self.whole += 1,
            Err(e) => {
                tracing::warn!(node = %s.node, error = %e, "staging replica left the block map merge");
                self.failure = Some(e);
            }
        }
    }

    /// An error when no replica is left that streamed, or is streaming,
    /// its whole map.
    fn check(&mut self) -> Result<(), EbsError> {
        if self.live.is_empty() && self.whole == 0 {
            return Err(self
                .failure
                .take()
                .unwrap_or_else(|| EbsError::Internal("no staging replica".into())));
        }
        Ok(())
    }

    /// True when every replica asked streamed its whole map (call at the
    /// end): none failed, had no log or did not answer.
    pub fn from_every_replica(&self) -> bool {
        self.live.is_empty() && self.failure.is_none()
    }

    /// The next staged block (index and winning write), ascending; `None`
    /// at the end.
    pub async fn next(&mut self) -> Result<Option<(u64, Staged)>, EbsError> {
        self.check()?;
        let Some(block) = self.live.iter().filter_map(|s| s.head.map(|(i, _)| i)).min() else {
            return Ok(None);
        };
        let mut best: Option<Staged> = None;
        for mut s in std::mem::take(&mut self.live) {
            match s.head {
                Some((i, staged)) if i == block => {
                    if best.is_none_or(|b| staged.at_ms >= b.at_ms) {
                        best = Some(staged);
                    }
                    let read = s.advance().await;
                    self.keep(s, read);
                }
                _ => self.live.push(s),
            }
        }
        Ok(best.map(|b| (block, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: StagingKind, idx: u64, fill: u8, at: u64) -> pb::StagingEntry {
        pb::StagingEntry {
            kind: kind as i32,
            block_index: idx,
            chunk_id: if kind == StagingKind::Block { vec![fill; 32] } else { Vec::new() },
            sha256: vec![fill; 32],
            at_ms: at,
            value: 0,
        }
    }

    fn source(
        node: &str,
        batches: Vec<Result<Vec<pb::StagingEntry>, EbsError>>,
    ) -> (String, Batches) {
        (node.to_string(), futures::stream::iter(batches).boxed())
    }

    async fn all(mut m: StagedBlocks) -> Result<Vec<(u64, Staged)>, EbsError> {
        let mut out = Vec::new();
        while let Some(b) = m.next().await? {
            out.push(b);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn union_last_write_wins() {
        use StagingKind::{Block, Zero};
        let a = vec![Ok(vec![entry(Block, 1, 1, 10)]), Ok(vec![entry(Zero, 2, 3, 20)])];
        // A replica that missed the zero write and saw a later rewrite of 1,
        // and one write the first missed.
        let b =
            vec![Ok(vec![entry(Block, 1, 9, 30), entry(Block, 2, 2, 10), entry(Block, 5, 5, 5)])];
        let m = StagedBlocks::start(vec![source("a", a), source("b", b)], None).await.unwrap();
        let got = all(m).await.unwrap();
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2, 5]);
        assert_eq!(got[0].1.chunk, Some(ChunkId([9; 32])));
        assert_eq!(got[1].1.chunk, None);
        assert_eq!(got[1].1.sha256, [3; 32]);
        // Equal times: the later replica wins.
        let a = vec![Ok(vec![entry(Block, 1, 1, 10)])];
        let b = vec![Ok(vec![entry(Block, 1, 2, 10)])];
        let m = StagedBlocks::start(vec![source("a", a), source("b", b)], None).await.unwrap();
        assert_eq!(all(m).await.unwrap()[0].1.chunk, Some(ChunkId([2; 32])));
    }

    #[tokio::test]
    async fn a_failing_replica_leaves_the_merge() {
        use StagingKind::Block;
        let whole = || {
            vec![
                Ok(vec![entry(Block, 1, 1, 1), entry(Block, 2, 2, 1)]),
                Ok(vec![entry(Block, 3, 3, 1)]),
            ]
        };
        let broken = vec![
            Ok(vec![entry(Block, 1, 1, 1)]),
            Err(EbsError::Internal("connection reset".into())),
        ];
        let m = StagedBlocks::start(vec![source("a", broken), source("b", whole())], None)
            .await
            .unwrap();
        assert_eq!(all(m).await.unwrap().len(), 3);
        // Out of order, or a bad entry: the replica leaves too.
        let unsorted = vec![Ok(vec![entry(Block, 2, 2, 1), entry(Block, 1, 1, 1)])];
        let m = StagedBlocks::start(vec![source("a", unsorted), source("b", whole())], None)
            .await
            .unwrap();
        assert_eq!(all(m).await.unwrap().len(), 3);
        // With no replica whole, the map fails.
        let unsorted = vec![Ok(vec![entry(Block, 2, 2, 1), entry(Block, 1, 1, 1)])];
        let m = StagedBlocks::start(vec![source("a", unsorted)], None).await.unwrap();
        assert!(all(m).await.is_err());
        let bad = vec![Ok(vec![pb::StagingEntry {
            kind: Block as i32,
            chunk_id: vec![1; 3],
            ..Default::default()
        }])];
        assert!(StagedBlocks::start(vec![source("a", bad)], None).await.is_err());
        let none = StagedBlocks::start(vec![], Some(EbsError::Internal("down".into()))).await;
        assert!(none.is_err());
    }
}
