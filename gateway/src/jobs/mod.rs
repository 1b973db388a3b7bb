//! Job orchestration: snapshot copies and volume restores. The gateway never
//! carries bytes; it tells volume hosts what to do, follows their progress and
//! commits each step to the metadata group.
//!
//! Snapshot copies are leased jobs in the metadata group ([`copy`] has the
//! whole story): CreateSnapshot writes the snapshot and its job, leased to
//! this gateway, freezes the volume and answers; a background task runs the
//! host's `Copy`, renews the lease, commits checkpoints and progress, and
//! ends the snapshot. Every gateway also scans for jobs whose lease lapsed
//! (their gateway died) and resumes them.
//!
//! Volumes: on start, [`spawn_resume`] finishes every `creating` volume (the
//! host's CreateVolume is idempotent; with lazy load it returns as soon as the
//! volume exists, and the volume turns `available`) and every `deleting` one.
//! These are not leased: two gateways starting at once both call the host,
//! which is harmless because every step is idempotent.

pub mod copy;

use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use cairn_core::command::{Command, CommandResult, MetaError};
use cairn_core::records::{ChunkNodeInfo, Volume, VolumeState};
use cairn_core::SnapshotId;
use cairn_proto::pb;
use cairn_proto::MetaClientError;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

pub use copy::{should_commit, spawn_copy, PROGRESS_STEP};

/// Attempts of a restore's host CreateVolume before the volume ends in `error`.
const RESTORE_ATTEMPTS: u32 = 5;

/// The background jobs of one gateway, stopped together at shutdown.
pub struct Jobs {
    tasks: Mutex<JoinSet<()>>,
    /// Resources with a job running here, so one resource never has two.
    running: Arc<Mutex<HashSet<String>>>,
    /// The lease-holder name used when the configuration names none: random
    /// per process start (see `GatewayConfig::gateway_id`).
    random_id: String,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            tasks: Mutex::default(),
            running: Arc::default(),
            random_id: format!("gw-{}", uuid::Uuid::new_v4().simple()),
        }
    }
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
    /// This process's random lease-holder name.
    pub fn random_id(&self) -> &str {
        &self.random_id
    }

    /// True while a job for `key` runs here.
    pub fn is_running(&self, key: &str) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

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

/// Freezes `volume` for snapshot `snapshot` (incremental from `parent`, the
/// volume's latest completed snapshot, when the host tracked the changes
/// since): from the host's answer on, the frozen image holds every write
/// acknowledged before.
pub async fn freeze(
    ctx: &Ctx,
    volume: &Volume,
    snapshot: &SnapshotId,
    parent: Option<&SnapshotId>,
) -> Result<pb::FreezeReply, HostError> {
    retry("freeze", 3, move || async move {
        let host = find_node(&ctx.node_list().await?, &volume.host_node)?;
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::FreezeRequest {
            volume_id: volume.id.to_string(),
            snapshot_id: snapshot.to_string(),
            parent_snapshot_id: parent.map(|p| p.to_string()).unwrap_or_default(),
        };
        call(&host.node_id, 10, c.freeze(req)).await
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

/// Starts this gateway's copy-job runner ([`copy::spawn_runner`]) and
/// finishes, in the background, the volumes earlier gateways left `creating`
/// or `deleting`. Waits for the metadata group as long as it takes (or until
/// shutdown).
pub fn spawn_resume(ctx: &Arc<Ctx>) {
    copy::spawn_runner(ctx);
    let c = ctx.clone();
    ctx.jobs.spawn(async move {
        let mut n = 0;
        let volumes = loop {
            n += 1;
            match c.volumes().await {
                Ok(v) => break v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read volumes to resume jobs yet");
                    tokio::time::sleep(backoff(n)).await;
                }
            }
        };
        let mut resumed = 0usize;
        for v in volumes {
            match v.state {
                VolumeState::Creating => spawn_restore(&c, v),
                VolumeState::Deleting => spawn_finish_delete(&c, v),
                _ => continue,
            }
            resumed += 1;
        }
        tracing::info!(resumed, "resumed unfinished volume jobs");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
