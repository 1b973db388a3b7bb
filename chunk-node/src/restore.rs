//! Restore: builds a new volume from a snapshot's manifest. The root and
//! pages are fetched and decoded, then every non-zero block is fetched from
//! its placement replicas among the sources (falling back to every source),
//! verified, and written into a staging file; zero blocks stay holes. The
//! volume appears (and becomes reachable over NBD) only once it is whole.
//!
//! Restore is eager: the RPC returns when every block is local. Lazy loading
//! with a background hydrator (DESIGN.md) is not built yet.

use crate::error::ChunkNodeError;
use crate::peers::{self, Peer};
use crate::volumes::VolumeHost;
use cairn_core::manifest::{ManifestError, ManifestPage, ManifestRoot, PAGE_BLOCKS};
use cairn_core::placement::Candidate;
use cairn_core::{ChunkId, BLOCK_SIZE};
use cairn_proto::pb::StoreNode;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Concurrent chunk fetches.
const FETCHES_IN_FLIGHT: usize = 8;

/// What to restore.
pub struct RestoreJob {
    pub volume_id: String,
    /// Requested size; 0 means the snapshot's size. Never smaller than it.
    pub size_bytes: u64,
    pub manifest_root: ChunkId,
    pub sources: Vec<StoreNode>,
    pub replication_factor: u32,
}

/// Restores `job` into a new volume. Idempotent: an existing volume of the
/// requested size is left alone.
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

    let staging = host.staging(size).await?;
    let file = Arc::new(
        staging
            .as_file()
            .try_clone()
            .map_err(|e| ChunkNodeError::io("reopen", staging.path(), e))?,
    );
    let mut blocks = 0u64;
    for (page_no, page_id) in &root.pages {
        let bytes = peers::fetch(&peers, &cands, rf, *page_id).await?;
        let page = ManifestPage::decode(&bytes)?;
        if page.page != *page_no {
            return Err(
                ManifestError::Corrupt(format!("page {} listed as {page_no}", page.page)).into()
            );
        }
        for (idx, _) in &page.entries {
            if idx / PAGE_BLOCKS != *page_no || (idx * BLOCK_SIZE as u64) >= root.volume_size_bytes
            {
                return Err(ManifestError::Corrupt(format!("block {idx} in page {page_no}")).into());
            }
        }
        blocks += page.entries.len() as u64;
        stream::iter(page.entries)
            .map(|(idx, id)| write_block(&peers, &cands, rf, &file, size, idx, id))
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
    }
    host.install(&job.volume_id, size, staging).await?;
    tracing::info!(volume = %job.volume_id, root = %job.manifest_root, blocks, "volume restored");
    Ok(())
}

async fn write_block(
    peers: &[Peer],
    cands: &[Candidate],
    rf: usize,
    file: &Arc<File>,
    size: u64,
    idx: u64,
    id: ChunkId,
) -> Result<(), ChunkNodeError> {
    let data = peers::fetch(peers, cands, rf, id).await?;
    let off = idx * BLOCK_SIZE as u64;
    if data.len() > BLOCK_SIZE || off + data.len() as u64 > size {
        return Err(ManifestError::Corrupt(format!("chunk {id} does not fit block {idx}")).into());
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        file.write_all_at(&data, off)
            .map_err(|e| ChunkNodeError::io("write restored block", format!("block {idx}"), e))
    })
    .await?
}
