//! The manifest writer: the copied volume's manifest written page by page
//! as the copy's checkpoints pass each page's last block (over the parent's
//! pages when the freeze was incremental, storing only changed pages), each
//! page stored at RF while later batches are, then the root once every page
//! is. It holds the open page's entries, up to 8 parent pages being
//! fetched and 8 pages being stored, and the root's page list: memory
//! bounded by a few pages (160 KiB each when full), not by the volume.

use crate::error::ChunkNodeError;
use crate::peers::Sender;
use cairn_core::manifest::{ManifestPage, ManifestRoot, ManifestWriter, PAGE_BLOCKS};
use cairn_core::ChunkId;
use futures::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use futures::FutureExt;
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;

/// Pages stored at once, and parent pages fetched at once.
const PAGES_IN_FLIGHT: usize = 8;

/// A page number and the new entries of its blocks (None: zero).
type PageChanges = (u64, Vec<(u64, Option<ChunkId>)>);

/// A manifest stored at RF.
pub(crate) struct StoredManifest {
    pub(crate) root_id: ChunkId,
    /// Non-zero blocks of the whole volume.
    pub(crate) data_blocks: u64,
    pub(crate) pages_written: usize,
    /// `PutChunk` calls made.
    pub(crate) sent: u64,
}

/// The manifest being written as a copy's batches become durable.
pub(crate) struct ManifestFeed {
    sender: Arc<Sender>,
    writer: ManifestWriter,
    /// The page not yet complete and its blocks' entries so far.
    open: Option<PageChanges>,
    storing: FuturesUnordered<AbortOnDropHandle<Result<u64, ChunkNodeError>>>,
    pages_written: usize,
    sent: u64,
}

impl ManifestFeed {
    /// Starts the manifest of a volume of `volume_size` bytes: for an
    /// `incremental` freeze over the parent root `parent`, else whole,
    /// naming `parent` (if any) as its lineage.
    pub(crate) async fn start(
        sender: Arc<Sender>,
        parent: Option<ChunkId>,
        incremental: bool,
        volume_size: u64,
    ) -> Result<ManifestFeed, ChunkNodeError> {
        let writer = match parent.filter(|_| incremental) {
            Some(root_id) => {
                let root = ManifestRoot::decode(&sender.fetch(root_id).await?)?;
                let blocks = match root.data_blocks {
                    Some(n) => n,
                    None => count_blocks(&sender, &root).await?,
                };
                ManifestWriter::incremental(root_id, &root, volume_size, blocks)?
            }
            None => ManifestWriter::full(volume_size, parent),
        };
        let storing = FuturesUnordered::new();
        Ok(ManifestFeed { sender, writer, open: None, storing, pages_written: 0, sent: 0 })
    }

    /// Adds the entries of a durable batch (ascending, after every earlier
    /// batch's) whose checkpoint is `checkpoint`, writing every page it
    /// completes: each page it leaves, and the open one once the checkpoint
    /// passed its last block.
    pub(crate) async fn add(
        &mut self,
        entries: &[(u64, Option<ChunkId>)],
        checkpoint: u64,
    ) -> Result<(), ChunkNodeError> {
        let mut done = Vec::new();
        for &(idx, id) in entries {
            let page = idx / PAGE_BLOCKS;
            match &mut self.open {
                Some((p, changes)) if *p == page => changes.push((idx, id)),
                _ => done.extend(self.open.replace((page, vec![(idx, id)]))),
            }
        }
        if matches!(&self.open, Some((p, _)) if (p + 1) * PAGE_BLOCKS <= checkpoint) {
            done.extend(self.open.take());
        }
        self.write(done).await
    }

    /// Writes the last page and stores the root once every page is stored.
    pub(crate) async fn finish(mut self) -> Result<StoredManifest, ChunkNodeError> {
        let last = self.open.take();
        self.write(last.into_iter().collect()).await?;
        while let Some(sent) = self.storing.next().await {
            self.sent += sent??;
        }
        let root = self.writer.finish();
        self.sent += self.sender.store(vec![(root.root_id, root.root)]).await?.puts;
        Ok(StoredManifest {
            root_id: root.root_id,
            data_blocks: root.data_blocks,
            pages_written: self.pages_written,
            sent: self.sent,
        })
    }

    /// Writes complete pages, in order, with their parent pages fetched a
    /// few ahead, and starts storing each that changed as it is written.
    async fn write(&mut self, pages: Vec<PageChanges>) -> Result<(), ChunkNodeError> {
        let wanted: Vec<Option<ChunkId>> =
            pages.iter().map(|(p, _)| self.writer.parent_page(*p)).collect();
        let sender = &self.sender;
        let mut parents = stream::iter(wanted)
            .map(|id| async move {
                match id {
                    Some(id) => Ok(Some(ManifestPage::decode(&sender.fetch(id).await?)?)),
                    None => Ok::<_, ChunkNodeError>(None),
                }
            })
            .buffered(PAGES_IN_FLIGHT);
        for (page, changes) in pages {
            let parent = parents.next().await.expect("one parent per page")?;
            let Some(written) = self.writer.write_page(page, parent.as_ref(), changes)? else {
                continue;
            };
            // Room for one more store; a store that failed fails the copy now.
            while let Some(Some(sent)) = self.storing.next().now_or_never() {
                self.sent += sent??;
            }
            while self.storing.len() >= PAGES_IN_FLIGHT {
                let sent = self.storing.next().await.expect("pages are being stored");
                self.sent += sent??;
            }
            let sender = self.sender.clone();
            let task = tokio::spawn(async move { Ok(sender.store(vec![written]).await?.puts) });
            self.storing.push(AbortOnDropHandle::new(task));
            self.pages_written += 1;
        }
        Ok(())
    }
}

/// The non-zero blocks of a version 1 root, which does not record them:
/// its pages counted, a few at a time.
async fn count_blocks(sender: &Sender, root: &ManifestRoot) -> Result<u64, ChunkNodeError> {
    let ids: Vec<ChunkId> = root.pages.iter().map(|(_, id)| *id).collect();
    stream::iter(ids)
        .map(|id| async move {
            Ok::<_, ChunkNodeError>(
                ManifestPage::decode(&sender.fetch(id).await?)?.entries.len() as u64
            )
        })
        .buffer_unordered(PAGES_IN_FLIGHT)
        .try_fold(0u64, |n, k| async move { Ok(n + k) })
        .await
}
