//! The gRPC services: thin adapters (decode, call, encode) over the chunk
//! store, the volume host, the copy executor and the restore. Errors become
//! status codes through the one `From<ChunkNodeError> for Status` table.

use crate::copy::{self, CopyJob};
use crate::error::ChunkNodeError;
use crate::restore::{self, RestoreJob};
use crate::store::{ChunkStore, LocalStore};
use crate::volume::VolumeHost;
use cairn_core::ChunkId;
use cairn_proto::pb;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Most ids one `HasChunks` call may ask about.
const MAX_HAS_IDS: usize = 16_384;

fn chunk_id(bytes: &[u8]) -> Result<ChunkId, ChunkNodeError> {
    ChunkId::from_slice(bytes).ok_or(ChunkNodeError::BadChunkId(bytes.len()))
}

pub struct ChunkStoreService {
    pub store: ChunkStore,
    pub node_id: String,
    pub zone: String,
}

#[tonic::async_trait]
impl pb::chunk_store_server::ChunkStore for ChunkStoreService {
    async fn put_chunk(
        &self,
        request: Request<pb::PutChunkRequest>,
    ) -> Result<Response<pb::PutChunkReply>, Status> {
        let req = request.into_inner();
        let id = chunk_id(&req.id)?;
        let stored_new = self.store.put(id, req.data).await?;
        Ok(Response::new(pb::PutChunkReply { stored_new }))
    }

    async fn has_chunks(
        &self,
        request: Request<pb::HasChunksRequest>,
    ) -> Result<Response<pb::HasChunksReply>, Status> {
        let req = request.into_inner();
        if req.ids.len() > MAX_HAS_IDS {
            return Err(ChunkNodeError::InvalidArgument("too many ids in one HasChunks").into());
        }
        let ids = req.ids.iter().map(|b| chunk_id(b)).collect::<Result<Vec<_>, _>>()?;
        let present = self.store.has(ids).await?;
        Ok(Response::new(pb::HasChunksReply { present }))
    }

    async fn get_chunk(
        &self,
        request: Request<pb::GetChunkRequest>,
    ) -> Result<Response<pb::GetChunkReply>, Status> {
        let id = chunk_id(&request.into_inner().id)?;
        match self.store.get(id).await? {
            Some(data) => Ok(Response::new(pb::GetChunkReply { data: data.into() })),
            None => Err(ChunkNodeError::ChunkNotFound(id).into()),
        }
    }

    async fn stats(
        &self,
        _request: Request<pb::ChunkStatsRequest>,
    ) -> Result<Response<pb::ChunkStatsReply>, Status> {
        let s = self.store.stats();
        Ok(Response::new(pb::ChunkStatsReply {
            node_id: self.node_id.clone(),
            zone: self.zone.clone(),
            chunks: s.chunks,
            bytes: s.bytes,
        }))
    }
}

pub struct VolumeHostService {
    pub host: VolumeHost,
    /// This node's chunk store: copies store their local replicas directly.
    pub local: Option<LocalStore>,
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
        }))
    }

    type CopyStream = CopyStream;

    async fn copy(
        &self,
        request: Request<pb::CopyRequest>,
    ) -> Result<Response<Self::CopyStream>, Status> {
        let req = request.into_inner();
        let job = CopyJob {
            volume_id: req.volume_id,
            snapshot_id: req.snapshot_id,
            targets: req.targets,
            replication_factor: req.replication_factor,
            parent_manifest_root: req.parent_manifest_root,
            parent_snapshot_id: req.parent_snapshot_id,
            local: self.local.clone(),
        };
        // Refuse at once what can be refused before streaming starts.
        self.host.frozen(&job.volume_id, &job.snapshot_id)?;
        let (progress_tx, progress_rx) = mpsc::channel(16);
        let (err_tx, err_rx) = mpsc::channel::<Status>(1);
        let host = self.host.clone();
        let runner = host.clone();
        runner.spawn(async move {
            if let Err(e) = copy::run(&host, job, progress_tx).await {
                tracing::warn!(error = %e, "copy failed");
                // The caller may already be gone.
                let _ = err_tx.send(e.into()).await;
            }
        });
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
