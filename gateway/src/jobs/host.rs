//! The volume host calls a job makes (freeze, create, grow, delete, release).
//! They share one shape ([`on_host`]): each attempt reads the registry,
//! finds the volume's host, opens its client and makes the call with a
//! deadline; attempts repeat while the failure is transient. Already done
//! counts as done.

use crate::ctx::Ctx;
use crate::nodes::{call, destination_nodes, HostError};
use crate::retry::retry;
use cairn_core::records::{ChunkNodeInfo, Volume};
use cairn_core::{SnapshotId, VolumeId};
use cairn_proto::pb;
use cairn_proto::pb::volume_host_client::VolumeHostClient;
use cairn_proto::Channel;
use std::future::Future;

/// The registered node named `id`.
pub fn find_node(nodes: &[ChunkNodeInfo], id: &str) -> Result<ChunkNodeInfo, HostError> {
    nodes
        .iter()
        .find(|n| n.node_id == id)
        .cloned()
        .ok_or_else(|| HostError::UnknownNode(id.to_string()))
}

/// What one attempt found: the volume's host among the registered nodes,
/// and a client to it.
struct Host {
    node: ChunkNodeInfo,
    client: VolumeHostClient<Channel>,
}

/// Runs `f` on `volume`'s host, up to `attempts` times while it fails
/// transiently (`what` names the call in the retry log). A host missing
/// from the registry is [`HostError::UnknownNode`], which is not retried.
async fn on_host<T, F, Fut>(
    ctx: &Ctx,
    volume: &Volume,
    what: &str,
    attempts: u32,
    f: F,
) -> Result<T, HostError>
where
    F: Fn(Host) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let f = &f;
    retry(what, attempts, move || async move {
        let nodes = ctx.node_list().await?;
        let node = find_node(&nodes, &volume.host_node)?;
        let client = ctx.nodes.volume_host(&node)?;
        f(Host { node, client }).await
    })
    .await
}

/// A call whose target may be gone already (NotFound): that counts as done.
fn gone_is_done<T>(r: Result<T, HostError>) -> Result<(), HostError> {
    match r {
        Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
        other => other.map(|_| ()),
    }
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
    on_host(ctx, volume, "freeze", 3, |mut h| async move {
        let req = pb::FreezeRequest {
            volume_id: volume.id.to_string(),
            snapshot_id: snapshot.to_string(),
            parent_snapshot_id: parent.map(|p| p.to_string()).unwrap_or_default(),
        };
        call(&h.node.node_id, 10, h.client.freeze(req)).await
    })
    .await
}

/// Creates the volume on its host: empty, or restoring from its snapshot's
/// manifest, whose chunks the host finds on the snapshot destination's nodes.
pub async fn create_on_host(ctx: &Ctx, volume: &Volume, attempts: u32) -> Result<(), HostError> {
    on_host(ctx, volume, "create volume", attempts, |mut h| async move {
        let (manifest_root, sources) = match &volume.snapshot_id {
            None => (Vec::new(), Vec::new()),
            Some(sid) => {
                let snap = ctx.snapshot(sid).await?.ok_or_else(|| {
                    HostError::Protocol(format!("snapshot {sid} no longer exists"))
                })?;
                let root = snap.manifest_root.ok_or_else(|| {
                    HostError::Protocol(format!("snapshot {sid} has no manifest (not completed)"))
                })?;
                // Nodes reads may use (up or draining), not removed or down ones.
                let readable = ctx.readable_nodes().await?;
                let sources: Vec<pb::StoreNode> =
                    destination_nodes(&readable, snap.outpost.as_ref())
                        .iter()
                        .map(Into::into)
                        .collect();
                (root.0.to_vec(), sources)
            }
        };
        let req = pb::CreateVolumeRequest {
            volume_id: volume.id.to_string(),
            size_bytes: volume.size_bytes(),
            manifest_root,
            sources,
            replication_factor: ctx.config.replication_factor,
        };
        call(&h.node.node_id, 60, h.client.create_volume(req)).await.map(|_| ())
    })
    .await
}

/// Grows the volume on its host to the record's size (ModifyVolume). The
/// host answers at once for a size it has already.
pub async fn grow_on_host(ctx: &Ctx, volume: &Volume, attempts: u32) -> Result<(), HostError> {
    on_host(ctx, volume, "grow volume", attempts, |mut h| async move {
        let req = pb::GrowVolumeRequest {
            volume_id: volume.id.to_string(),
            size_bytes: volume.size_bytes(),
        };
        call(&h.node.node_id, 30, h.client.grow_volume(req)).await.map(|_| ())
    })
    .await
}

/// Drops the volume's bytes on its host. Already gone counts as done, and
/// so does a host missing from the registry.
pub async fn delete_on_host(ctx: &Ctx, volume: &Volume) -> Result<(), HostError> {
    let deleted = on_host(ctx, volume, "delete volume", 3, |mut h| async move {
        let req = pb::DeleteVolumeRequest { volume_id: volume.id.to_string() };
        gone_is_done(call(&h.node.node_id, 30, h.client.delete_volume(req)).await)
    })
    .await;
    match deleted {
        // Unlike the other calls: nodes never leave the registry, so the
        // host never held it.
        Err(e @ HostError::UnknownNode(_)) => {
            tracing::warn!(volume = %volume.id, error = %e, "volume host unknown; nothing to delete");
            Ok(())
        }
        other => other,
    }
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
    on_host(ctx, volume, "release", 3, |mut h| async move {
        let req = pb::ReleaseRequest {
            volume_id: volume.id.to_string(),
            snapshot_id: snapshot.to_string(),
        };
        gone_is_done(call(&h.node.node_id, 10, h.client.release(req)).await)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_found_counts_as_done() {
        let status = |c| Err::<(), _>(HostError::rpc("n", tonic::Status::new(c, "x")));
        assert!(gone_is_done(status(tonic::Code::NotFound)).is_ok());
        assert!(gone_is_done(status(tonic::Code::Unavailable)).is_err());
        assert!(gone_is_done(Err::<(), _>(HostError::UnknownNode("n".into()))).is_err());
        assert!(gone_is_done(Ok(7)).is_ok());
    }
}
