//! ModifyVolume: a volume's size, type, IOPS and throughput change. The
//! volume record takes the target settings when the modification is
//! accepted (so a snapshot taken from then on records the new size, and a
//! restore of it makes a volume that large: the grown part is zeros either
//! way); the modification stays `modifying` until the volume host holds the
//! volume at its new size, then `completed`. One modification at a time per
//! volume; a volume never shrinks.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::ids::VolumeId;
use crate::records::{
    ModificationState, RecordKey, VolumeModification, VolumeSettings, VolumeState, RECORD_VERSION,
};

impl Records {
    pub(super) fn modify_volume(
        &mut self,
        id: VolumeId,
        owner: &str,
        target: VolumeSettings,
        at_ms: u64,
    ) -> CommandResult {
        let mut v = self.volume(&id)?;
        if v.owner != owner {
            return Err(MetaError::VolumeNotFound(id.to_string()));
        }
        if v.state != VolumeState::Available && v.state != VolumeState::InUse {
            return Err(MetaError::IncorrectState(format!(
                "Volume '{id}' is in state '{}'.",
                v.state.as_str()
            )));
        }
        if let Some(m) = self.modifications.get(&id).filter(|m| m.state.in_progress()) {
            return Err(MetaError::IncorrectModificationState(format!(
                "Volume {id} is already being modified (state '{}'); wait for it to complete.",
                m.state.as_str()
            )));
        }
        let original = v.settings();
        if target.size_gib < original.size_gib {
            return Err(MetaError::InvalidModification(format!(
                "New size cannot be smaller than existing size: volume {id} is {} GiB.",
                original.size_gib
            )));
        }
        if target == original {
            return Err(MetaError::InvalidModification(format!(
                "The modification would not change volume {id}."
            )));
        }
        let m = VolumeModification {
            version: RECORD_VERSION,
            volume_id: id.clone(),
            owner: owner.to_string(),
            state: ModificationState::Modifying,
            status_message: None,
            original,
            target: target.clone(),
            progress: 0,
            start_time_ms: at_ms,
            end_time_ms: None,
        };
        v.size_gib = target.size_gib;
        v.volume_type = target.volume_type;
        v.iops = target.iops;
        v.throughput = target.throughput;
        self.put_volume(v);
        self.put_modification(m.clone());
        Ok(CommandOutput::Modification(m))
    }

    pub(super) fn finish_modification(&mut self, id: VolumeId, at_ms: u64) -> CommandResult {
        let Some(mut m) = self.modifications.get(&id).cloned() else {
            return Err(MetaError::VolumeNotFound(id.to_string()));
        };
        if m.state.in_progress() {
            m.state = ModificationState::Completed;
            m.progress = 100;
            m.end_time_ms = Some(at_ms);
            self.put_modification(m.clone());
        }
        Ok(CommandOutput::Modification(m))
    }

    fn put_modification(&mut self, m: VolumeModification) {
        self.dirty.insert(RecordKey::VolumeModification(m.volume_id.clone()));
        self.modifications.insert(m.volume_id.clone(), m);
    }

    /// A deleted volume's modification goes with it.
    pub(super) fn forget_modification(&mut self, id: &VolumeId) {
        if self.modifications.remove(id).is_some() {
            self.dirty.insert(RecordKey::VolumeModification(id.clone()));
        }
    }
}
