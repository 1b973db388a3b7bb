//! Archiving a snapshot: its full content (every object its manifest names,
//! not only its increment over a parent) read from its chunk nodes,
//! packed, written, read back and checked, then described by the index.

use super::format::{index_key, pack_key, prefix, verify_pack, Entry, Index, PACK_BYTES};
use super::report::Reporter;
use crate::ctx::Ctx;
use crate::ebs::chunks::{get_chunk, Region};
use cairn_core::manifest::{ManifestPage, ManifestRoot};
use cairn_core::records::Snapshot;
use cairn_core::tiering::ArchiveCopy;
use cairn_core::ChunkId;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use std::collections::HashSet;

/// Chunks read from the chunk nodes at once.
const READS: usize = 16;

/// What is being written: the index so far and the open pack.
struct Writer<'a> {
    store: &'a dyn ObjectStore,
    prefix: String,
    index: Index,
    pack: Vec<u8>,
    seen: HashSet<ChunkId>,
    bytes: u64,
}

impl Writer<'_> {
    async fn add(&mut self, id: ChunkId, data: Vec<u8>) -> Result<(), String> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        if self.pack.len() + data.len() > PACK_BYTES && !self.pack.is_empty() {
            self.flush().await?;
        }
        let entry = Entry {
            id,
            pack: self.index.packs.len() as u32,
            offset: self.pack.len() as u64,
            len: data.len() as u32,
        };
        self.index.entries.push(entry);
        self.pack.extend_from_slice(&data);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        let n = self.index.packs.len();
        let pack = std::mem::take(&mut self.pack);
        self.index.packs.push(pack.len() as u64);
        self.bytes += pack.len() as u64;
        let key = Path::from(pack_key(&self.prefix, n));
        self.store.put(&key, PutPayload::from(pack)).await.map_err(|e| format!("{key}: {e}"))?;
        Ok(())
    }
}

/// Reads `ids` (in order) from the snapshot's nodes, [`READS`] at a time.
async fn read_all(ctx: &Ctx, region: &Region, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, String> {
    let reads: Vec<_> = ids.iter().map(|id| read_one(ctx, region, *id)).collect();
    stream::iter(reads).buffered(READS).try_collect().await
}

async fn read_one(ctx: &Ctx, region: &Region, id: ChunkId) -> Result<Vec<u8>, String> {
    get_chunk(ctx, region, id).await.map(Vec::from).map_err(|e| format!("chunk {id}: {e}"))
}

/// Writes `snap`'s archive and checks it; answers where it is.
pub async fn archive(
    ctx: &Ctx,
    store: &dyn ObjectStore,
    snap: &Snapshot,
    report: &Reporter<'_>,
) -> Result<ArchiveCopy, String> {
    let root_id = snap.manifest_root.ok_or("the snapshot has no manifest")?;
    let rf = ctx.config.replication_factor.max(1) as usize;
    let region =
        Region::of(&ctx.fleet().await.map_err(|e| e.to_string())?, snap.outpost.as_ref(), rf);
    let root_bytes = get_chunk(ctx, &region, root_id).await.map_err(|e| e.to_string())?;
    let root = ManifestRoot::decode(&root_bytes).map_err(|e| e.to_string())?;
    let total = root.data_blocks.unwrap_or(0).max(1);
    let mut w = Writer {
        store,
        prefix: prefix(snap.id.as_str()),
        index: Index::new(root_id),
        pack: Vec::new(),
        seen: HashSet::new(),
        bytes: 0,
    };
    let mut done = 0u64;
    for (_, page_id) in &root.pages {
        let page_bytes = get_chunk(ctx, &region, *page_id).await.map_err(|e| e.to_string())?;
        let page = ManifestPage::decode(&page_bytes).map_err(|e| e.to_string())?;
        w.add(*page_id, page_bytes.into()).await?;
        for batch in page.entries.chunks(256) {
            let ids: Vec<ChunkId> = batch.iter().map(|(_, c)| *c).collect();
            for (id, data) in ids.iter().zip(read_all(ctx, &region, &ids).await?) {
                w.add(*id, data).await?;
            }
            done += batch.len() as u64;
            // Reading and writing is the first 80%; the check the rest.
            report.progress((done * 80 / total) as u8).await;
        }
    }
    w.add(root_id, root_bytes.into()).await?;
    if !w.pack.is_empty() {
        w.flush().await?;
    }
    verify(store, &w.prefix, &w.index, report).await?;
    let index = w.index.encode();
    let index_len = index.len() as u64;
    let key = Path::from(index_key(&w.prefix));
    store.put(&key, PutPayload::from(index)).await.map_err(|e| format!("{key}: {e}"))?;
    Ok(ArchiveCopy {
        prefix: w.prefix,
        objects: w.index.packs.len() as u32 + 1,
        bytes: w.bytes + index_len,
    })
}

/// Reads every pack back and checks it against the index.
async fn verify(
    store: &dyn ObjectStore,
    prefix: &str,
    index: &Index,
    report: &Reporter<'_>,
) -> Result<(), String> {
    let packs = index.packs.len().max(1);
    for n in 0..index.packs.len() {
        let key = Path::from(pack_key(prefix, n));
        let got = store.get(&key).await.map_err(|e| format!("{key}: {e}"))?;
        let bytes = got.bytes().await.map_err(|e| format!("{key}: {e}"))?;
        verify_pack(index, n, &bytes)
            .map_err(|e| format!("the archive does not read back: {e}"))?;
        report.progress((80 + (n + 1) * 19 / packs) as u8).await;
    }
    Ok(())
}
