//! The `SnapshotStaging` gRPC service: decode, call the staging store,
//! encode.

use crate::staging::error::StagingError;
use crate::staging::record::Entry;
use crate::staging::store::StagingStore;
use cairn_proto::pb::snapshot_staging_server::SnapshotStaging;
use cairn_proto::pb::{self, StagingKind};
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Entries per `BlockMap` reply message (~100 bytes each on the wire).
const ENTRIES_PER_REPLY: usize = 8192;
/// Most entries one `Append` may carry.
const MAX_APPEND: usize = 65_536;

/// The gRPC service: decode, call the store, encode.
pub struct StagingService {
    pub store: StagingStore,
}

type BlockMapStream = Pin<Box<dyn Stream<Item = Result<pb::StagingBlockMapReply, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotStaging for StagingService {
    async fn append(
        &self,
        request: Request<pb::StagingAppendRequest>,
    ) -> Result<Response<pb::StagingAppendReply>, Status> {
        let req = request.into_inner();
        if req.entries.is_empty() || req.entries.len() > MAX_APPEND {
            return Err(StagingError::Invalid(format!(
                "an append carries 1..={MAX_APPEND} entries, not {}",
                req.entries.len()
            ))
            .into());
        }
        let entries = req.entries.iter().map(Entry::from_pb).collect::<Result<Vec<_>, _>>()?;
        self.store.append(req.snapshot_id, entries).await?;
        Ok(Response::new(pb::StagingAppendReply {}))
    }

    async fn stat(
        &self,
        request: Request<pb::StagingStatRequest>,
    ) -> Result<Response<pb::StagingStatReply>, Status> {
        let reply = match self.store.summary(request.into_inner().snapshot_id).await? {
            Some(s) => pb::StagingStatReply {
                exists: true,
                timeout_minutes: s.timeout_minutes,
                opened_ms: s.opened_ms,
                last_activity_ms: s.last_activity_ms,
                completed: s.completed,
                changed_blocks_count: s.changed_blocks_count,
                entries: s.entries,
            },
            None => pb::StagingStatReply::default(),
        };
        Ok(Response::new(reply))
    }

    type BlockMapStream = BlockMapStream;

    async fn block_map(
        &self,
        request: Request<pb::StagingBlockMapRequest>,
    ) -> Result<Response<Self::BlockMapStream>, Status> {
        let snapshot = request.into_inner().snapshot_id;
        let batches = self.store.block_map(snapshot, ENTRIES_PER_REPLY);
        let replies = ReceiverStream::new(batches).map(|batch| match batch {
            Ok(b) => Ok(pb::StagingBlockMapReply {
                entries: b.entries.into_iter().map(Entry::to_pb).collect(),
                last: b.last,
            }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn remove(
        &self,
        request: Request<pb::StagingRemoveRequest>,
    ) -> Result<Response<pb::StagingRemoveReply>, Status> {
        self.store.remove(request.into_inner().snapshot_id).await?;
        Ok(Response::new(pb::StagingRemoveReply {}))
    }
}

/// The wire form of an entry.
impl Entry {
    fn from_pb(e: &pb::StagingEntry) -> Result<Entry, StagingError> {
        let kind = StagingKind::try_from(e.kind)
            .ok()
            .filter(|k| *k != StagingKind::Unspecified)
            .ok_or_else(|| StagingError::Invalid(format!("unknown entry kind {}", e.kind)))?;
        let fixed = |b: &[u8], what: &str| -> Result<[u8; 32], StagingError> {
            if b.is_empty() {
                return Ok([0; 32]);
            }
            b.try_into().map_err(|_| {
                StagingError::Invalid(format!("{what} must be 32 bytes, got {}", b.len()))
            })
        };
        let chunk = fixed(&e.chunk_id, "chunk_id")?;
        if kind == StagingKind::Block && e.chunk_id.is_empty() {
            return Err(StagingError::Invalid("a BLOCK entry needs its chunk id".into()));
        }
        Ok(Entry {
            kind,
            block_index: e.block_index,
            chunk,
            sha256: fixed(&e.sha256, "sha256")?,
            at_ms: e.at_ms,
            value: e.value,
        })
    }

    fn to_pb(self) -> pb::StagingEntry {
        pb::StagingEntry {
            kind: self.kind as i32,
            block_index: self.block_index,
            chunk_id: if self.kind == StagingKind::Block {
                self.chunk.to_vec()
            } else {
                Vec::new()
            },
            sha256: self.sha256.to_vec(),
            at_ms: self.at_ms,
            value: self.value,
        }
    }
}
