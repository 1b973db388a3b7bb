//! The `VolumeHost` gRPC service: volumes created (empty, or restored from
//! a snapshot), deleted, frozen, copied (progress streamed back) and
//! released, and their counters. Copies go through the host's
//! [`CopyFence`]: one per snapshot at a time, none of a superseded epoch.

use crate::copy::{self, CopyFence, CopyJob, CopyMemory, Ticket};
use crate::error::chunk_id;
use crate::restore::{self, RestoreJob};
use crate::store::LocalStore;
use crate::volume::VolumeHost;
use cairn_proto::pb;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct VolumeHostService {
    pub host: VolumeHost,
    /// This node's chunk store: copies store their local replicas directly.
    pub local: Option<LocalStore>,
    /// The copy running per snapshot and the newest job epoch seen.
    pub copies: CopyFence,
    /// What the node's copies may hold in memory together.
    pub copy_memory: CopyMemory,
}

type CopyStream = Pin<Box<dyn Stream<Item = Result<pb::CopyProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::volume_host_server::VolumeHost for VolumeHostService {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeReply>, Status> {
        let req = request.into_inner();
        if req.manifest_root.is_empty() {
            self.host.create(&req.volume_id, req.size_bytes).await?;
        } else {
            let job = RestoreJob {
                volume_id: req.volume_id,
                size_bytes: req.size_bytes,
                manifest_root: chunk_id(&req.manifest_root)?,
                sources: req.sources,
                replication_factor: req.replication_factor,
            };
            restore::run(&self.host, job).await?;
        }
        Ok(Response::new(pb::CreateVolumeReply {}))
    }

    async fn grow_volume(
        &self,
        request: Request<pb::GrowVolumeRequest>,
    ) -> Result<Response<pb::GrowVolumeReply>, Status> {
        let req = request.into_inner();
        let size_bytes = self.host.grow(&req.volume_id, req.size_bytes).await?;
        Ok(Response::new(pb::GrowVolumeReply { size_bytes }))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeReply>, Status> {
        self.host.delete(&request.into_inner().volume_id).await?;
        Ok(Response::new(pb::DeleteVolumeReply {}))
    }

    async fn freeze(
        &self,
        request: Request<pb::FreezeRequest>,
    ) -> Result<Response<pb::FreezeReply>, Status> {
        let req = request.into_inner();
        let parent = Some(req.parent_snapshot_id.as_str()).filter(|p| !p.is_empty());
        let info = self.host.freeze(&req.volume_id, &req.snapshot_id, parent).await?;
        Ok(Response::new(pb::FreezeReply {
            incremental: info.incremental,
            blocks_to_read: info.blocks_to_read,
            volume_size_bytes: info.volume_size,
        }))
    }

    type CopyStream = CopyStream;

    async fn copy(
        &self,
        request: Request<pb::CopyRequest>,
    ) -> Result<Response<Self::CopyStream>, Status> {
        let req = request.into_inner();
        // Admitted first: a superseded call is refused whatever else holds,
        // and a newer one waits here until the running copy has stopped.
        let ticket = self
            .copies
            .enter(&req.snapshot_id, req.epoch)
            .await
            .map_err(|s| Status::failed_precondition(s.to_string()))?;
        let job = CopyJob {
            volume_id: req.volume_id,
            snapshot_id: req.snapshot_id,
            targets: req.targets,
            replication_factor: req.replication_factor,
            parent_manifest_root: req.parent_manifest_root,
            parent_snapshot_id: req.parent_snapshot_id,
            local: self.local.clone(),
            cancel: ticket.cancelled(),
            memory: self.copy_memory.clone(),
        };
        // Refuse at once what can be refused before streaming starts.
        self.host.frozen(&job.volume_id, &job.snapshot_id)?;
        let (progress_tx, progress_rx) = mpsc::channel(16);
        let (err_tx, err_rx) = mpsc::channel::<Status>(1);
        let host = self.host.clone();
        host.clone().spawn(run_copy(host, job, ticket, progress_tx, err_tx));
        // Progress first; a failure, if any, comes after the last progress.
        let progress = tokio_stream::wrappers::ReceiverStream::new(progress_rx).map(Ok);
        let failure = tokio_stream::wrappers::ReceiverStream::new(err_rx).map(Err);
        Ok(Response::new(Box::pin(progress.chain(failure))))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let req = request.into_inner();
        self.host.release(&req.volume_id, &req.snapshot_id).await?;
        self.copies.forget(&req.snapshot_id);
        Ok(Response::new(pb::ReleaseReply {}))
    }

    async fn volume_stats(
        &self,
        request: Request<pb::VolumeStatsRequest>,
    ) -> Result<Response<pb::VolumeStatsReply>, Status> {
        let reply = match self.host.get(&request.into_inner().volume_id) {
            Some(v) => {
                let s = v.stats();
                pb::VolumeStatsReply {
                    exists: true,
                    size_bytes: s.size_bytes,
                    copy_blocks_read: s.copy_blocks_read,
                    tracking_known: s.tracking_known,
                    hydrated_blocks: s.hydrated_blocks,
                    total_blocks: s.total_blocks,
                }
            }
            None => pb::VolumeStatsReply::default(),
        };
        Ok(Response::new(reply))
    }
}

/// Runs one admitted copy, holding its ticket until it ended (so the next
/// copy of the snapshot starts only then), and reports how it ended after
/// its last progress: its failure, or that a newer call stopped it.
async fn run_copy(
    host: VolumeHost,
    job: CopyJob,
    ticket: Ticket,
    progress: mpsc::Sender<pb::CopyProgress>,
    failure: mpsc::Sender<Status>,
) {
    let snapshot = job.snapshot_id.clone();
    let ended = copy::run(&host, job, progress).await;
    let status = match ended {
        Err(e) => {
            tracing::warn!(snapshot, error = %e, "copy failed");
            Status::from(e)
        }
        // Its done message was the last word, even when a newer call
        // superseded it in the same instant.
        Ok(copy::Ended::Complete) => return,
        Ok(copy::Ended::Stopped) => match ticket.superseded() {
            Some(s) => {
                tracing::info!(snapshot, "copy stopped: {s}");
                Status::failed_precondition(s.to_string())
            }
            None => return,
        },
    };
    drop(ticket);
    // The caller may already be gone.
    let _ = failure.send(status).await;
}
