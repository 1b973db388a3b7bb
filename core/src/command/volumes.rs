//! Volumes: creation (idempotent by client token, from nothing or from a
//! completed snapshot), state changes, and deletion. A volume is deleted only
//! when it is not attached and no snapshot of it is pending, so a pending
//! snapshot always has its volume to copy from. A volume restored from a
//! snapshot holds that snapshot's manifest (see `holds`) until it is hydrated.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::ids::VolumeId;
use crate::records::{Holder, RecordKey, SnapshotState, Volume, VolumeState};

impl Records {
    /// A volume from a completed snapshot, or empty; a retry with the same
    /// token and parameters answers the volume created the first time.
    pub(super) fn create_volume(
        &mut self,
        volume: Volume,
        client_token: Option<String>,
    ) -> CommandResult {
        let fingerprint = format!(
            "vol:{}:{}:{}:{:?}:{:?}",
            volume.size_gib, volume.az, volume.volume_type, volume.snapshot_id, volume.outpost
        );
        if let Some(id) = self.token_hit(&volume.owner, &client_token, &fingerprint)? {
            let existing = VolumeId::parse(&id).and_then(|v| self.volumes.get(&v).cloned());
            if let Some(v) = existing {
                return Ok(CommandOutput::Volume(v));
            }
        }
        if let Some(snap) = &volume.snapshot_id {
            match self.snapshots.get(snap) {
                Some(s) if s.state == SnapshotState::Completed => {}
                Some(_) => {
                    return Err(MetaError::IncorrectState(format!(
                        "Snapshot '{snap}' is not completed."
                    )))
                }
                None => return Err(MetaError::SnapshotNotFound(snap.to_string())),
            }
        }
        self.remember_token(&volume.owner, client_token, fingerprint, volume.id.to_string());
        // Until it is hydrated, the volume needs its source's manifest whole,
        // even once that snapshot is deleted.
        if let Some(root) = volume.snapshot_id.as_ref().and_then(|s| self.completed_root(s)) {
            self.hold(Holder::Volume(volume.id.clone()), vec![root]);
        }
        self.put_volume(volume.clone());
        Ok(CommandOutput::Volume(volume))
    }

    pub(super) fn set_volume_state(&mut self, id: VolumeId, state: VolumeState) -> CommandResult {
        let mut v = self.volume(&id)?;
        v.state = state;
        self.put_volume(v.clone());
        Ok(CommandOutput::Volume(v))
    }

    pub(super) fn delete_volume(&mut self, id: VolumeId) -> CommandResult {
        let v = self.volume(&id)?;
        if v.state == VolumeState::InUse {
            return Err(MetaError::VolumeInUse(format!("Volume {id} is currently attached.")));
        }
        if self.pending_snapshots(&id) > 0 {
            return Err(MetaError::IncorrectState(format!(
                "Volume {id} has pending snapshots; delete it once they finish."
            )));
        }
        self.remove_volume(&id);
        self.forget_modification(&id);
        self.unhold(&Holder::Volume(id.clone()));
        self.dirty.insert(RecordKey::Volume(id));
        Ok(CommandOutput::Done)
    }
}
