//! The manifest writer: builds the manifest of a copied volume (from the
//! parent's when the freeze was incremental, writing only changed pages)
//! and stores its pages and root at RF.

use crate::error::ChunkNodeError;
use crate::peers::{self, Sender};
use cairn_core::manifest::{
    BuiltManifest, IncrementalBuilder, ManifestBuilder, ManifestPage, ManifestRoot,
};
use cairn_core::ChunkId;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A manifest stored at RF.
pub(crate) struct StoredManifest {
    pub(crate) root_id: ChunkId,
    /// Non-zero blocks of the whole volume.
    pub(crate) data_blocks: u64,
    pub(crate) pages_written: usize,
    /// `PutChunk` calls made.
    pub(crate) sent: u64,
}

/// Builds the manifest of `entries` (for an `incremental` freeze from the
/// parent's, writing only changed pages; else whole, naming `parent` as its
/// parent) and stores its pages and root at RF.
pub(crate) async fn store_manifest(
    sender: Arc<Sender>,
    parent: Option<ChunkId>,
    incremental: bool,
    volume_size: u64,
    entries: BTreeMap<u64, Option<ChunkId>>,
) -> Result<StoredManifest, ChunkNodeError> {
    let built = match parent.filter(|_| incremental) {
        Some(root_id) => {
            let peers = sender.peers();
            let cands = peers::candidates(peers);
            let rf = sender.rf();
            let root = ManifestRoot::decode(&peers::fetch(peers, &cands, rf, root_id).await?)?;
            let mut b = IncrementalBuilder::new(root_id, root, volume_size)?;
            for (idx, id) in entries {
                b.set(idx, id);
            }
            let needed = b.pages_needed();
            let cands = &cands;
            let pages: BTreeMap<u64, ManifestPage> = stream::iter(needed)
                .map(|(n, id)| async move {
                    let page = ManifestPage::decode(&peers::fetch(peers, cands, rf, id).await?)?;
                    Ok::<_, ChunkNodeError>((n, page))
                })
                .buffer_unordered(8)
                .try_collect()
                .await?;
            b.finish(&pages)?
        }
        None => {
            let mut b = ManifestBuilder::with_parent(volume_size, parent);
            for (idx, id) in entries {
                b.set(idx, id);
            }
            b.finish()
        }
    };
    let BuiltManifest { root_id, root, mut pages, data_blocks } = built;
    let pages_written = pages.len();
    pages.push((root_id, root));
    let sent = sender.store(pages).await?.puts;
    Ok(StoredManifest { root_id, data_blocks, pages_written, sent })
}
