//! One garbage collection pass, from fence to compaction.
//!
//! 1. **Release** the holds of restored volumes that are fully hydrated.
//! 2. **Fence.** Generation `g` = the group's generation + 1. Every chunk
//!    node records its touch sequence for `g` (the first call for a
//!    generation wins), and only then the group raises its generation to
//!    `g`: a holder made after that records `g` or later, so everything it
//!    touches is touched after `g`'s fence on every node that was told.
//! 3. **Read** the completed snapshots and the holds (after the fence), and
//!    the oldest generation a hold began in, `g_min` (at most `g`).
//! 4. **Mark** the completed snapshots' manifests and the holds' roots into
//!    a live filter, one partition of the id space at a time if the live
//!    ids would not fit the memory budget (`cairn_core::gc`).
//! 5. **Sweep** each node with the filter and `g_min`: it deletes chunks
//!    the filter lacks that were last touched before its fence for `g_min`
//!    (or an earlier fence it knows; it deletes nothing if it knows none).
//! 6. **Compact** each node's packs.
//!
//! Why this never deletes a chunk a pending or completed snapshot needs: a
//! completed snapshot's manifest was marked (it completed before step 3);
//! a pending one holds a generation `>= g_min`, so every chunk it wrote or
//! found present by `HasChunks` was touched after the node's fence for
//! `g_min` and is kept; the manifests it reuses without touching (its
//! parent's) are its hold's roots, marked. Nothing depends on clocks, and
//! no lock is taken: snapshots, writes and restores go on throughout.

use super::mark::{mark, Root, Sources};
use crate::ctx::Ctx;
use crate::gc_state::{NodeReport, PassReport};
use crate::nodes::{call, HostError};
use cairn_core::command::{Command, GcHolders, Query, QueryOutput};
use cairn_core::gc::Partition;
use cairn_core::records::{ChunkNodeInfo, Holder, NodeState, SnapshotState};
use cairn_core::OutpostId;
use cairn_proto::pb;
use futures::future::join_all;
use std::time::Instant;

/// Deadline of one sweep or compaction call: they walk a whole store.
const LONG_CALL_SECS: u64 = 600;
/// Deadline of the short calls (fence, stats).
const SHORT_CALL_SECS: u64 = 10;

/// Runs one pass. An error before the sweep deletes nothing.
pub async fn run_pass(ctx: &Ctx) -> Result<PassReport, String> {
    let started = Instant::now();
    let fleet = ctx.fleet().await.map_err(|e| e.to_string())?;
    // A removed node's disk is gone: it is neither fenced nor swept.
    let nodes: Vec<ChunkNodeInfo> =
        fleet.iter().filter(|e| e.state != NodeState::Removed).map(|e| e.info.clone()).collect();
    let mut report =
        PassReport { holds_released: release_hydrated(ctx).await, ..Default::default() };

    let before = holders(ctx).await?;
    let g = before.generation + 1;
    fence_nodes(ctx, &nodes, g).await;
    let fenced = ctx.meta.write(&Command::GcFence { generation: g }).await;
    fenced.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;

    let after = holders(ctx).await?;
    let (roots, completed, unheld) = roots(ctx, &after).await?;
    report.generation = g;
    // A pending snapshot without a hold (taken by a version before holds)
    // may rely on anything: then no node sweeps (generation 0 has no fence).
    report.oldest_generation = if unheld { 0 } else { after.oldest_generation().min(g) };
    report.holds = after.holds.len() as u64;
    report.snapshots = completed;

    let expected = stored_chunks(ctx, &nodes).await;
    let budget = ctx.config.gc_memory_bytes;
    let filter_budget = budget / 2;
    let max_walked = (budget / 2 / 64) as usize;
    let sources = Sources::new(&fleet, ctx.config.replication_factor);
    let partitions = Partition::plan(expected, filter_budget);
    report.partitions = partitions.len() as u32;
    report.nodes = nodes
        .iter()
        .map(|n| NodeReport { node_id: n.node_id.clone(), swept: true, ..Default::default() })
        .collect();
    // Each placement domain (the region, each Outpost) is marked and swept
    // on its own: a chunk id named only by another domain's snapshots is
    // not kept here (an Outpost copy does not keep the region's replicas of
    // its chunks, nor the reverse). Holds' roots are marked in every domain.
    let mut domains: Vec<Option<OutpostId>> = nodes.iter().map(|n| n.outpost.clone()).collect();
    domains.sort();
    domains.dedup();
    for p in partitions {
        for domain in &domains {
            let here: Vec<usize> =
                (0..nodes.len()).filter(|&i| &nodes[i].outpost == domain).collect();
            let mine: Vec<Root> =
                roots.iter().filter(|r| r.everywhere || &r.outpost == domain).cloned().collect();
            let marking = Instant::now();
            let (filter, stats) = mark(
                ctx,
                &sources,
                &mine,
                p,
                expected / u64::from(p.count),
                filter_budget,
                max_walked,
            )
            .await?;
            report.filter_bytes = report.filter_bytes.max(filter.size_bytes());
            report.mark.roots += stats.roots;
            report.mark.pages_read += stats.pages_read;
            report.mark.entries += stats.entries;
            let bytes = filter.encode();
            let sweeping = Instant::now();
            report.mark_ms += ms(sweeping - marking);
            let swept: Vec<ChunkNodeInfo> = here.iter().map(|&i| nodes[i].clone()).collect();
            let mut reports: Vec<NodeReport> =
                here.iter().map(|&i| report.nodes[i].clone()).collect();
            sweep_nodes(ctx, &swept, report.oldest_generation, &bytes, &mut reports).await;
            for (&i, r) in here.iter().zip(reports) {
                report.nodes[i] = r;
            }
            report.sweep_ms += ms(sweeping.elapsed());
        }
    }
    let compacting = Instant::now();
    compact_nodes(ctx, &nodes, &mut report.nodes).await;
    report.compact_ms = ms(compacting.elapsed());
    for n in &report.nodes {
        report.examined += n.examined;
        report.deleted += n.deleted;
        report.deleted_bytes += n.deleted_bytes;
        report.bytes_freed += n.bytes_freed;
    }
    report.duration_ms = ms(started.elapsed());
    tracing::info!(
        generation = g,
        oldest = report.oldest_generation,
        deleted = report.deleted,
        bytes_freed = report.bytes_freed,
        ms = report.duration_ms,
        "garbage collection pass done"
    );
    Ok(report)
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

pub(crate) async fn holders(ctx: &Ctx) -> Result<GcHolders, String> {
    match ctx.meta.read(&Query::GcHolders).await.map_err(|e| e.to_string())? {
        QueryOutput::GcHolders(h) => Ok(h),
        _ => Err("unexpected metadata answer to GcHolders".into()),
    }
}

/// The manifests to mark: every completed snapshot's, then the holds'
/// roots; how many completed snapshots there are; and whether a pending
/// snapshot has no hold.
pub(crate) async fn roots(
    ctx: &Ctx,
    holders: &GcHolders,
) -> Result<(Vec<Root>, u64, bool), String> {
    let snapshots = ctx.snapshots_at_once().await.map_err(|e| e.to_string())?;
    // An archived snapshot that is not restored lets go of its chunks: its
    // content is in the archive store (read after the snapshots, so a
    // restore that completed in between is seen and marked).
    let tierings = ctx.tierings().await.map_err(|e| e.to_string())?;
    let in_chunks =
        |s: &cairn_core::records::Snapshot| tierings.get(&s.id).is_none_or(|t| t.needs_chunks());
    let unheld = snapshots.iter().any(|s| {
        s.state == SnapshotState::Pending
            && !holders.holds.iter().any(|h| h.holder == Holder::Snapshot(s.id.clone()))
    });
    let mut out: Vec<Root> = snapshots
        .iter()
        .filter(|s| s.state == SnapshotState::Completed && in_chunks(s))
        .filter_map(|s| {
            let id = s.manifest_root?;
            Some(Root { id, outpost: s.outpost.clone(), why: s.id.to_string(), everywhere: false })
        })
        .collect();
    let completed = out.len() as u64;
    for h in &holders.holds {
        // A pending snapshot's parent shares its destination; a volume's
        // source is found wherever it is.
        let outpost = match &h.holder {
            Holder::Snapshot(s) => {
                snapshots.iter().find(|x| &x.id == s).and_then(|x| x.outpost.clone())
            }
            Holder::Volume(_) => None,
        };
        for id in &h.roots {
            out.push(Root {
                id: *id,
                outpost: outpost.clone(),
                why: h.holder.to_string(),
                everywhere: true,
            });
        }
    }
    Ok((out, completed, unheld))
}

/// Drops the holds of restored volumes whose host reports them hydrated.
async fn release_hydrated(ctx: &Ctx) -> u64 {
    let Ok(h) = holders(ctx).await else { return 0 };
    let mut released = 0;
    for hold in h.holds {
        let Holder::Volume(vid) = &hold.holder else { continue };
        let Ok(Some(volume)) = ctx.volume(vid).await else { continue };
        let Ok(Ok(host)) = ctx.node(&volume.host_node).await else { continue };
        let Ok(mut c) = ctx.nodes.volume_host(&host) else { continue };
        let req = pb::VolumeStatsRequest { volume_id: vid.to_string() };
        let Ok(s) = call(&host.node_id, SHORT_CALL_SECS, c.volume_stats(req)).await else {
            continue;
        };
        if s.exists && s.hydrated_blocks >= s.total_blocks {
            let cmd = Command::ReleaseHold { holder: hold.holder.clone() };
            if matches!(ctx.meta.write(&cmd).await, Ok(Ok(_))) {
                tracing::info!(volume = %vid, "volume hydrated: its source is no longer held");
                released += 1;
            }
        }
    }
    released
}

/// Tells every node generation `g`'s fence. A node that does not answer
/// keeps everything it holds until it learns a fence old enough.
async fn fence_nodes(ctx: &Ctx, nodes: &[ChunkNodeInfo], g: u64) {
    let calls = nodes.iter().map(|n| async move {
        let mut c = ctx.nodes.chunk_store(n)?;
        call(&n.node_id, SHORT_CALL_SECS, c.gc_fence(pb::GcFenceRequest { generation: g })).await
    });
    for (n, r) in nodes.iter().zip(join_all(calls).await) {
        if let Err(e) = r {
            tracing::warn!(node = %n.node_id, error = %e, "node missed a garbage collection fence");
        }
    }
}

/// Chunks stored over all nodes: an upper bound of the live ids.
async fn stored_chunks(ctx: &Ctx, nodes: &[ChunkNodeInfo]) -> u64 {
    let calls = nodes.iter().map(|n| async move {
        let mut c = ctx.nodes.chunk_store(n)?;
        call(&n.node_id, SHORT_CALL_SECS, c.stats(pb::ChunkStatsRequest {})).await
    });
    join_all(calls).await.into_iter().filter_map(Result::ok).map(|s| s.chunks).sum()
}

async fn sweep_nodes(
    ctx: &Ctx,
    nodes: &[ChunkNodeInfo],
    generation: u64,
    filter: &[u8],
    reports: &mut [NodeReport],
) {
    let calls = nodes.iter().map(|n| async move {
        let mut c = ctx.nodes.chunk_store(n)?;
        let req = pb::GcSweepRequest { generation, filter: filter.to_vec() };
        call(&n.node_id, LONG_CALL_SECS, c.gc_sweep(req)).await
    });
    for (r, answer) in reports.iter_mut().zip(join_all(calls).await) {
        match answer {
            Ok(s) => {
                r.swept &= s.swept;
                r.examined += s.examined;
                r.deleted += s.deleted;
                r.deleted_bytes += s.deleted_bytes;
            }
            Err(e) => failed(r, e),
        }
    }
}

async fn compact_nodes(ctx: &Ctx, nodes: &[ChunkNodeInfo], reports: &mut [NodeReport]) {
    let calls = nodes.iter().map(|n| async move {
        let mut c = ctx.nodes.chunk_store(n)?;
        call(&n.node_id, LONG_CALL_SECS, c.compact(pb::CompactRequest {})).await
    });
    for (r, answer) in reports.iter_mut().zip(join_all(calls).await) {
        match answer {
            Ok(c) => {
                r.packs_rewritten += c.packs_rewritten;
                r.packs_removed += c.packs_removed;
                r.bytes_freed += c.bytes_freed;
            }
            Err(e) => failed(r, e),
        }
    }
}

fn failed(r: &mut NodeReport, e: HostError) {
    tracing::warn!(node = %r.node_id, error = %e, "garbage collection call failed");
    r.swept = false;
    r.error = Some(e.to_string());
}
