//! Restore: creates a new volume from a snapshot's manifest. The root and
//! pages are fetched, checked and persisted with the volume (the pages'
//! entries as its chunk map on disk, written as they arrive); the blocks
//! themselves come later, on demand or from the background hydrator
//! ([`crate::volume::hydration`]), each from its placement replicas among the sources
//! (falling back to every source) and verified.

use crate::error::ChunkNodeError;
use crate::peers;
use crate::volume::hydration::FETCHES_IN_FLIGHT;
use crate::volume::restoremap::HydrationMap;
use crate::volume::VolumeHost;
use cairn_core::manifest::{ManifestError, ManifestPage, ManifestRoot, PAGE_BLOCKS};
use cairn_core::{ChunkId, BLOCK_SIZE};
use cairn_proto::pb::StoreNode;
use futures::stream::{self, StreamExt, TryStreamExt};

/// What to restore.
pub struct RestoreJob {
    pub volume_id: String,
    /// Requested size; 0 means the snapshot's size. Never smaller than it.
    pub size_bytes: u64,
    pub manifest_root: ChunkId,
    pub sources: Vec<StoreNode>,
    pub replication_factor: u32,
}

/// Restores `job` into a new volume, lazily: reads the manifest (root and
/// pages), persists it as the volume's hydration state and creates
/// the volume, which is then usable at once. Idempotent: an existing volume
/// of the requested size is left alone.
pub async fn run(host: &VolumeHost, job: RestoreJob) -> Result<(), ChunkNodeError> {
    if job.size_bytes > 0 {
        if let Some(v) = host.get(&job.volume_id) {
            if v.size() == job.size_bytes {
                return Ok(());
            }
        }
    }
    if job.sources.is_empty() {
        return Err(ChunkNodeError::InvalidArgument("restore needs source chunk nodes"));
    }
    let peers = peers::connect(&job.sources)?;
    let cands = peers::candidates(&peers);
    let rf = peers::replication_factor(job.replication_factor);

    let root_bytes = peers::fetch(&peers, &cands, rf, job.manifest_root).await?;
    let root = ManifestRoot::decode(&root_bytes)?;
    if root.block_size as usize != BLOCK_SIZE {
        return Err(ManifestError::Corrupt(format!("block size {}", root.block_size)).into());
    }
    let size = match job.size_bytes {
        0 => root.volume_size_bytes,
        s if s < root.volume_size_bytes => {
            return Err(ChunkNodeError::InvalidArgument("volume smaller than its snapshot"))
        }
        s => s,
    };
    if let Some(v) = host.get(&job.volume_id) {
        return if v.size() == size {
            Ok(())
        } else {
            Err(ChunkNodeError::VolumeExists { id: job.volume_id, size: v.size() })
        };
    }
    let started = std::time::Instant::now();
    let mut pages = stream::iter(root.pages.iter().copied())
        .map(|(page_no, page_id)| {
            let (peers, cands) = (&peers, &cands);
            async move {
                let page = ManifestPage::decode(&peers::fetch(peers, cands, rf, page_id).await?)?;
                if page.page != page_no {
                    return Err(ManifestError::Corrupt(format!(
                        "page {} listed as {page_no}",
                        page.page
                    ))
                    .into());
                }
                Ok::<_, ChunkNodeError>(page)
            }
        })
        .buffered(FETCHES_IN_FLIGHT);
    // The entries go to the chunk map on disk as the pages arrive (in page
    // order), so a restore holds at most the pages in flight.
    let host2 = host.clone();
    let mut ids = tokio::task::spawn_blocking(move || host2.new_block_ids()).await??;
    while let Some(page) = pages.try_next().await? {
        let size = root.volume_size_bytes;
        ids = tokio::task::spawn_blocking(move || {
            for (idx, id) in &page.entries {
                if idx / PAGE_BLOCKS != page.page || (idx * BLOCK_SIZE as u64) >= size {
                    let why = format!("block {idx} in page {}", page.page);
                    return Err(ManifestError::Corrupt(why).into());
                }
                if let Some(last) = ids.last().filter(|last| last >= idx) {
                    let why = format!("block {idx} after block {last}");
                    return Err(ManifestError::Corrupt(why).into());
                }
                ids.push(*idx, id)?;
            }
            Ok::<_, ChunkNodeError>(ids)
        })
        .await??;
    }
    let ids = tokio::task::spawn_blocking(move || ids.finish()).await??;
    let blocks = ids.count;
    let map = HydrationMap {
        size,
        replication_factor: job.replication_factor,
        sources: job
            .sources
            .iter()
            .map(|n| (n.node_id.clone(), n.az.clone(), n.grpc_addr.clone()))
            .collect(),
        blocks,
    };
    host.create_restored(&job.volume_id, map, ids).await?;
    tracing::info!(
        volume = %job.volume_id, root = %job.manifest_root, blocks, elapsed = ?started.elapsed(),
        "volume restored; hydrating in the background"
    );
    Ok(())
}
