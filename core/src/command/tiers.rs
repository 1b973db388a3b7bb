//! Snapshot storage tiers (ModifySnapshotTier, RestoreSnapshotTier) and the
//! steps of the work gateways do for them; the record is
//! [`crate::tiering::SnapshotTiering`].
//!
//! Invariants: only the owner asks; only a completed snapshot that is not
//! shared is archived (as EC2 refuses shared ones); a snapshot is
//! `archive` tier from the step that records its verified archive copy
//! until a permanent restore completes; a restore in progress holds (a hold
//! with no roots, so every chunk it puts is kept by GC's fence until the
//! snapshot is marked again); every step names the gateway doing the work
//! and changes nothing unless that gateway holds it and the status is the
//! one the step ends; an archive copy is deleted only through `purge`
//! (snapshot deleted, or permanently restored), and the record goes only
//! once its archive copy has.

use super::messages::{CommandOutput, CommandResult, MetaError, TierOp};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::{Holder, RecordKey, SnapshotState, RECORD_VERSION};
use crate::tiering::{SnapshotTiering, TierStatus};

const DAY_MS: u64 = 86_400_000;

impl Records {
    fn put_tiering(&mut self, t: SnapshotTiering) -> CommandResult {
        self.dirty.insert(RecordKey::Tiering(t.snapshot_id.clone()));
        self.tiering.insert(t.snapshot_id.clone(), t.clone());
        Ok(CommandOutput::Tiering(t))
    }

    fn set_storage_tier(&mut self, id: &SnapshotId, tier: &str) {
        if let Some(mut s) = self.snapshots.get(id).cloned() {
            s.storage_tier = tier.to_string();
            self.put_snapshot(s);
        }
    }

    pub(super) fn tier(&mut self, id: SnapshotId, now_ms: u64, op: TierOp) -> CommandResult {
        match op {
            TierOp::Archive { owner } => self.archive(id, &owner, now_ms),
            TierOp::Restore { owner, days } => self.restore(id, &owner, days, now_ms),
            op => self.tier_step(id, now_ms, op),
        }
    }

    fn archive(&mut self, id: SnapshotId, owner: &str, now_ms: u64) -> CommandResult {
        let s = self.snapshot(&id)?;
        if s.owner != owner {
            return Err(MetaError::SnapshotNotFound(id.to_string()));
        }
        if s.state != SnapshotState::Completed {
            return Err(MetaError::IncorrectState(format!(
                "Snapshot '{id}' is in state '{}'; only completed snapshots can be archived.",
                s.state.as_str()
            )));
        }
        if self.sharing.get(&id).is_some_and(|sh| !sh.is_empty()) {
            return Err(MetaError::OperationNotPermitted(format!(
                "Snapshot '{id}' is shared; stop sharing it before archiving it."
            )));
        }
        if let Some(t) = self.tiering.get(&id) {
            let again = matches!(
                t.status,
                TierStatus::ArchivalFailed | TierStatus::PermanentRestoreCompleted
            );
            if !again || t.purge {
                return Err(MetaError::IncorrectState(format!(
                    "Snapshot '{id}' is {} ({}); it cannot be archived now.",
                    s.storage_tier,
                    t.status.as_str()
                )));
            }
        }
        self.put_tiering(SnapshotTiering {
            version: RECORD_VERSION,
            snapshot_id: id,
            status: TierStatus::ArchivalInProgress,
            status_detail: None,
            last_start_ms: now_ms,
            progress: 0,
            archival_complete_ms: None,
            restore_expiry_ms: None,
            restore_days: None,
            archive: None,
            purge: false,
            worker: None,
            lease_expires_ms: 0,
        })
    }

    fn restore(
        &mut self,
        id: SnapshotId,
        owner: &str,
        days: Option<u32>,
        now_ms: u64,
    ) -> CommandResult {
        let s = self.snapshot(&id)?;
        if s.owner != owner {
            return Err(MetaError::SnapshotNotFound(id.to_string()));
        }
        let Some(mut t) = self.tiering.get(&id).cloned().filter(|t| t.archive.is_some()) else {
            return Err(MetaError::IncorrectState(format!("Snapshot '{id}' is not archived.")));
        };
        match (t.status, days) {
            // A completed temporary restore: a new period from now, or made permanent.
            (TierStatus::TemporaryRestoreCompleted, Some(d)) => {
                t.restore_expiry_ms = Some(now_ms + u64::from(d) * DAY_MS);
                t.restore_days = Some(d);
            }
            (TierStatus::TemporaryRestoreCompleted, None) => {
                t.status = TierStatus::PermanentRestoreCompleted;
                t.restore_expiry_ms = None;
                t.restore_days = None;
                t.last_start_ms = now_ms;
                t.purge = true;
                self.set_storage_tier(&id, "standard");
            }
            (
                TierStatus::ArchivalCompleted
                | TierStatus::TemporaryRestoreFailed
                | TierStatus::PermanentRestoreFailed,
                _,
            ) => {
                t.status = match days {
                    Some(_) => TierStatus::TemporaryRestoreInProgress,
                    None => TierStatus::PermanentRestoreInProgress,
                };
                t.restore_days = days;
                t.restore_expiry_ms = None;
                t.status_detail = None;
                t.progress = 0;
                t.last_start_ms = now_ms;
                t.worker = None;
                self.hold(Holder::Snapshot(id.clone()), Vec::new());
            }
            (status, _) => {
                return Err(MetaError::IncorrectState(format!(
                    "Snapshot '{id}' is {}; it cannot be restored now.",
                    status.as_str()
                )))
            }
        }
        self.put_tiering(t)
    }

    /// A step of the work by a gateway; changes nothing unless it applies.
    fn tier_step(&mut self, id: SnapshotId, now_ms: u64, op: TierOp) -> CommandResult {
        let Some(mut t) = self.tiering.get(&id).cloned() else {
            return Err(MetaError::IncorrectState(format!("Snapshot '{id}' has no tier work.")));
        };
        let held = |t: &SnapshotTiering, g: &str| t.worker.as_deref() == Some(g);
        match op {
            TierOp::Claim { gateway, lease_ms }
                if (t.status.in_progress() || t.purge) && t.can_work(&gateway, now_ms) =>
            {
                t.worker = Some(gateway);
                t.lease_expires_ms = now_ms.saturating_add(lease_ms);
            }
            TierOp::Progress { gateway, progress } if held(&t, &gateway) => {
                t.progress = t.progress.max(progress.min(99));
            }
            TierOp::Archived { gateway, archive }
                if held(&t, &gateway) && t.status == TierStatus::ArchivalInProgress =>
            {
                t.status = TierStatus::ArchivalCompleted;
                t.archive = Some(archive);
                t.archival_complete_ms = Some(now_ms);
                t.progress = 100;
                t.worker = None;
                if self.snapshots.contains_key(&id) {
                    self.set_storage_tier(&id, "archive");
                } else {
                    t.purge = true;
                }
            }
            TierOp::Restored { gateway } if held(&t, &gateway) => {
                match t.status {
                    TierStatus::TemporaryRestoreInProgress => {
                        t.status = TierStatus::TemporaryRestoreCompleted;
                        let days = u64::from(t.restore_days.unwrap_or(1));
                        t.restore_expiry_ms = Some(now_ms + days * DAY_MS);
                    }
                    TierStatus::PermanentRestoreInProgress => {
                        t.status = TierStatus::PermanentRestoreCompleted;
                        t.purge = true;
                        self.set_storage_tier(&id, "standard");
                    }
                    _ => return Ok(CommandOutput::Tiering(t)),
                }
                t.progress = 100;
                t.worker = None;
                self.unhold(&Holder::Snapshot(id.clone()));
            }
            TierOp::Failed { gateway, message } if held(&t, &gateway) => {
                t.status = match t.status {
                    TierStatus::ArchivalInProgress => TierStatus::ArchivalFailed,
                    TierStatus::TemporaryRestoreInProgress => TierStatus::TemporaryRestoreFailed,
                    TierStatus::PermanentRestoreInProgress => TierStatus::PermanentRestoreFailed,
                    _ => return Ok(CommandOutput::Tiering(t)),
                };
                t.status_detail = Some(message);
                t.worker = None;
                self.unhold(&Holder::Snapshot(id.clone()));
            }
            TierOp::Expire => {
                let due = t.restore_expiry_ms.is_some_and(|e| e <= now_ms);
                if t.status != TierStatus::TemporaryRestoreCompleted || !due {
                    return Ok(CommandOutput::Tiering(t));
                }
                t.status = TierStatus::ArchivalCompleted;
                t.restore_expiry_ms = None;
            }
            TierOp::Purged { gateway } if held(&t, &gateway) && t.purge => {
                if !self.snapshots.contains_key(&id) {
                    self.tiering.remove(&id);
                    self.dirty.insert(RecordKey::Tiering(id));
                    return Ok(CommandOutput::Done);
                }
                t.archive = None;
                t.purge = false;
                t.worker = None;
            }
            _ => return Ok(CommandOutput::Tiering(t)),
        }
        self.put_tiering(t)
    }

    /// Deleting a snapshot: its archive copy (written, or being written) is
    /// to be deleted; a record without one goes at once.
    pub(super) fn untier_deleted(&mut self, id: &SnapshotId) {
        let Some(mut t) = self.tiering.get(id).cloned() else { return };
        if t.archive.is_some() || t.status == TierStatus::ArchivalInProgress {
            t.purge = true;
            t.worker = None;
            self.dirty.insert(RecordKey::Tiering(id.clone()));
            self.tiering.insert(id.clone(), t);
        } else {
            self.tiering.remove(id);
            self.dirty.insert(RecordKey::Tiering(id.clone()));
        }
    }
}
