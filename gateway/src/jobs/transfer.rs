//! CopySnapshot between placement domains (the region and an Outpost, or
//! two Outposts): one attempt of a transfer job.
//!
//! Chunk ids and manifests are content-addressed, so the copy's manifest is
//! its source's, byte for byte: a transfer only makes the destination's
//! nodes hold every object the source's manifest names (each data chunk,
//! each page, the root) at RF under the destination's placement. It walks
//! the manifest in order, asks each destination replica which of a batch
//! it lacks (`HasChunks`, which also stamps what it holds for GC's fence),
//! reads only those from the source's nodes (verified against their ids)
//! and puts them where they are missing. An unchanged chunk is never sent
//! twice, so a copy after a small change sends only that change, and a
//! second copy of the same snapshot sends nothing but answers.
//!
//! The job runs under the same lease as a CreateSnapshot copy (`copy.rs`
//! drives the attempts, retries and the failure clock). Its checkpoint is
//! the number of manifest entries the destination holds, committed with
//! the progress, so a gateway that takes the job over resumes there. The
//! source stays readable for the whole copy: the copy's hold names its
//! root, so deleting the source frees nothing until the copy has ended.
//!
//! A source (or destination) whose nodes cannot be reached is a transient
//! failure: the job retries until it has been failing for
//! `copy_host_timeout_secs`, then the copy ends in `error` saying which
//! side could not be reached.
//!
//! The bytes pass through this gateway (source node, gateway, destination
//! nodes). A pull by a destination node would save that hop; the gateway
//! was chosen because it already holds the lease and the placement of both
//! sides.

use super::attempt::{commit_checkpoint, pending_snapshot, record_host_up};
use super::attempt::{should_commit, Attempt, AttemptError, CopyDone};
use crate::ctx::Ctx;
use crate::ebs::chunks::{lacking, put_on, Region};
use crate::nodes::{call, HostError};
use cairn_core::manifest::{ManifestPage, ManifestRoot};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::{ChunkId, OutpostId, SnapshotId, BLOCK_SIZE};
use cairn_proto::pb;
use futures::stream::{self, StreamExt, TryStreamExt};

/// Manifest entries checked and sent per batch (and per progress report).
const BATCH: usize = 256;
/// Chunks read from the source and put at the destination at once.
const IN_FLIGHT: usize = 16;

/// What a transfer copies: the source snapshot, its manifest root, and the
/// Outpost whose nodes store it (`None`: the region's).
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) id: &'a SnapshotId,
    pub(super) root: ChunkId,
    pub(super) outpost: Option<&'a OutpostId>,
}

/// A placement domain, as a message names it.
fn domain(outpost: Option<&OutpostId>) -> String {
    match outpost {
        Some(op) => format!("Outpost {op}"),
        None => "region".to_string(),
    }
}

/// The two sides of one attempt, and what it has sent so far.
struct Sides {
    from: Region,
    from_name: String,
    to: Region,
    to_name: String,
    /// Distinct objects no destination replica held, and their bytes.
    new_objects: u64,
    new_bytes: u64,
    /// `PutChunk` calls made (one per replica that lacked an object).
    puts: u64,
}

/// One attempt of transfer job `id`: resumes after `a.resume_at` manifest
/// entries and completes the copy on the source's root.
pub(super) async fn once(
    ctx: &Ctx,
    id: &SnapshotId,
    source: Source<'_>,
    a: &mut Attempt,
) -> Result<CopyDone, AttemptError> {
    let snap = pending_snapshot(ctx, id).await?;
    a.committed = a.committed.max(snap.progress);
    let fleet = ctx.fleet().await?;
    let rf = ctx.config.replication_factor.max(1) as usize;
    let mut s = Sides {
        from: Region::of(&fleet, source.outpost, rf),
        from_name: domain(source.outpost),
        to: Region::of(&fleet, snap.outpost.as_ref(), rf),
        to_name: domain(snap.outpost.as_ref()),
        new_objects: 0,
        new_bytes: 0,
        puts: 0,
    };
    if s.to.nodes.is_empty() {
        return Err(HostError::Interrupted(format!(
            "the destination ({}) has no chunk node up",
            s.to_name
        ))
        .into());
    }
    if s.from.nodes.is_empty() && s.from.also_read.is_empty() {
        return Err(HostError::Interrupted(format!(
            "the source snapshot {} cannot be read: its {} has no chunk node up",
            source.id, s.from_name
        ))
        .into());
    }
    let root = ManifestRoot::decode(&s.read(ctx, source.root).await?)
        .map_err(|e| HostError::Protocol(format!("the manifest root of {}: {e}", source.id)))?;
    let total = root.data_blocks.unwrap_or(0);
    let mut done = 0u64;
    for (_, page_id) in &root.pages {
        let page = ManifestPage::decode(&s.read(ctx, *page_id).await?)
            .map_err(|e| HostError::Protocol(format!("manifest page {page_id}: {e}")))?;
        let entries = page.entries.len() as u64;
        if done + entries <= a.resume_at {
            done += entries;
            continue;
        }
        s.ensure(ctx, &[*page_id]).await?;
        let skip = a.resume_at.saturating_sub(done) as usize;
        done += skip as u64;
        for batch in page.entries[skip..].chunks(BATCH) {
            let ids: Vec<ChunkId> = batch.iter().map(|(_, c)| *c).collect();
            s.ensure(ctx, &ids).await?;
            done += batch.len() as u64;
            a.resume_at = done;
            progressed(ctx, id, a, &s, done, total).await?;
        }
    }
    s.ensure(ctx, &[source.root]).await?;
    tracing::info!(
        snapshot = %id, source = %source.id, from = s.from_name, to = s.to_name,
        new_objects = s.new_objects, new_bytes = s.new_bytes, "snapshot transferred"
    );
    let last = report(&s, done, 100, true);
    ctx.live.report(id, &last);
    ctx.metrics.copy_done(done, s.new_objects);
    Ok(CopyDone { manifest_root: source.root, full_size_bytes: done * BLOCK_SIZE as u64 })
}

/// The progress message after `done` manifest entries.
fn report(s: &Sides, done: u64, percent: u32, fin: bool) -> pb::CopyProgress {
    pb::CopyProgress {
        percent,
        done: fin,
        manifest_root: Vec::new(),
        full_size_bytes: 0,
        blocks_read: done,
        chunks_sent: s.puts,
        checkpoint_block: done,
        new_data_bytes: s.new_bytes,
    }
}

/// Tells the live view, the job (every few points) and the failure clock
/// that the copy moved forward.
async fn progressed(
    ctx: &Ctx,
    id: &SnapshotId,
    a: &mut Attempt,
    s: &Sides,
    done: u64,
    total: u64,
) -> Result<(), AttemptError> {
    let percent = (done * 100).checked_div(total).unwrap_or(0).min(99) as u32;
    let msg = report(s, done, percent, false);
    ctx.live.report(id, &msg);
    if !a.heard {
        a.heard = true;
        if a.host_down {
            record_host_up(ctx, id, a).await?;
        }
    }
    if should_commit(a.committed, percent) {
        commit_checkpoint(ctx, id, &msg, a).await?;
    }
    Ok(())
}

impl Sides {
    /// The verified bytes of `id` from the source's nodes, its replicas
    /// first. Any failure is transient: the source may come back.
    async fn read(&self, ctx: &Ctx, id: ChunkId) -> Result<Vec<u8>, HostError> {
        let mut last = String::from("no node holds it");
        for node in self.from.search_order(&id) {
            let req = pb::GetChunkRequest { id: id.0.to_vec() };
            let got = match ctx.nodes.chunk_store(node) {
                Ok(mut c) => call(&node.node_id, ctx.config.copy_idle_secs, c.get_chunk(req)).await,
                Err(e) => Err(e),
            };
            match got {
                Ok(r) if ChunkId::of(&r.data) == id => return Ok(r.data.into()),
                Ok(_) => last = format!("{} sent corrupt bytes", node.node_id),
                Err(e) => last = e.to_string(),
            }
        }
        Err(HostError::Interrupted(format!(
            "the source ({}) could not supply object {id}: {last}",
            self.from_name
        )))
    }

    /// Makes every destination replica of each of `ids` hold it: asks each
    /// which it lacks, then reads those once from the source and puts them.
    async fn ensure(&mut self, ctx: &Ctx, ids: &[ChunkId]) -> Result<(), HostError> {
        let secs = ctx.config.copy_idle_secs;
        let missing =
            lacking(ctx, &self.to, ids, secs).await.map_err(|e| self.at_destination(e))?;
        let this = &*self;
        let sends = missing.into_iter().map(|(id, nodes)| this.send(ctx, id, nodes));
        let sent: Vec<(u64, u64)> =
            stream::iter(sends).buffer_unordered(IN_FLIGHT).try_collect().await?;
        for (bytes, puts) in sent {
            self.new_objects += 1;
            self.new_bytes += bytes;
            self.puts += puts;
        }
        Ok(())
    }

    /// Reads `id` from the source and puts it on `nodes`: its bytes and puts.
    async fn send(
        &self,
        ctx: &Ctx,
        id: ChunkId,
        nodes: Vec<ChunkNodeInfo>,
    ) -> Result<(u64, u64), HostError> {
        let data = bytes::Bytes::from(self.read(ctx, id).await?);
        let len = data.len() as u64;
        put_on(ctx, &nodes, id, data, ctx.config.copy_idle_secs)
            .await
            .map_err(|e| self.at_destination(e))?;
        Ok((len, nodes.len() as u64))
    }

    /// A destination node's failure, saying which side it is.
    fn at_destination(&self, e: HostError) -> HostError {
        if e.is_transient() {
            HostError::Interrupted(format!("the destination ({}) failed: {e}", self.to_name))
        } else {
            e
        }
    }
}
