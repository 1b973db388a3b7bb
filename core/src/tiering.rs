//! A snapshot's storage tier beyond `standard`: the archive copy in the
//! object store, its restores, and the work under way. One record per
//! snapshot that was ever archived (`r/{snapshot}`), beside the snapshot
//! record so snapshot records written before tiers existed still decode.
//!
//! The work itself (writing the archive, bringing it back, deleting it) is
//! done by gateways; the record says what is wanted and where it stands. A
//! gateway claims the work with a lease; the work is idempotent (archive
//! objects are written under the snapshot's own prefix with the same
//! layout every time, restored chunks are put only where missing), so a
//! lease taken over early by a gateway with a fast clock wastes work but
//! cannot corrupt anything, and every step's completion is a
//! compare-and-set on the status.

use crate::ids::SnapshotId;
use serde::{Deserialize, Serialize};

/// What DescribeSnapshotTierStatus calls `lastTieringOperationStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TierStatus {
    ArchivalInProgress,
    ArchivalCompleted,
    ArchivalFailed,
    TemporaryRestoreInProgress,
    TemporaryRestoreCompleted,
    TemporaryRestoreFailed,
    PermanentRestoreInProgress,
    PermanentRestoreCompleted,
    PermanentRestoreFailed,
}

impl TierStatus {
    pub fn as_str(self) -> &'static str {
        use TierStatus::*;
        match self {
            ArchivalInProgress => "archival-in-progress",
            ArchivalCompleted => "archival-completed",
            ArchivalFailed => "archival-failed",
            TemporaryRestoreInProgress => "temporary-restore-in-progress",
            TemporaryRestoreCompleted => "temporary-restore-completed",
            TemporaryRestoreFailed => "temporary-restore-failed",
            PermanentRestoreInProgress => "permanent-restore-in-progress",
            PermanentRestoreCompleted => "permanent-restore-completed",
            PermanentRestoreFailed => "permanent-restore-failed",
        }
    }

    /// Work a gateway must do for this status.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            TierStatus::ArchivalInProgress
                | TierStatus::TemporaryRestoreInProgress
                | TierStatus::PermanentRestoreInProgress
        )
    }
}

/// Where a snapshot's archive copy is: objects under `prefix` in the
/// cluster's archive store (packs and one index object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCopy {
    pub prefix: String,
    /// Objects written (packs and the index).
    pub objects: u32,
    /// Bytes in the object store.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTiering {
    pub version: u16,
    pub snapshot_id: SnapshotId,
    pub status: TierStatus,
    /// Why the last operation failed.
    pub status_detail: Option<String>,
    pub last_start_ms: u64,
    /// 0..=100 of the last operation.
    pub progress: u8,
    pub archival_complete_ms: Option<u64>,
    /// When a temporary restore ends (the archive copy stays).
    pub restore_expiry_ms: Option<u64>,
    /// Days asked for by the last temporary restore.
    pub restore_days: Option<u32>,
    /// The archive copy, once written and verified.
    pub archive: Option<ArchiveCopy>,
    /// The snapshot was deleted, or permanently restored: its archive copy
    /// is to be deleted, then this record.
    pub purge: bool,
    /// The gateway doing the work, and until when (its clock).
    pub worker: Option<String>,
    pub lease_expires_ms: u64,
}

impl SnapshotTiering {
    /// True while the snapshot's chunks must stay in the chunk stores (so
    /// garbage collection marks its manifest): always, except when it is
    /// archived and not restored.
    pub fn needs_chunks(&self) -> bool {
        !matches!(
            self.status,
            TierStatus::ArchivalCompleted
                | TierStatus::TemporaryRestoreFailed
                | TierStatus::PermanentRestoreFailed
                | TierStatus::TemporaryRestoreInProgress
                | TierStatus::PermanentRestoreInProgress
        ) || self.purge
    }

    /// True when volumes may be made from the snapshot: it is not archived,
    /// or a restore of it completed.
    pub fn readable(&self) -> bool {
        !matches!(
            self.status,
            TierStatus::ArchivalCompleted
                | TierStatus::TemporaryRestoreInProgress
                | TierStatus::TemporaryRestoreFailed
                | TierStatus::PermanentRestoreInProgress
                | TierStatus::PermanentRestoreFailed
        )
    }

    /// True when gateway `me` may take the work at `now_ms`.
    pub fn can_work(&self, me: &str, now_ms: u64) -> bool {
        match &self.worker {
            Some(w) if w == me => true,
            Some(_) => self.lease_expires_ms <= now_ms,
            None => true,
        }
    }
}
