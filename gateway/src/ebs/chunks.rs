//! Where EBS-direct bytes go: chunks, manifest pages and roots on the RF
//! regional chunk nodes placement picks for their id (the same nodes and the
//! same rule as the copy executor, so everything dedups with everything
//! else), written at RF and read back verified. Placement picks only nodes
//! that are up; reads also try draining nodes, after every pickable one.

use super::error::EbsError;
use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use cairn_core::command::NodeEntry;
use cairn_core::manifest::{ManifestPage, ManifestRoot};
use cairn_core::placement::{place, Candidate};
use cairn_core::records::{ChunkNodeInfo, NodeState};
use cairn_core::{ChunkId, OutpostId};
use cairn_proto::pb;
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet};

/// Deadline of one chunk or staging call.
pub const CALL_SECS: u64 = 30;

/// The chunk nodes of one destination (the region's, or an Outpost's), and the RF.
pub struct Region {
    /// The nodes placement picks from (up).
    pub nodes: Vec<ChunkNodeInfo>,
    /// Nodes that are read from, last, but never written to (draining).
    pub also_read: Vec<ChunkNodeInfo>,
    pub rf: usize,
}

impl Region {
    /// The regional destination, as placement sees it now.
    pub async fn load(ctx: &Ctx) -> Result<Region, EbsError> {
        let rf = ctx.config.replication_factor.max(1) as usize;
        let region = Region::of(&ctx.fleet().await?, None, rf);
        if region.nodes.is_empty() {
            return Err(EbsError::Throttled("No regional chunk node is up.".into()));
        }
        Ok(region)
    }

    /// Destination `outpost`'s nodes among `fleet`, by their states.
    pub fn of(fleet: &[NodeEntry], outpost: Option<&OutpostId>, rf: usize) -> Region {
        let pick = |keep: fn(NodeState) -> bool| {
            let infos: Vec<ChunkNodeInfo> =
                fleet.iter().filter(|e| keep(e.state)).map(|e| e.info.clone()).collect();
            destination_nodes(&infos, outpost)
        };
        Region {
            nodes: pick(NodeState::takes_data),
            also_read: pick(|s| s.serves_reads() && !s.takes_data()),
            rf,
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .iter()
            .map(|n| Candidate { node_id: n.node_id.clone(), az: n.az.clone() })
            .collect()
    }

    /// The replicas of `key`, best first.
    pub fn replicas(&self, key: &ChunkId) -> Vec<&ChunkNodeInfo> {
        place(key, &self.candidates(), self.rf)
            .into_iter()
            .filter_map(|i| self.nodes.get(i))
            .collect()
    }

    /// Every node, the replicas of `key` first and the read-only nodes
    /// last (where to look for it).
    pub fn search_order(&self, key: &ChunkId) -> Vec<&ChunkNodeInfo> {
        let mut order = self.replicas(key);
        for n in self.nodes.iter().chain(&self.also_read) {
            if !order.iter().any(|o| o.node_id == n.node_id) {
                order.push(n);
            }
        }
        order
    }
}

/// Stores `data` under `id` on every replica; done when all hold it.
pub async fn put_chunk(
    ctx: &Ctx,
    region: &Region,
    id: ChunkId,
    data: bytes::Bytes,
) -> Result<(), EbsError> {
    // Every replica's request shares the one buffer (a copy per replica was
    // a fifth of the gateway's CPU in PutSnapshotBlock's profile).
    let puts = region.replicas(&id).into_iter().map(|node| {
        let data = data.clone();
        async move {
            let mut c = ctx.nodes.chunk_store(node)?;
            let req = pb::PutChunkRequest { id: id.0.to_vec(), data };
            call(&node.node_id, CALL_SECS, c.put_chunk(req)).await.map(|_| ())
        }
    });
    for r in join_all(puts).await {
        r?;
    }
    Ok(())
}

/// Which destination replicas of each of `ids` lack it: every replica is
/// asked once (`HasChunks`, which also stamps what it holds for GC's fence).
/// Calls have a deadline of `secs`.
pub async fn lacking(
    ctx: &Ctx,
    to: &Region,
    ids: &[ChunkId],
    secs: u64,
) -> Result<BTreeMap<ChunkId, Vec<ChunkNodeInfo>>, HostError> {
    let unique: BTreeSet<ChunkId> = ids.iter().copied().collect();
    let mut wanted: BTreeMap<&str, (&ChunkNodeInfo, Vec<ChunkId>)> = BTreeMap::new();
    for id in &unique {
        for node in to.replicas(id) {
            wanted.entry(node.node_id.as_str()).or_insert_with(|| (node, Vec::new())).1.push(*id);
        }
    }
    let asks = wanted.into_values().map(|(node, ids)| async move {
        let mut c = ctx.nodes.chunk_store(node)?;
        let req = pb::HasChunksRequest { ids: ids.iter().map(|i| i.0.to_vec()).collect() };
        let reply = call(&node.node_id, secs, c.has_chunks(req)).await?;
        if reply.present.len() != ids.len() {
            return Err(HostError::Protocol(format!(
                "{}: {} answers to {} ids",
                node.node_id,
                reply.present.len(),
                ids.len()
            )));
        }
        let lacking: Vec<ChunkId> =
            ids.iter().zip(reply.present).filter(|(_, p)| !p).map(|(i, _)| *i).collect();
        Ok::<_, HostError>((node, lacking))
    });
    let mut missing: BTreeMap<ChunkId, Vec<ChunkNodeInfo>> = BTreeMap::new();
    for answer in join_all(asks).await {
        let (node, ids) = answer?;
        for id in ids {
            missing.entry(id).or_default().push(node.clone());
        }
    }
    Ok(missing)
}

/// Puts `data` under `id` on each of `nodes`; done when all hold it.
pub async fn put_on(
    ctx: &Ctx,
    nodes: &[ChunkNodeInfo],
    id: ChunkId,
    data: bytes::Bytes,
    secs: u64,
) -> Result<(), HostError> {
    let puts = nodes.iter().map(|node| {
        let data = data.clone();
        async move {
            let mut c = ctx.nodes.chunk_store(node)?;
            let req = pb::PutChunkRequest { id: id.0.to_vec(), data };
            call(&node.node_id, secs, c.put_chunk(req)).await.map(|_| ())
        }
    });
    join_all(puts).await.into_iter().collect()
}

/// The verified bytes of `id`, from its replicas first, then any node.
pub async fn get_chunk(ctx: &Ctx, region: &Region, id: ChunkId) -> Result<bytes::Bytes, EbsError> {
    let mut last: Option<HostError> = None;
    for node in region.search_order(&id) {
        let mut c = ctx.nodes.chunk_store(node)?;
        match call(&node.node_id, CALL_SECS, c.get_chunk(pb::GetChunkRequest { id: id.0.to_vec() }))
            .await
        {
            Ok(r) if ChunkId::of(&r.data) == id => return Ok(r.data),
            Ok(_) => {
                tracing::error!(chunk = %id, node = %node.node_id, "chunk node sent corrupt bytes")
            }
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
            Err(e) => {
                tracing::warn!(chunk = %id, error = %e, "chunk read failed; trying the next node");
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => EbsError::Internal(format!("no chunk node holds a valid copy of chunk {id}")),
    })
}

pub async fn load_root(ctx: &Ctx, region: &Region, id: ChunkId) -> Result<ManifestRoot, EbsError> {
    let bytes = get_chunk(ctx, region, id).await?;
    ManifestRoot::decode(&bytes).map_err(|e| EbsError::Internal(format!("manifest root {id}: {e}")))
}

pub async fn load_page(ctx: &Ctx, region: &Region, id: ChunkId) -> Result<ManifestPage, EbsError> {
    let bytes = get_chunk(ctx, region, id).await?;
    ManifestPage::decode(&bytes).map_err(|e| EbsError::Internal(format!("manifest page {id}: {e}")))
}
