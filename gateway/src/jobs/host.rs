//! The volume host calls a job makes (freeze, create, delete, release),
//! each retried while it fails transiently; already done counts as done.

use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use crate::retry::retry;
use cairn_core::records::{ChunkNodeInfo, Volume};
use cairn_core::{SnapshotId, VolumeId};
use cairn_proto::pb;

/// The registered node named `id`.
pub fn find_node(nodes: &[ChunkNodeInfo], id: &str) -> Result<ChunkNodeInfo, HostError> {
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

/// Drops the host's frozen image of a snapshot. Already gone counts as done.
pub async fn release(
    ctx: &Ctx,
    volume_id: &VolumeId,
    snapshot: &SnapshotId,
) -> Result<(), HostError> {
    let volume = match ctx.volume(volume_id).await? {
        Some(v) => v,
        None => return Ok(()),
    };
    let volume = &volume;
    retry("release", 3, move || async move {
        let host = find_node(&ctx.node_list().await?, &volume.host_node)?;
        let mut c = ctx.nodes.volume_host(&host)?;
        let req = pb::ReleaseRequest {
            volume_id: volume.id.to_string(),
            snapshot_id: snapshot.to_string(),
        };
        match call(&host.node_id, 10, c.release(req)).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await
}
