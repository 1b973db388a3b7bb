//! Bringing an archive back into the chunk stores, pack by pack (each
//! object checked against its id, put only on the replicas that lack it),
//! and deleting an archive.

use super::format::{index_key, pack_key, verify_pack, Index};
use super::report::Reporter;
use crate::ctx::Ctx;
use crate::ebs::chunks::{lacking, put_on, Region, CALL_SECS};
use crate::nodes::HostError;
use cairn_core::records::{ChunkNodeInfo, Snapshot};
use cairn_core::tiering::ArchiveCopy;
use cairn_core::ChunkId;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

/// Puts at once.
const PUTS: usize = 16;

async fn read(store: &dyn ObjectStore, key: &str) -> Result<bytes::Bytes, String> {
    let path = Path::from(key);
    let got = store.get(&path).await.map_err(|e| format!("{key}: {e}"))?;
    got.bytes().await.map_err(|e| format!("{key}: {e}"))
}

/// Restores `snap`'s archive `copy` into the chunk nodes of its domain.
pub async fn restore(
    ctx: &Ctx,
    store: &dyn ObjectStore,
    snap: &Snapshot,
    copy: &ArchiveCopy,
    report: &Reporter<'_>,
) -> Result<(), String> {
    let index = Index::decode(&read(store, &index_key(&copy.prefix)).await?)?;
    if Some(index.root) != snap.manifest_root {
        return Err(format!("the archive holds manifest {}, not the snapshot's", index.root));
    }
    let rf = ctx.config.replication_factor.max(1) as usize;
    let to = Region::of(&ctx.fleet().await.map_err(|e| e.to_string())?, snap.outpost.as_ref(), rf);
    if to.nodes.is_empty() {
        return Err("no chunk node of the snapshot's destination is up".into());
    }
    let packs = index.packs.len().max(1);
    for n in 0..index.packs.len() {
        let pack = read(store, &pack_key(&copy.prefix, n)).await?;
        verify_pack(&index, n, &pack)?;
        let entries: Vec<_> = index.in_pack(n).collect();
        let ids: Vec<ChunkId> = entries.iter().map(|e| e.id).collect();
        let missing = lacking(ctx, &to, &ids, CALL_SECS).await.map_err(|e| e.to_string())?;
        let puts: Vec<_> = entries
            .into_iter()
            .filter_map(|e| {
                let nodes = missing.get(&e.id)?.clone();
                let data = pack.slice(e.offset as usize..e.offset as usize + e.len as usize);
                Some(put_owned(ctx, nodes, e.id, data))
            })
            .collect();
        stream::iter(puts)
            .buffer_unordered(PUTS)
            .try_collect::<Vec<()>>()
            .await
            .map_err(|e| e.to_string())?;
        report.progress(((n + 1) * 99 / packs) as u8).await;
    }
    Ok(())
}

async fn put_owned(
    ctx: &Ctx,
    nodes: Vec<ChunkNodeInfo>,
    id: ChunkId,
    data: bytes::Bytes,
) -> Result<(), HostError> {
    put_on(ctx, &nodes, id, data, CALL_SECS).await
}

/// Deletes every object under `prefix`.
pub async fn purge(store: &dyn ObjectStore, prefix: &str) -> Result<(), String> {
    let path = Path::from(prefix);
    let keys: Vec<Path> = store
        .list(Some(&path))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(|e| format!("{prefix}: {e}"))?;
    for key in keys {
        match store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("{key}: {e}")),
        }
    }
    Ok(())
}
