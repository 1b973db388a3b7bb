//! One re-replication pass: every live manifest walked, every chunk it
//! names checked against the replicas placement picks now, and each missing
//! replica copied from a verified copy elsewhere.
//!
//! Live manifests are those garbage collection marks for snapshots: every
//! completed snapshot's, and the parents pending incrementals hold (their
//! destination is the child's). Ids are checked per destination (the
//! region, each Outpost) among its nodes that are up, in batches: one
//! `HasChunks` per node and batch ([`super::missing`]). A missing replica is
//! read from any node of the destination that serves reads (up, then
//! draining), verified by its hash, and put on the node that lacks it; a
//! chunk never leaves its destination, so an Outpost's chunks stay there.
//!
//! A manifest that cannot be read, a node that does not answer, a chunk no
//! node has a valid copy of: each is counted in the backlog and the pass
//! goes on; nothing is deleted here (garbage collection collects the copies
//! placement no longer wants, on nodes that are up or draining).

use super::missing::{asks, missing};
use crate::ctx::Ctx;
use crate::ebs::chunks::{get_chunk, Region};
use crate::gc::mark::{Root, Sources};
use crate::gc::pass::holders;
use crate::nodes::call;
use crate::repair_state::RepairReport;
use cairn_core::placement::Candidate;
use cairn_core::records::{CopyJobKind, Holder, SnapshotState};
use cairn_core::{ChunkId, OutpostId};
use cairn_proto::pb;
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Ids checked per destination and batch.
const BATCH: usize = 1024;
/// Missing chunks copied at once.
const COPIES_AT_ONCE: usize = 8;
/// Deadline of one `HasChunks`, `GetChunk` or `PutChunk`.
const CALL_SECS: u64 = 30;

/// Runs one pass over every live manifest.
pub async fn run_pass(ctx: &Ctx) -> Result<RepairReport, String> {
    let started = Instant::now();
    let fleet = ctx.fleet().await.map_err(|e| e.to_string())?;
    let roots = live_roots(ctx).await?;
    let mut pass = Pass {
        ctx,
        sources: Sources::new(&fleet, ctx.config.replication_factor),
        rf: ctx.config.replication_factor.max(1) as usize,
        report: RepairReport::default(),
        pending: BTreeMap::new(),
        walked: HashSet::new(),
        max_walked: (ctx.config.gc_memory_bytes / 2 / 64) as usize,
    };
    for r in &roots {
        pass.walk(r).await;
    }
    let dests: Vec<Option<OutpostId>> = pass.pending.keys().cloned().collect();
    for d in dests {
        pass.flush(d).await;
    }
    let mut report = pass.report;
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        roots = report.roots,
        checked = report.checked,
        missing = report.missing,
        copied = report.copied,
        backlog = report.backlog,
        ms = report.duration_ms,
        "re-replication pass done"
    );
    Ok(report)
}

/// The manifests to keep at RF: completed snapshots' and the parents
/// pending snapshots hold.
async fn live_roots(ctx: &Ctx) -> Result<Vec<Root>, String> {
    let snapshots = ctx.snapshots_at_once().await.map_err(|e| e.to_string())?;
    let h = holders(ctx).await?;
    let jobs = ctx.copy_jobs().await.map_err(|e| e.to_string())?;
    let mut out: Vec<Root> = snapshots
        .iter()
        .filter(|s| s.state == SnapshotState::Completed)
        .filter_map(|s| {
            Some(Root {
                id: s.manifest_root?,
                outpost: s.outpost.clone(),
                why: s.id.to_string(),
                everywhere: false,
            })
        })
        .collect();
    for hold in &h.holds {
        // A hydrating volume's source is a completed snapshot (walked
        // above) or a deleted one, which only its restore still reads.
        let Holder::Snapshot(sid) = &hold.holder else { continue };
        // A transfer's hold names its source, stored in the source's domain.
        let outpost = match jobs.iter().find(|j| &j.snapshot_id == sid).map(|j| &j.kind) {
            Some(CopyJobKind::Transfer { from, .. }) => from.clone(),
            _ => snapshots.iter().find(|s| &s.id == sid).and_then(|s| s.outpost.clone()),
        };
        for id in &hold.roots {
            out.push(Root {
                id: *id,
                outpost: outpost.clone(),
                why: sid.to_string(),
                everywhere: false,
            });
        }
    }
    Ok(out)
}

struct Pass<'a> {
    ctx: &'a Ctx,
    sources: Sources,
    rf: usize,
    report: RepairReport,
    /// Ids waiting to be checked, per destination.
    pending: BTreeMap<Option<OutpostId>, Vec<ChunkId>>,
    /// Pages walked already (bounded; a page past the bound is walked again).
    walked: HashSet<ChunkId>,
    max_walked: usize,
}

impl Pass<'_> {
    /// Queues the root, its pages and their chunks for checking.
    async fn walk(&mut self, r: &Root) {
        let root = match self.sources.root(self.ctx, r).await {
            Ok(root) => root,
            Err(e) => return self.unreadable(format!("manifest of {}: {e}", r.why)),
        };
        self.report.roots += 1;
        self.add(&r.outpost, r.id).await;
        for (_, page_id) in &root.pages {
            self.add(&r.outpost, *page_id).await;
            if self.walked.contains(page_id) {
                continue;
            }
            let page = match self.sources.page(self.ctx, *page_id, r.outpost.as_ref()).await {
                Ok(p) => p,
                Err(e) => {
                    self.unreadable(format!("manifest page {page_id} of {}: {e}", r.why));
                    continue;
                }
            };
            for (_, chunk) in &page.entries {
                self.add(&r.outpost, *chunk).await;
            }
            if self.walked.len() < self.max_walked {
                self.walked.insert(*page_id);
            }
        }
    }

    fn unreadable(&mut self, why: String) {
        tracing::warn!(error = %why, "re-replication cannot read a manifest");
        self.report.backlog += 1;
        self.report.unreadable.push(why);
    }

    async fn add(&mut self, dest: &Option<OutpostId>, id: ChunkId) {
        let batch = self.pending.entry(dest.clone()).or_default();
        batch.push(id);
        if batch.len() >= BATCH {
            self.flush(dest.clone()).await;
        }
    }

    /// Checks the destination's queued ids and copies the missing replicas.
    async fn flush(&mut self, dest: Option<OutpostId>) {
        let ids = self.pending.remove(&dest).unwrap_or_default();
        self.report.checked += ids.len() as u64;
        let Some(region) = self.sources.region(dest.as_ref()).filter(|r| !r.nodes.is_empty())
        else {
            // No node of the destination is up: nothing can be placed.
            self.report.backlog += (ids.len() * self.rf) as u64;
            return;
        };
        let cands: Vec<Candidate> = region
            .nodes
            .iter()
            .map(|n| Candidate { node_id: n.node_id.clone(), az: n.az.clone() })
            .collect();
        let asked = asks(&ids, &cands, self.rf);
        let answers = has_chunks(self.ctx, region, &asked).await;
        let m = missing(&asked, &answers);
        for (node, n) in m.unknown {
            add_backlog(&mut self.report, &region.nodes[node].node_id, n);
        }
        self.report.missing += m.copy.len() as u64;
        for (_, node) in &m.copy {
            *self.report.missing_by_node.entry(region.nodes[*node].node_id.clone()).or_default() +=
                1;
        }
        let mut by_chunk: BTreeMap<ChunkId, Vec<usize>> = BTreeMap::new();
        for (id, node) in m.copy {
            by_chunk.entry(id).or_default().push(node);
        }
        let ctx = self.ctx;
        let results: Vec<Vec<(usize, bool)>> = stream::iter(by_chunk)
            .map(|(id, targets)| copy_chunk(ctx, region, id, targets))
            .buffer_unordered(COPIES_AT_ONCE)
            .collect()
            .await;
        for (node, ok) in results.into_iter().flatten() {
            if ok {
                self.report.copied += 1;
            } else {
                add_backlog(&mut self.report, &region.nodes[node].node_id, 1);
            }
        }
    }
}

fn add_backlog(report: &mut RepairReport, node: &str, n: u64) {
    report.backlog += n;
    *report.backlog_by_node.entry(node.to_string()).or_default() += n;
}

/// Each asked node's answer to `HasChunks` for its ids (`None`: no answer).
async fn has_chunks(
    ctx: &Ctx,
    region: &Region,
    asked: &BTreeMap<usize, Vec<ChunkId>>,
) -> BTreeMap<usize, Option<Vec<bool>>> {
    let calls = asked.iter().map(|(i, ids)| async move {
        let node = &region.nodes[*i];
        let req = pb::HasChunksRequest { ids: ids.iter().map(|id| id.0.to_vec()).collect() };
        let answer = match ctx.nodes.chunk_store(node) {
            Ok(mut c) => call(&node.node_id, CALL_SECS, c.has_chunks(req)).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => (*i, Some(r.present)),
            Err(e) => {
                tracing::warn!(node = %node.node_id, error = %e, "HasChunks failed");
                (*i, None)
            }
        }
    });
    join_all(calls).await.into_iter().collect()
}

/// Reads `id` from a verified copy and puts it on each target; whether
/// each target holds it now.
async fn copy_chunk(
    ctx: &Ctx,
    region: &Region,
    id: ChunkId,
    targets: Vec<usize>,
) -> Vec<(usize, bool)> {
    let data = match get_chunk(ctx, region, id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(chunk = %id, error = %e, "no verified copy to re-replicate from");
            return targets.into_iter().map(|t| (t, false)).collect();
        }
    };
    let puts = targets.into_iter().map(|t| {
        let data = data.clone();
        async move {
            let node = &region.nodes[t];
            let req = pb::PutChunkRequest { id: id.0.to_vec(), data };
            let put = match ctx.nodes.chunk_store(node) {
                Ok(mut c) => call(&node.node_id, CALL_SECS, c.put_chunk(req)).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = &put {
                tracing::warn!(chunk = %id, node = %node.node_id, error = %e, "re-replication put failed");
            }
            (t, put.is_ok())
        }
    });
    join_all(puts).await
}
