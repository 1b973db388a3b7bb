//! Job orchestration: snapshot copies and volume restores. The gateway never
//! carries bytes; it tells volume hosts what to do, follows their progress and
//! commits each step to the metadata group.
//!
//! Lifecycle of a snapshot: the request writes it `pending` and freezes the
//! volume ([`freeze`]) before answering; a background job ([`spawn_copy`])
//! runs the host's `Copy` into the destination's chunk nodes, commits
//! progress every 5 points, then `CompleteSnapshot` and `Release`. Transient
//! failures (node down, timeouts, no leader) are retried with backoff a few
//! times; after that, or on a permanent refusal, the snapshot ends in `error`
//! with the reason, so none stays `pending` forever while this gateway runs.
//!
//! On start, [`spawn_resume`] picks up what a previous gateway left: every
//! `pending` snapshot (Copy again; Freeze is not redone, so a host that lost
//! its frozen image refuses with FailedPrecondition and the snapshot ends in
//! `error`), every `creating` volume (the host's CreateVolume is idempotent)
//! and every `deleting` volume.
//!
//! Not done yet: leases. Two gateways started at once both resume the same
//! jobs; the host's Copy and the metadata commands are idempotent, so the
//! outcome is the same, only the work is doubled.

use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use cairn_core::command::{Command, CommandOutput, CommandResult, MetaError};
use cairn_core::records::{ChunkNodeInfo, Snapshot, SnapshotState, Volume, VolumeState};
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, SnapshotId};
use cairn_proto::pb;
use cairn_proto::MetaClientError;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// Attempts of a copy before the snapshot ends in `error`.
const COPY_ATTEMPTS: u32 = 5;
/// Attempts of a restore's host CreateVolume before the volume ends in `error`.
const RESTORE_ATTEMPTS: u32 = 5;
/// A copy stream silent for this long is treated as a dead host.
const COPY_IDLE: Duration = Duration::from_secs(120);
/// Progress is committed when it rose by at least this many points.
pub const PROGRESS_STEP: u8 = 5;

/// The background jobs of one gateway, stopped together at shutdown.
#[derive(Default)]
pub struct Jobs {
    tasks: Mutex<JoinSet<()>>,
    /// Resources with a job running here, so one resource never has two.
    running: Arc<Mutex<HashSet<String>>>,
}

/// Holds a resource's job slot; frees it when dropped.
pub struct Claim {
    key: String,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Jobs {
    /// Claims `key` for one job, unless a job for it already runs.
    pub fn claim(&self, key: &str) -> Option<Claim> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(key.to_string())
            .then(|| Claim { key: key.to_string(), running: self.running.clone() })
    }

    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished jobs so the set does not grow with history.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Stops every job. Jobs are resumable: what they had not committed is
    /// redone by the next gateway start.
    pub async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// True when a copy at `percent` should commit progress, `committed` being
/// the last committed value. 100% is never committed as progress: only
/// completion makes a snapshot 100%.
pub fn should_commit(committed: u8, percent: u32) -> bool {
    percent < 100 && percent >= u32::from(committed) + u32::from(PROGRESS_STEP)
}

/// Backoff before attempt `n + 1` (n from 1): 200 ms doubling, at most 5 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}

/// Runs `f` up to `attempts` times while it fails transiently.
async fn retry<T, Fut>(
    what: &str,
    attempts: u32,
    mut f: impl FnMut() -> Fut,
) -> Result<T, HostError>
where
    Fut: Future<Output = Result<T, HostError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && n < attempts => {
                tracing::warn!(what, attempt = n, error = %e, "transient failure, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A metadata write, retried while the group is unavailable.
async fn write_retrying(ctx: &Ctx, cmd: &Command) -> Result<CommandResult, MetaClientError> {
    let mut n = 0;
    loop {
        n += 1;
        match ctx.meta.write(cmd).await {
            Err(MetaClientError::Unavailable(e)) if n < 5 => {
                tracing::warn!(error = %e, "metadata unavailable, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            other => return other,
        }
    }
}

fn find_node(nodes: &[ChunkNodeInfo], id: &str) -> Result<ChunkNodeInfo, HostError> {
    nodes
        .iter()
        .find(|n| n.node_id == id)
        .cloned()
        .ok_or_else(|| HostError::UnknownNode(id.to_string()))
}

/// Freezes `volume` for snapshot `snapshot`: from the host's answer on, the
/// frozen image holds every write acknowledged before.
pub async fn freeze(ctx: &Ctx, volume: &Volume, snapshot: &SnapshotId) -> Result<(), HostError> {
    retry("freeze", 3, move || async move {
        let host = find_node(&ctx.node_list().await?, &volume.host_node)?;
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::FreezeRequest {
            volume_id: volume.id.to_string(),
            snapshot_id: snapshot.to_string(),
            ..Default::default()
        };
        call(&host.node_id, 10, c.freeze(req)).await.map(|_| ())
    })
    .await
}

/// Creates the volume on its host: empty, or restoring from its snapshot's
/// manifest, whose chunks the host finds on the snapshot destination's nodes.
pub async fn create_on_host(ctx: &Ctx, volume: &Volume, attempts: u32) -> Result<(), HostError> {
    retry("create volume", attempts, move || async move {
        let nodes = ctx.node_list().await?;
        let host = find_node(&nodes, &volume.host_node)?;
        let (manifest_root, sources) = match &volume.snapshot_id {
            None => (Vec::new(), Vec::new()),
            Some(sid) => {
                let snap = ctx.snapshot(sid).await?.ok_or_else(|| {
                    HostError::Protocol(format!("snapshot {sid} no longer exists"))
                })?;
                let root = snap.manifest_root.ok_or_else(|| {
                    HostError::Protocol(format!("snapshot {sid} has no manifest (not completed)"))
                })?;
                let sources: Vec<pb::StoreNode> = destination_nodes(&nodes, snap.outpost.as_ref())
                    .iter()
                    .map(Into::into)
                    .collect();
                (root.0.to_vec(), sources)
            }
        };
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::CreateVolumeRequest {
            volume_id: volume.id.to_string(),
            size_bytes: volume.size_bytes(),
            manifest_root,
            sources,
            replication_factor: ctx.config.replication_factor,
        };
        call(&host.node_id, 60, c.create_volume(req)).await.map(|_| ())
    })
    .await
}

/// Drops the volume's bytes on its host. Already gone counts as done.
pub async fn delete_on_host(ctx: &Ctx, volume: &Volume) -> Result<(), HostError> {
    retry("delete volume", 3, move || async move {
        let host = match find_node(&ctx.node_list().await?, &volume.host_node) {
            Ok(h) => h,
            Err(e) => {
                // Nodes never leave the registry, so the host never held it.
                tracing::warn!(volume = %volume.id, error = %e, "volume host unknown; nothing to delete");
                return Ok(());
            }
        };
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::DeleteVolumeRequest { volume_id: volume.id.to_string() };
        match call(&host.node_id, 30, c.delete_volume(req)).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await
}

/// Starts the background copy of a pending snapshot.
pub fn spawn_copy(ctx: &Arc<Ctx>, snapshot: Snapshot) {
    let Some(claim) = ctx.jobs.claim(snapshot.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        copy_job(&c, snapshot).await;
    });
}

struct CopyDone {
    manifest_root: ChunkId,
    full_size_bytes: u64,
}

async fn copy_job(ctx: &Ctx, snap: Snapshot) {
    let mut committed = snap.progress;
    let mut n = 0;
    let outcome = loop {
        n += 1;
        match copy_once(ctx, &snap, &mut committed).await {
            Err(e) if e.is_transient() && n < COPY_ATTEMPTS => {
                tracing::warn!(snapshot = %snap.id, attempt = n, error = %e, "copy interrupted, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
            other => break other,
        }
    };
    let cmd = match &outcome {
        Ok(done) => Command::CompleteSnapshot {
            id: snap.id.clone(),
            manifest_root: done.manifest_root,
            full_size_bytes: done.full_size_bytes,
            at_ms: now_ms(),
        },
        Err(e) => Command::FailSnapshot {
            id: snap.id.clone(),
            message: format!("The snapshot copy failed: {e}"),
            at_ms: now_ms(),
        },
    };
    match write_retrying(ctx, &cmd).await {
        Ok(Ok(_)) => match &outcome {
            Ok(_) => tracing::info!(snapshot = %snap.id, "snapshot completed"),
            Err(e) => tracing::warn!(snapshot = %snap.id, error = %e, "snapshot failed"),
        },
        Ok(Err(e)) => tracing::warn!(snapshot = %snap.id, error = %e, "snapshot outcome refused"),
        // Still pending in the records: the next gateway start resumes it.
        Err(e) => {
            tracing::error!(snapshot = %snap.id, error = %e, "could not record the snapshot outcome")
        }
    }
    if let Err(e) = release(ctx, &snap).await {
        tracing::warn!(snapshot = %snap.id, error = %e, "could not release the frozen image");
    }
}

/// One run of the host's Copy, following its progress stream.
async fn copy_once(ctx: &Ctx, snap: &Snapshot, committed: &mut u8) -> Result<CopyDone, HostError> {
    let volume = ctx.volume(&snap.volume_id).await?.ok_or_else(|| {
        HostError::Protocol(format!("volume {} no longer exists", snap.volume_id))
    })?;
    let nodes = ctx.node_list().await?;
    let host = find_node(&nodes, &volume.host_node)?;
    let targets: Vec<pb::StoreNode> =
        destination_nodes(&nodes, snap.outpost.as_ref()).iter().map(Into::into).collect();
    if targets.is_empty() {
        return Err(HostError::Interrupted(match &snap.outpost {
            Some(op) => format!("no chunk node of Outpost {op} is registered"),
            None => "no regional chunk node is registered".to_string(),
        }));
    }
    let mut c = ctx.nodes.volume_host(&host)?;
    let req = pb::CopyRequest {
        volume_id: snap.volume_id.to_string(),
        snapshot_id: snap.id.to_string(),
        targets,
        replication_factor: ctx.config.replication_factor,
        ..Default::default()
    };
    let mut stream = call(&host.node_id, 30, c.copy(req)).await?;
    loop {
        let msg = match tokio::time::timeout(COPY_IDLE, stream.message()).await {
            Err(_) => {
                return Err(HostError::Timeout {
                    node: host.node_id.clone(),
                    secs: COPY_IDLE.as_secs(),
                })
            }
            Ok(Err(status)) => return Err(HostError::rpc(&host.node_id, status)),
            Ok(Ok(None)) => {
                return Err(HostError::Interrupted(format!(
                    "{}: copy stream ended before the copy was done",
                    host.node_id
                )))
            }
            Ok(Ok(Some(m))) => m,
        };
        if msg.done {
            let manifest_root = ChunkId::from_slice(&msg.manifest_root).ok_or_else(|| {
                HostError::Protocol(format!(
                    "{}: copy finished with a {}-byte manifest root",
                    host.node_id,
                    msg.manifest_root.len()
                ))
            })?;
            return Ok(CopyDone { manifest_root, full_size_bytes: msg.full_size_bytes });
        }
        if should_commit(*committed, msg.percent) {
            let progress = msg.percent.min(99) as u8;
            match ctx.meta.write(&Command::SnapshotProgress { id: snap.id.clone(), progress }).await
            {
                Ok(Ok(CommandOutput::Snapshot(s))) if s.state != SnapshotState::Pending => {
                    return Err(HostError::Protocol(format!(
                        "snapshot is {} already",
                        s.state.as_str()
                    )))
                }
                Ok(Ok(_)) => *committed = progress,
                Ok(Err(MetaError::SnapshotNotFound(_))) => {
                    return Err(HostError::Protocol(
                        "the snapshot was deleted during its copy".into(),
                    ))
                }
                Ok(Err(e)) => tracing::warn!(snapshot = %snap.id, error = %e, "progress refused"),
                // Progress is advisory; the copy goes on without it.
                Err(e) => tracing::warn!(snapshot = %snap.id, error = %e, "progress not committed"),
            }
        }
    }
}

/// Drops the host's frozen image of the snapshot.
async fn release(ctx: &Ctx, snap: &Snapshot) -> Result<(), HostError> {
    let volume = match ctx.volume(&snap.volume_id).await? {
        Some(v) => v,
        None => return Ok(()),
    };
    let volume = &volume;
    retry("release", 3, move || async move {
        let host = find_node(&ctx.node_list().await?, &volume.host_node)?;
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::ReleaseRequest {
            volume_id: snap.volume_id.to_string(),
            snapshot_id: snap.id.to_string(),
        };
        match call(&host.node_id, 10, c.release(req)).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await
}

/// Starts the background creation of a `creating` volume (a restore, or an
/// empty volume a previous gateway left half made).
pub fn spawn_restore(ctx: &Arc<Ctx>, volume: Volume) {
    let Some(claim) = ctx.jobs.claim(volume.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        let state = match create_on_host(&c, &volume, RESTORE_ATTEMPTS).await {
            Ok(()) => VolumeState::Available,
            Err(e) => {
                tracing::warn!(volume = %volume.id, error = %e, "volume creation failed");
                VolumeState::Error
            }
        };
        let cmd = Command::SetVolumeState { id: volume.id.clone(), state };
        match write_retrying(&c, &cmd).await {
            Ok(Ok(_)) => tracing::info!(volume = %volume.id, state = state.as_str(), "volume created"),
            Ok(Err(e)) => tracing::warn!(volume = %volume.id, error = %e, "volume state refused"),
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "could not record the volume state"),
        }
    });
}

/// Finishes the deletion of a volume left `deleting`.
fn spawn_finish_delete(ctx: &Arc<Ctx>, volume: Volume) {
    let Some(claim) = ctx.jobs.claim(volume.id.as_str()) else { return };
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let _claim = claim;
        if let Err(e) = delete_on_host(&c, &volume).await {
            tracing::warn!(volume = %volume.id, error = %e, "volume stays deleting");
            return;
        }
        match write_retrying(&c, &Command::DeleteVolume { id: volume.id.clone() }).await {
            Ok(Ok(_)) | Ok(Err(MetaError::VolumeNotFound(_))) => {}
            Ok(Err(e)) => {
                tracing::warn!(volume = %volume.id, error = %e, "volume record not deleted")
            }
            Err(e) => tracing::error!(volume = %volume.id, error = %e, "volume record not deleted"),
        }
    });
}

/// Resumes, in the background, whatever earlier gateways left unfinished.
/// Waits for the metadata group as long as it takes (or until shutdown).
pub fn spawn_resume(ctx: &Arc<Ctx>) {
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let mut n = 0;
        let (volumes, snapshots) = loop {
            n += 1;
            match (c.volumes().await, c.snapshots().await) {
                (Ok(v), Ok(s)) => break (v, s),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot read records to resume jobs yet");
                    tokio::time::sleep(backoff(n)).await;
                }
            }
        };
        let mut resumed = 0usize;
        for s in snapshots.into_iter().filter(|s| s.state == SnapshotState::Pending) {
            spawn_copy(&c, s);
            resumed += 1;
        }
        for v in volumes {
            match v.state {
                VolumeState::Creating => spawn_restore(&c, v),
                VolumeState::Deleting => spawn_finish_delete(&c, v),
                _ => continue,
            }
            resumed += 1;
        }
        tracing::info!(resumed, "resumed unfinished jobs");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_commits_every_five_points() {
        let mut committed = 0u8;
        let mut commits = Vec::new();
        for p in [0u32, 1, 4, 5, 6, 9, 10, 30, 31, 99, 100] {
            if should_commit(committed, p) {
                committed = p as u8;
                commits.push(p);
            }
        }
        assert_eq!(commits, [5, 10, 30, 99]);
        assert!(!should_commit(97, 100));
        assert!(!should_commit(0, 4));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(60), Duration::from_secs(5));
    }

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let jobs = Jobs::default();
        let a = jobs.claim("snap-1").expect("first claim");
        assert!(jobs.claim("snap-1").is_none());
        assert!(jobs.claim("snap-2").is_some());
        drop(a);
        assert!(jobs.claim("snap-1").is_some());
    }

    #[tokio::test]
    async fn retry_stops_on_permanent_errors() {
        let mut calls = 0;
        let r: Result<(), HostError> = retry("t", 5, || {
            calls += 1;
            async {
                Err(HostError::rpc("n", tonic::Status::failed_precondition("no frozen image")))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<u32, HostError> = retry("t", 3, || {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(HostError::rpc("n", tonic::Status::unavailable("down")))
                } else {
                    Ok(c)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
