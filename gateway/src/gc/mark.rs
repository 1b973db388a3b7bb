//! The mark: every manifest some holder needs, walked into a live filter.
//!
//! Roots are the completed snapshots' manifests and the roots holds name
//! (a pending incremental's parent, a hydrating volume's source). Each
//! root, each of its pages and every chunk a page names goes into the
//! filter of the partition being marked. A page shared by many snapshots
//! (incrementals share every unchanged page) is walked once while the set
//! of walked pages fits its share of the memory budget, and walked again
//! after that: the set is exact, never a filter, because skipping a page
//! not walked would leave its chunks unmarked.
//!
//! A manifest that cannot be read ends the mark with an error: garbage
//! collection never sweeps on a partial mark.

use crate::ctx::Ctx;
use crate::ebs::chunks::{get_chunk, Region};
use crate::gc_state::MarkStats;
use cairn_core::command::NodeEntry;
use cairn_core::gc::{LiveFilter, Partition};
use cairn_core::manifest::{ManifestPage, ManifestRoot};
use cairn_core::{ChunkId, OutpostId};
use futures::{stream, StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashSet};

/// A manifest to walk, and where its chunks are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub id: ChunkId,
    /// The Outpost whose nodes store it, or `None` for the region's.
    pub outpost: Option<OutpostId>,
    /// Who needs it (a snapshot or volume id), for messages.
    pub why: String,
    /// A hold's root: marked for every placement domain, since what holds
    /// it may read it from any (a transfer reads its source's domain, a
    /// restored volume its source's, wherever it is).
    pub everywhere: bool,
}

/// Every destination's nodes, to read manifests from (up and draining).
pub struct Sources {
    domains: BTreeMap<Option<OutpostId>, Region>,
}

impl Sources {
    pub fn new(fleet: &[NodeEntry], rf: u32) -> Sources {
        let mut domains = BTreeMap::new();
        for e in fleet.iter().filter(|e| e.state.serves_reads()) {
            let op = e.info.outpost.clone();
            domains
                .entry(op.clone())
                .or_insert_with(|| Region::of(fleet, op.as_ref(), rf.max(1) as usize));
        }
        Sources { domains }
    }

    /// Destination `outpost`'s nodes, if it has any.
    pub fn region(&self, outpost: Option<&OutpostId>) -> Option<&Region> {
        self.domains.get(&outpost.cloned())
    }

    /// The verified bytes of `id`: from its destination's nodes, then from
    /// any other destination's (a restore may cross them).
    pub async fn get(
        &self,
        ctx: &Ctx,
        id: ChunkId,
        outpost: Option<&OutpostId>,
    ) -> Result<Vec<u8>, String> {
        let home = outpost.cloned();
        let mut last = format!("no chunk node of its destination holds chunk {id}");
        let order = self
            .domains
            .get(&home)
            .into_iter()
            .chain(self.domains.iter().filter(|(k, _)| **k != home).map(|(_, r)| r));
        for region in order {
            match get_chunk(ctx, region, id).await {
                Ok(b) => return Ok(b.into()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    pub async fn root(&self, ctx: &Ctx, r: &Root) -> Result<ManifestRoot, String> {
        let bytes = self.get(ctx, r.id, r.outpost.as_ref()).await?;
        ManifestRoot::decode(&bytes).map_err(|e| e.to_string())
    }

    pub async fn page(
        &self,
        ctx: &Ctx,
        id: ChunkId,
        outpost: Option<&OutpostId>,
    ) -> Result<ManifestPage, String> {
        let bytes = self.get(ctx, id, outpost).await?;
        ManifestPage::decode(&bytes).map_err(|e| e.to_string())
    }
}

/// Roots read at once (a root lists its pages: up to ~320 KiB decoded for a
/// 16 TiB volume, so a batch takes up to ~20 MiB).
const ROOTS_AT_ONCE: usize = 64;
/// Pages named by a batch of roots queued before they are read, at most.
const PAGES_QUEUED: usize = 1024;
/// Manifest objects in flight at once. A page is up to ~160 KiB encoded and
/// as much decoded, so reads in flight take up to ~20 MiB beside
/// `gc_memory_bytes`. A mark waits on reads, not on the CPU: 16 in flight
/// marked 3,000 snapshots in 6.7 s, 64 in 3.1 s.
const READS_AT_ONCE: usize = 64;

/// Marks every chunk, page and root that `roots` need, within `partition`,
/// into a filter sized for `expected` ids and at most `filter_bytes`.
/// `max_walked` bounds the set of pages walked already.
///
/// Roots are taken [`ROOTS_AT_ONCE`] at a time: their roots read
/// concurrently, then the pages they name that no earlier root named, each
/// once, [`READS_AT_ONCE`] in flight and at most [`PAGES_QUEUED`] queued. A mark is round trips to chunk nodes,
/// so this is what its time is made of.
pub async fn mark(
    ctx: &Ctx,
    sources: &Sources,
    roots: &[Root],
    partition: Partition,
    expected: u64,
    filter_bytes: u64,
    max_walked: usize,
) -> Result<(LiveFilter, MarkStats), String> {
    let mut filter = LiveFilter::new(partition, expected, filter_bytes);
    let mut walked: HashSet<ChunkId> = HashSet::new();
    let mut stats = MarkStats::default();
    for batch in roots.chunks(ROOTS_AT_ONCE) {
        let read = stream::iter(batch.iter().cloned())
            .map(|r| read_root(ctx, sources, r))
            .buffered(READS_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        // Pages to read, each with the index in `read` of a root naming it.
        let mut pages: Vec<(ChunkId, usize)> = Vec::new();
        let mut queued: HashSet<ChunkId> = HashSet::new();
        for (i, (r, root)) in read.iter().enumerate() {
            filter.insert(&r.id);
            stats.roots += 1;
            for (_, page_id) in &root.pages {
                filter.insert(page_id);
                if !walked.contains(page_id) && queued.insert(*page_id) {
                    pages.push((*page_id, i));
                }
                if pages.len() >= PAGES_QUEUED {
                    let w = Walk { filter: &mut filter, walked: &mut walked, stats: &mut stats };
                    w.pages(ctx, sources, &read, std::mem::take(&mut pages), max_walked).await?;
                }
            }
        }
        let w = Walk { filter: &mut filter, walked: &mut walked, stats: &mut stats };
        w.pages(ctx, sources, &read, pages, max_walked).await?;
    }
    Ok((filter, stats))
}

/// What walking pages changes.
struct Walk<'a> {
    filter: &'a mut LiveFilter,
    walked: &'a mut HashSet<ChunkId>,
    stats: &'a mut MarkStats,
}

impl Walk<'_> {
    /// Reads `pages` ([`READS_AT_ONCE`] in flight) into the filter; each
    /// names the root in `roots` it was found under, for its destination.
    async fn pages(
        self,
        ctx: &Ctx,
        sources: &Sources,
        roots: &[(Root, ManifestRoot)],
        pages: Vec<(ChunkId, usize)>,
        max_walked: usize,
    ) -> Result<(), String> {
        let mut read = stream::iter(pages)
            .map(|(id, i)| read_page(ctx, sources, id, &roots[i].0))
            .buffer_unordered(READS_AT_ONCE);
        while let Some((id, page)) = read.try_next().await? {
            self.stats.pages_read += 1;
            for (_, chunk) in &page.entries {
                self.filter.insert(chunk);
                self.stats.entries += 1;
            }
            if self.walked.len() < max_walked {
                self.walked.insert(id);
            }
        }
        Ok(())
    }
}

async fn read_root(ctx: &Ctx, sources: &Sources, r: Root) -> Result<(Root, ManifestRoot), String> {
    match sources.root(ctx, &r).await {
        Ok(m) => Ok((r, m)),
        Err(e) => Err(format!("manifest of {}: {e}", r.why)),
    }
}

async fn read_page(
    ctx: &Ctx,
    sources: &Sources,
    id: ChunkId,
    r: &Root,
) -> Result<(ChunkId, ManifestPage), String> {
    match sources.page(ctx, id, r.outpost.as_ref()).await {
        Ok(p) => Ok((id, p)),
        Err(e) => Err(format!("manifest page of {}: {e}", r.why)),
    }
}
