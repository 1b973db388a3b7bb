//! The `ChunkStore` gRPC service: puts, `HasChunks`, gets and counters of
//! this node's chunk store, its side of garbage collection (fences, sweeps
//! and compaction, which run on the blocking pool), and scrub (a pass on
//! demand, and the scrubber's and repairer's status).

use crate::error::{chunk_id, ChunkNodeError};
use crate::scrub::Scrub;
use crate::store::{ChunkStore, COMPACT_LIVE_FRACTION};
use cairn_core::gc::LiveFilter;
use cairn_proto::pb;
use tonic::{Request, Response, Status};

/// Most ids one `HasChunks` call may ask about.
const MAX_HAS_IDS: usize = 16_384;

pub struct ChunkStoreService {
    pub store: ChunkStore,
    pub node_id: String,
    pub zone: String,
    pub scrub: Scrub,
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
        let (disk_free_bytes, disk_total_bytes) = self.store.disk_space();
        Ok(Response::new(pb::ChunkStatsReply {
            node_id: self.node_id.clone(),
            zone: self.zone.clone(),
            chunks: s.chunks,
            bytes: s.bytes,
            disk_free_bytes,
            disk_total_bytes,
        }))
    }

    async fn gc_fence(
        &self,
        request: Request<pb::GcFenceRequest>,
    ) -> Result<Response<pb::GcFenceReply>, Status> {
        self.store.gc_fence(request.into_inner().generation);
        Ok(Response::new(pb::GcFenceReply {}))
    }

    async fn gc_sweep(
        &self,
        request: Request<pb::GcSweepRequest>,
    ) -> Result<Response<pb::GcSweepReply>, Status> {
        let req = request.into_inner();
        let filter =
            LiveFilter::decode(&req.filter).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || store.gc_sweep(req.generation, &filter))
            .await
            .map_err(ChunkNodeError::from)?;
        Ok(Response::new(pb::GcSweepReply {
            swept: r.swept,
            examined: r.examined,
            deleted: r.deleted,
            deleted_bytes: r.deleted_bytes,
        }))
    }

    async fn compact(
        &self,
        _request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactReply>, Status> {
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || store.compact(COMPACT_LIVE_FRACTION))
            .await
            .map_err(ChunkNodeError::from)??;
        Ok(Response::new(pb::CompactReply {
            packs_rewritten: r.packs_rewritten,
            packs_removed: r.packs_removed,
            bytes_freed: r.bytes_freed,
        }))
    }

    async fn scrub(
        &self,
        request: Request<pb::ScrubRequest>,
    ) -> Result<Response<pb::ScrubReply>, Status> {
        let pass = self.scrub.request(request.into_inner().bytes_per_sec);
        Ok(Response::new(pb::ScrubReply { pass }))
    }

    async fn scrub_status(
        &self,
        _request: Request<pb::ScrubStatusRequest>,
    ) -> Result<Response<pb::ScrubStatusReply>, Status> {
        let s = self.scrub.status();
        let (repaired_total, unrepairable_total) = self.scrub.repairs();
        let (repair_waiting, repair_dropped) = self.store.repairs_waiting();
        Ok(Response::new(pb::ScrubStatusReply {
            node_id: self.node_id.clone(),
            zone: self.zone.clone(),
            pass: s.pass,
            running: s.running,
            finished: s.finished,
            passes_done: s.passes_done,
            pack: s.pack,
            offset: s.offset,
            records_checked: s.records_checked,
            bytes_checked: s.bytes_checked,
            found: s.found,
            repaired: s.repaired,
            unrepairable: s.unrepairable,
            errors: s.errors,
            bytes_per_sec: s.bytes_per_sec,
            corrupt_total: self.store.stats().corrupt,
            repaired_total,
            unrepairable_total,
            repair_waiting,
            repair_dropped,
        }))
    }
}
