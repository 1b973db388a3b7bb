//! What deleting one snapshot would free now: the chunks and pages of its
//! manifest that no other completed snapshot and no hold needs, counted
//! exactly (a set of the snapshot's own ids, struck out while every other
//! manifest is walked), so memory grows with that one snapshot's size.

use super::mark::{Root, Sources};
use super::pass::{holders, roots};
use crate::ctx::Ctx;
use cairn_core::{ChunkId, SnapshotId, BLOCK_SIZE};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotUsage {
    pub snapshot_id: String,
    /// Chunks (blocks) and manifest pages the snapshot's manifest names.
    pub chunks: u64,
    pub pages: u64,
    /// Bytes only this snapshot needs (blocks and manifest pages): freed,
    /// once per replica, by deleting it; and how many of them are blocks.
    pub unique_bytes: u64,
    pub unique_chunks: u64,
    /// Bytes it shares with other snapshots or holders.
    pub shared_bytes: u64,
    pub replication_factor: u32,
}

/// Why usage cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("The snapshot '{0}' does not exist or is not completed.")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The bytes deleting `id` would free now, and those it shares.
pub async fn snapshot_usage(ctx: &Ctx, id: &SnapshotId) -> Result<SnapshotUsage, UsageError> {
    let unavailable = |e: String| UsageError::Unavailable(e);
    let snap = ctx.snapshot(id).await.map_err(|e| unavailable(e.to_string()))?;
    let Some(root_id) = snap.as_ref().and_then(|s| s.manifest_root) else {
        return Err(UsageError::NotFound(id.to_string()));
    };
    let snap = snap.expect("checked above");
    let fleet = ctx.fleet().await.map_err(|e| unavailable(e.to_string()))?;
    let sources = Sources::new(&fleet, ctx.config.replication_factor);
    let own =
        Root { id: root_id, outpost: snap.outpost.clone(), why: id.to_string(), everywhere: false };

    // Its own ids, with their sizes (blocks are BLOCK_SIZE; pages as read).
    // id -> (bytes, whether it is a manifest page)
    let mut mine: HashMap<ChunkId, (u64, bool)> = HashMap::new();
    let root = sources.root(ctx, &own).await.map_err(unavailable)?;
    let mut usage = SnapshotUsage {
        snapshot_id: id.to_string(),
        replication_factor: ctx.config.replication_factor,
        ..Default::default()
    };
    for (_, page_id) in &root.pages {
        let bytes = sources.get(ctx, *page_id, own.outpost.as_ref()).await.map_err(unavailable)?;
        let page = cairn_core::manifest::ManifestPage::decode(&bytes)
            .map_err(|e| unavailable(e.to_string()))?;
        usage.pages += 1;
        mine.insert(*page_id, (bytes.len() as u64, true));
        for (_, c) in &page.entries {
            usage.chunks += 1;
            mine.insert(*c, (BLOCK_SIZE as u64, false));
        }
    }
    let total: u64 = mine.values().map(|(b, _)| b).sum();

    // Strike out whatever any other holder needs.
    let h = holders(ctx).await.map_err(unavailable)?;
    let (others, _, _) = roots(ctx, &h).await.map_err(unavailable)?;
    let mut walked: HashSet<ChunkId> = HashSet::new();
    // Only what its own placement domain needs keeps its chunks there (GC
    // marks each domain on its own; holds count everywhere).
    let same_domain = |r: &&Root| r.everywhere || r.outpost == own.outpost;
    for r in others.iter().filter(same_domain).filter(|r| !(r.id == root_id && r.why == own.why)) {
        if mine.is_empty() {
            break;
        }
        let other = sources.root(ctx, r).await.map_err(unavailable)?;
        for (_, page_id) in &other.pages {
            mine.remove(page_id);
            if !walked.insert(*page_id) {
                continue;
            }
            let page =
                sources.page(ctx, *page_id, r.outpost.as_ref()).await.map_err(unavailable)?;
            for (_, c) in &page.entries {
                mine.remove(c);
            }
        }
    }
    usage.unique_chunks = mine.values().filter(|(_, page)| !page).count() as u64;
    usage.unique_bytes = mine.values().map(|(b, _)| b).sum();
    usage.shared_bytes = total - usage.unique_bytes;
    Ok(usage)
}
