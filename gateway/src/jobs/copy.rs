//! Snapshot copy jobs: leased, checkpointed, resumable.
//!
//! A pending snapshot has exactly one copy job record in the metadata group
//! (`cairn_core::records::CopyJob`), created in the same command as the
//! snapshot and leased to the gateway that took the CreateSnapshot call. The
//! lease, not this process, decides who runs the job:
//!
//! - The holder renews the lease every third of `job_lease_ms` while it
//!   freezes the volume and while the copy runs. If a renewal answers that
//!   another gateway holds the job, or if no renewal succeeded before the
//!   lease lapsed (metadata unreachable), the holder stops at once and
//!   touches nothing more: someone else may be running the job.
//! - Every gateway scans the jobs every `job_scan_ms` (its copy job runner,
//!   `jobs/runner.rs`) and acquires those whose lease lapsed (their gateway
//!   was killed or hangs), or that it holds itself without running them (a
//!   restart under a fixed `gateway_id`). Acquiring is a compare-and-set in
//!   the metadata group, so one wins. A lease has lapsed when the runner
//!   watched its expiry stay unchanged for a full lease on its own monotonic
//!   clock ([`JobOp::AcquireObserved`]); no gateway compares its clock with
//!   another's.
//! - Each acquisition by another gateway raises the job's epoch (its
//!   `acquisitions`), which every `Copy` call carries: the volume host runs
//!   one copy per snapshot at a time, stops the running one for a call of a
//!   newer or equal epoch and refuses an older one ("superseded"), which the
//!   old holder takes as having lost the job.
//! - Running a job means calling the volume host's `Copy` for the frozen
//!   image, with the parent's manifest root for an incremental copy. The
//!   host keeps its own durable copy state, so calling `Copy` again after a
//!   failure, from any gateway, resumes rather than restarts. The host's
//!   `checkpoint_block` and the progress are committed every
//!   [`super::attempt::PROGRESS_STEP`] percent, so DescribeSnapshots shows progress rising.
//! - A transient failure (host unreachable, restarting, silent for
//!   `copy_idle_secs`) is retried with backoff. The job records since when
//!   the host has been failing; once that exceeds `copy_host_timeout_secs`
//!   (counted across gateways, so a takeover does not restart the clock),
//!   the snapshot ends in `error` with the reason as its StateMessage.
//!   A permanent refusal (e.g. the host lost the frozen image) ends it at once.
//! - The holder ends the snapshot with a `Finish` step (completed with its
//!   manifest root, or error), which removes the job, then asks the host to
//!   release the frozen image.
//!
//! Lease times are wall-clock milliseconds of the proposing gateway; they
//! are only ever compared for equality, so clocks need not agree.

use super::attempt::{
    commit_checkpoint, pending_snapshot, record_host_up, should_commit, Attempt, AttemptError,
    CopyDone,
};
use super::host::{find_node, freeze, release};
use super::lease::{holding_lease, step, StepError, Stop};
use super::transfer::{self, Source};
use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use crate::retry::{backoff, write_retrying};
use crate::tasks::Claim;
use cairn_core::command::{Command, CommandOutput, CopyOutcome, JobOp};
use cairn_core::records::{
    ChunkNodeInfo, CopyJob, CopyJobKind, Holder, Snapshot, SnapshotState, Volume,
};
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, SnapshotId};
use cairn_proto::{pb, MetaClientError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Streaming;

/// The StateMessage of a snapshot whose CreateSnapshot call ended before the
/// volume was frozen; that call never succeeded (the chaos suite checks no
/// acknowledged snapshot says it).
pub const NEVER_FROZEN: &str = "The snapshot was never taken: the CreateSnapshot call that \
     created it failed before the volume host froze the volume";

/// Freezes the volume for a snapshot just created with its job leased to
/// this gateway (renewing the lease meanwhile), then starts the copy in the
/// background. Answers the snapshot as the caller should see it: `pending`,
/// or `error` with a StateMessage when the host could not freeze.
pub async fn freeze_and_copy(
    ctx: &Arc<Ctx>,
    volume: &Volume,
    snapshot: Snapshot,
    claim: Claim,
) -> Result<Snapshot, MetaClientError> {
    let id = snapshot.id.clone();
    let frozen = holding_lease(ctx, &id, freeze(ctx, volume, &id, snapshot.parent.as_ref())).await;
    match frozen {
        Ok(Ok(reply)) => {
            tracing::info!(
                snapshot = %id,
                parent = ?snapshot.parent,
                incremental = reply.incremental,
                blocks_to_read = reply.blocks_to_read,
                "volume frozen"
            );
            let snapshot = match size_gib_of(reply.volume_size_bytes) {
                Some(gib) if gib > snapshot.volume_size_gib => {
                    raise_size(ctx, snapshot, gib).await?
                }
                _ => snapshot,
            };
            spawn_copy(ctx, id, Some(claim), None);
            Ok(snapshot)
        }
        Ok(Err(e)) => {
            // The snapshot exists and says why it failed, as an asynchronous
            // EC2 failure would; the caller sees `error` with a StateMessage.
            tracing::warn!(snapshot = %id, error = %e, "freeze failed");
            let message = format!("The volume host could not freeze the volume: {e}");
            let op = JobOp::Finish { outcome: CopyOutcome::Failed { message } };
            let cmd = Command::CopyJob {
                id: id.clone(),
                owner: ctx.gateway_id().to_string(),
                now_ms: ctx.now_ms(),
                op,
            };
            match ctx.meta.write(&cmd).await? {
                Ok(CommandOutput::Snapshot(s)) => Ok(s),
                Ok(_) => Ok(snapshot),
                Err(e) => {
                    tracing::warn!(snapshot = %id, error = %e, "could not record the failed freeze");
                    Ok(snapshot)
                }
            }
        }
        Err(stop) => {
            // Whether the host froze is unknown, so the call must not succeed:
            // only an answered CreateSnapshot promises a point in time. The
            // job's next holder copies the freeze if it happened, or ends the
            // snapshot with NEVER_FROZEN.
            tracing::warn!(snapshot = %id, reason = ?stop, "lost the job while freezing");
            Err(MetaClientError::Unavailable(format!(
                "the snapshot job was lost while freezing the volume: {stop:?}"
            )))
        }
    }
}

/// Whole GiB of a frozen image's size (volumes are whole GiB); `None` for 0,
/// which a host that does not report its size answers.
fn size_gib_of(bytes: u64) -> Option<u64> {
    (bytes > 0).then(|| bytes.div_ceil(1 << 30))
}

/// The volume grew (ModifyVolume) between reading its record and freezing
/// it: the snapshot records the frozen image's size, so a restore of it is
/// as large as what it holds.
async fn raise_size(
    ctx: &Ctx,
    snapshot: Snapshot,
    size_gib: u64,
) -> Result<Snapshot, MetaClientError> {
    let cmd = Command::RaiseSnapshotVolumeSize { id: snapshot.id.clone(), size_gib };
    match write_retrying(ctx, &cmd).await? {
        Ok(CommandOutput::Snapshot(s)) => Ok(s),
        Ok(_) => Ok(snapshot),
        Err(e) => {
            tracing::warn!(snapshot = %snapshot.id, error = %e, "could not record the grown size");
            Ok(snapshot)
        }
    }
}

/// Runs the copy job of snapshot `id` in the background, if no job for it
/// runs here and this gateway can acquire its lease. `claim` is the local
/// slot when the caller holds it already; `seen_expiry_ms` is the other
/// holder's lease expiry the caller watched lapse ([`JobOp::AcquireObserved`]),
/// `None` when the job is this gateway's or nobody's.
pub fn spawn_copy(
    ctx: &Arc<Ctx>,
    id: SnapshotId,
    claim: Option<Claim>,
    seen_expiry_ms: Option<u64>,
) {
    let claim = match claim.or_else(|| ctx.jobs.claim(id.as_str())) {
        Some(c) => c,
        None => return,
    };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        run(&c, id, seen_expiry_ms).await;
    });
}

async fn run(ctx: &Ctx, id: SnapshotId, seen_expiry_ms: Option<u64>) {
    let lease_ms = ctx.config.job_lease_ms;
    let job = match step(ctx, &id, JobOp::AcquireObserved { lease_ms, seen_expiry_ms }).await {
        Ok(j) => j,
        Err(StepError::Lost(why)) => {
            tracing::debug!(snapshot = %id, why, "copy job not acquired");
            return;
        }
        Err(StepError::Unavailable(e)) => {
            tracing::warn!(snapshot = %id, error = %e, "copy job not acquired");
            return;
        }
    };
    tracing::info!(
        snapshot = %id,
        acquisitions = job.acquisitions,
        checkpoint_block = job.checkpoint_block,
        "copy job running"
    );
    let outcome = match holding_lease(ctx, &id, copy_until_done(ctx, &job)).await {
        Ok(Ok(done)) => CopyOutcome::Completed {
            manifest_root: done.manifest_root,
            full_size_bytes: done.full_size_bytes,
        },
        Ok(Err(Stop::Failed(message))) => CopyOutcome::Failed { message },
        Ok(Err(Stop::Lost(why))) | Err(Stop::Lost(why)) => {
            tracing::info!(snapshot = %id, why, "stopped: the copy job is not ours any more");
            release_if_deleted(ctx, &job).await;
            return;
        }
        Err(Stop::Failed(m)) => CopyOutcome::Failed { message: m },
    };
    let failed = matches!(outcome, CopyOutcome::Failed { .. });
    let cmd = Command::CopyJob {
        id: id.clone(),
        owner: ctx.gateway_id().to_string(),
        now_ms: ctx.now_ms(),
        op: JobOp::Finish { outcome },
    };
    match write_retrying(ctx, &cmd).await {
        Ok(Ok(CommandOutput::Snapshot(s))) if s.state == SnapshotState::Pending => {
            tracing::info!(snapshot = %id, "another gateway holds the job now; not finishing it");
            return;
        }
        Ok(Ok(CommandOutput::Snapshot(s))) => {
            let st = s.state_message.as_deref().unwrap_or("");
            if failed {
                tracing::warn!(snapshot = %id, state = s.state.as_str(), message = st, "snapshot failed");
            } else {
                tracing::info!(snapshot = %id, state = s.state.as_str(), "snapshot completed");
            }
        }
        Ok(Ok(other)) => {
            tracing::error!(snapshot = %id, answer = ?other, "unexpected answer to Finish");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(snapshot = %id, error = %e, "snapshot outcome refused");
            return;
        }
        // Still pending with its job: the lease lapses and a gateway resumes it.
        Err(e) => {
            tracing::error!(snapshot = %id, error = %e, "could not record the snapshot outcome");
            return;
        }
    }
    if job.kind == CopyJobKind::Snapshot {
        if let Err(e) = release(ctx, &job.volume_id, &id).await {
            tracing::warn!(snapshot = %id, error = %e, "could not release the frozen image");
        }
    }
}

/// After losing a job: if the snapshot was deleted, nobody else will drop
/// the host's frozen image, so this gateway does.
async fn release_if_deleted(ctx: &Ctx, job: &CopyJob) {
    if job.kind != CopyJobKind::Snapshot {
        return;
    }
    if let Ok(None) = ctx.snapshot(&job.snapshot_id).await {
        if let Err(e) = release(ctx, &job.volume_id, &job.snapshot_id).await {
            tracing::warn!(snapshot = %job.snapshot_id, error = %e, "could not release the frozen image");
        }
    }
}

/// Calls the host's `Copy` until it completes, retrying transient failures
/// until the host has been failing for `copy_host_timeout_secs`.
async fn copy_until_done(ctx: &Ctx, job: &CopyJob) -> Result<CopyDone, Stop> {
    let id = &job.snapshot_id;
    let timeout = Duration::from_secs(ctx.config.copy_host_timeout_secs);
    let mut a = Attempt {
        committed: 0,
        host_down: job.host_down_since_ms.is_some(),
        heard: false,
        first_checkpoint: None,
        resume_at: job.checkpoint_block,
    };
    // Since when this gateway has seen failures, for when the metadata group
    // cannot record it.
    let mut local_down_since: Option<Instant> = None;
    let mut n = 0u32;
    loop {
        n += 1;
        a.heard = false;
        a.first_checkpoint = None;
        let attempt = match &job.kind {
            CopyJobKind::Snapshot => copy_once(ctx, id, job.acquisitions, &mut a).await,
            CopyJobKind::Transfer { source, root, from } => {
                let from = Source { id: source, root: *root, outpost: from.as_ref() };
                transfer::once(ctx, id, from, &mut a).await
            }
        };
        let e = match attempt {
            Ok(done) => return Ok(done),
            Err(AttemptError::Stop(s)) => return Err(s),
            // A newer epoch called the host: another gateway holds the job.
            Err(AttemptError::Host(e)) if e.is_superseded() => {
                return Err(Stop::Lost(e.to_string()))
            }
            Err(AttemptError::Host(e)) if e.is_transient() => e,
            Err(AttemptError::Host(e)) => {
                return Err(Stop::Failed(format!("The snapshot copy failed: {e}")))
            }
        };
        if a.heard {
            // The copy moved forward: the failure clock starts again.
            local_down_since = None;
            n = 1;
        }
        let local = *local_down_since.get_or_insert_with(Instant::now);
        let down_for = match step(ctx, id, JobOp::HostDown { error: e.to_string() }).await {
            Ok(j) => {
                a.host_down = true;
                j.host_down_since_ms
                    .map(|since| Duration::from_millis(now_ms().saturating_sub(since)))
                    .unwrap_or_else(|| local.elapsed())
            }
            Err(StepError::Lost(why)) => return Err(Stop::Lost(why)),
            Err(StepError::Unavailable(_)) => local.elapsed(),
        };
        if down_for >= timeout {
            return Err(Stop::Failed(format!(
                "The snapshot copy made no progress for {}s (limit {}s): {e}",
                down_for.as_secs(),
                timeout.as_secs()
            )));
        }
        tracing::warn!(snapshot = %id, attempt = n, down_secs = down_for.as_secs(), error = %e, "copy interrupted, retrying");
        tokio::time::sleep(backoff(n).min(timeout.saturating_sub(down_for))).await;
    }
}

/// One run of the host's `Copy`: checks the snapshot is still pending,
/// builds the request, opens the progress stream and follows it.
async fn copy_once(
    ctx: &Ctx,
    id: &SnapshotId,
    epoch: u32,
    a: &mut Attempt,
) -> Result<CopyDone, AttemptError> {
    let snap = pending_snapshot(ctx, id).await?;
    a.committed = a.committed.max(snap.progress);
    let (host, req) = copy_request(ctx, &snap, epoch).await?;
    let mut c = ctx.nodes.volume_host(&host)?;
    let idle = ctx.config.copy_idle_secs;
    let stream = match call(&host.node_id, idle, c.copy(req)).await {
        // The host does not hold the volume any more: the frozen image went
        // with its disk. Not "never frozen": the call may have been answered.
        Err(e) if e.is_volume_gone() => {
            return Err(AttemptError::Stop(Stop::Failed(format!(
                "The volume host {} no longer holds volume {} (its disk was lost or \
                 replaced), so the frozen image cannot be copied ({e})",
                host.node_id, snap.volume_id
            ))))
        }
        // The host never froze the volume for this snapshot (freezes are
        // durable and released only after Finish): the gateway that took the
        // CreateSnapshot call stopped between recording the snapshot and
        // freezing, so the call was never answered and there is no point in
        // time to copy. Freezing now would capture later writes.
        Err(e) if e.code() == Some(tonic::Code::NotFound) => {
            return Err(AttemptError::Stop(Stop::Failed(format!("{NEVER_FROZEN} ({e})"))))
        }
        other => other?,
    };
    follow_progress(ctx, id, &host.node_id, stream, a).await
}

/// The volume's host and the `Copy` request for it: the destination's
/// nodes as targets, the parent for an incremental copy, and the job's
/// epoch (its `acquisitions`) as the host's fence.
async fn copy_request(
    ctx: &Ctx,
    snap: &Snapshot,
    epoch: u32,
) -> Result<(ChunkNodeInfo, pb::CopyRequest), AttemptError> {
    let Some(volume) = ctx.volume(&snap.volume_id).await? else {
        return Err(AttemptError::Stop(Stop::Failed(format!(
            "The volume {} no longer exists.",
            snap.volume_id
        ))));
    };
    let fleet = ctx.fleet().await?;
    let nodes: Vec<ChunkNodeInfo> = fleet.iter().map(|e| e.info.clone()).collect();
    let host = find_node(&nodes, &volume.host_node)?;
    // Placement picks only nodes that are up, read again on every attempt:
    // a retry after a target went down, was drained or removed re-places
    // the chunks still to store on the nodes left.
    let up: Vec<ChunkNodeInfo> =
        fleet.into_iter().filter(|e| e.state.takes_data()).map(|e| e.info).collect();
    let targets: Vec<pb::StoreNode> =
        destination_nodes(&up, snap.outpost.as_ref()).iter().map(Into::into).collect();
    if targets.is_empty() {
        return Err(HostError::Interrupted(match &snap.outpost {
            Some(op) => format!("no chunk node of Outpost {op} is up"),
            None => "no regional chunk node is up".to_string(),
        })
        .into());
    }
    let (parent_manifest_root, parent_snapshot_id) = parent_of(ctx, snap).await?;
    let req = pb::CopyRequest {
        volume_id: snap.volume_id.to_string(),
        snapshot_id: snap.id.to_string(),
        targets,
        replication_factor: ctx.config.replication_factor,
        parent_manifest_root,
        parent_snapshot_id,
        epoch: u64::from(epoch),
    };
    Ok((host, req))
}

/// The parent's manifest root and id for an incremental copy; empty (a full
/// copy) when the snapshot has none. A parent deleted since the snapshot
/// began is still named by the snapshot's hold, which keeps its manifest.
async fn parent_of(ctx: &Ctx, snap: &Snapshot) -> Result<(Vec<u8>, String), MetaClientError> {
    let Some(pid) = &snap.parent else { return Ok((Vec::new(), String::new())) };
    if let Some(p) = ctx.snapshot(pid).await? {
        if let (SnapshotState::Completed, Some(root)) = (p.state, p.manifest_root) {
            return Ok((root.0.to_vec(), pid.to_string()));
        }
    }
    match ctx.hold(&Holder::Snapshot(snap.id.clone())).await?.and_then(|h| h.roots.first().copied())
    {
        Some(root) => Ok((root.0.to_vec(), pid.to_string())),
        None => {
            tracing::info!(snapshot = %snap.id, parent = %pid, "parent gone: full copy");
            Ok((Vec::new(), String::new()))
        }
    }
}

/// Follows the host's progress stream until the copy is done, recording
/// that the host answers again and committing checkpoints on the way. A
/// stream silent for `copy_idle_secs` is a host failure.
async fn follow_progress(
    ctx: &Ctx,
    id: &SnapshotId,
    node: &str,
    mut stream: Streaming<pb::CopyProgress>,
    a: &mut Attempt,
) -> Result<CopyDone, AttemptError> {
    let idle = ctx.config.copy_idle_secs;
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(idle), stream.message()).await {
            Err(_) => return Err(HostError::Timeout { node: node.to_string(), secs: idle }.into()),
            Ok(Err(status)) => return Err(HostError::rpc(node, status).into()),
            Ok(Ok(None)) => {
                return Err(HostError::Interrupted(format!(
                    "{node}: copy stream ended before the copy was done"
                ))
                .into())
            }
            Ok(Ok(Some(m))) => m,
        };
        ctx.live.report(id, &msg);
        let first = *a.first_checkpoint.get_or_insert(msg.checkpoint_block);
        if !a.heard && (msg.done || msg.checkpoint_block > first) {
            a.heard = true;
            if a.host_down {
                record_host_up(ctx, id, a).await?;
            }
        }
        if msg.done {
            let manifest_root = ChunkId::from_slice(&msg.manifest_root).ok_or_else(|| {
                HostError::Protocol(format!(
                    "{node}: copy finished with a {}-byte manifest root",
                    msg.manifest_root.len()
                ))
            })?;
            // Distinct new data chunks (each one block), not replica puts.
            let new_chunks = msg.new_data_bytes / cairn_core::BLOCK_SIZE as u64;
            ctx.metrics.copy_done(msg.blocks_read, new_chunks);
            return Ok(CopyDone { manifest_root, full_size_bytes: msg.full_size_bytes });
        }
        if should_commit(a.committed, msg.percent) {
            commit_checkpoint(ctx, id, &msg, a).await?;
        }
    }
}
