//! Snapshot sharing (EC2's `createVolumePermission`): who besides the owner
//! may create volumes from a snapshot and read it. Only the owner changes it;
//! to anyone else the snapshot does not exist here (the gateway tells a
//! grantee it is not authorized before it gets this far). Also what sharing
//! allows: copying a snapshot one may use into a snapshot of one's own.

use super::messages::{CommandOutput, CommandResult, MetaError, SharingChange, DIRECT_VOLUME_ID};
use super::store::Records;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{RecordKey, Snapshot, SnapshotSharing, SnapshotState};

impl Records {
    /// True when `account` owns snapshot `s` or it is shared with `account`.
    fn usable_by(&self, s: &Snapshot, account: &str) -> bool {
        s.owner == account || self.sharing.get(&s.id).is_some_and(|sh| sh.grants(account))
    }

    /// CopySnapshot without moving data: a new completed record on the
    /// source's manifest. GC keeps the chunks while either exists; a pass
    /// reads all snapshots at one instant, and the copy exists before the
    /// source can be deleted, so every pass sees one of them.
    pub(super) fn copy_snapshot(
        &mut self,
        mut copy: Snapshot,
        source: &SnapshotId,
    ) -> CommandResult {
        let src = self.snapshot(source)?;
        if !self.usable_by(&src, &copy.owner) {
            return Err(MetaError::SnapshotNotFound(source.to_string()));
        }
        let Some(root) = src.manifest_root.filter(|_| src.state == SnapshotState::Completed) else {
            return Err(MetaError::IncorrectState(format!(
                "Snapshot '{source}' is in state '{}'; only completed snapshots can be copied.",
                src.state.as_str()
            )));
        };
        if src.outpost.is_some() {
            return Err(MetaError::IncorrectState(format!(
                "Snapshot '{source}' is a local snapshot of an Outpost; its copy would move data."
            )));
        }
        if self.snapshots.contains_key(&copy.id) {
            return Err(MetaError::InvalidId(copy.id.to_string()));
        }
        // Like AWS, a copy names no real volume.
        copy.volume_id = VolumeId::parse(DIRECT_VOLUME_ID).unwrap_or(src.volume_id.clone());
        copy.volume_size_gib = src.volume_size_gib;
        copy.encrypted = src.encrypted;
        copy.outpost = None;
        copy.parent = None;
        copy.completion_time_ms = Some(copy.completion_time_ms.unwrap_or(copy.start_time_ms));
        if copy.state == SnapshotState::Error {
            // The proposer found the copy invalid (a bad presigned URL): it
            // fails as EC2's do, in `error` with the reason, holding nothing.
            copy.progress = 0;
            copy.manifest_root = None;
            copy.full_size_bytes = None;
            self.put_snapshot(copy.clone());
            return Ok(CommandOutput::Snapshot(copy));
        }
        copy.state = SnapshotState::Completed;
        copy.state_message = None;
        copy.progress = 100;
        copy.storage_tier = src.storage_tier.clone();
        copy.manifest_root = Some(root);
        copy.full_size_bytes = src.full_size_bytes;
        self.put_snapshot(copy.clone());
        Ok(CommandOutput::Snapshot(copy))
    }

    pub(super) fn share_snapshot(
        &mut self,
        id: SnapshotId,
        owner: &str,
        change: SharingChange,
    ) -> CommandResult {
        let snapshot = self.snapshot(&id)?;
        if snapshot.owner != owner {
            return Err(MetaError::SnapshotNotFound(id.to_string()));
        }
        let mut sharing =
            self.sharing.get(&id).cloned().unwrap_or_else(|| SnapshotSharing::new(id.clone()));
        match change {
            SharingChange::Add { user_ids, public } => {
                if public && snapshot.encrypted {
                    return Err(MetaError::OperationNotPermitted(format!(
                        "Encrypted snapshots cannot be made public; snapshot {id} is encrypted."
                    )));
                }
                sharing.user_ids.extend(user_ids);
                sharing.public |= public;
            }
            SharingChange::Remove { user_ids, public } => {
                for u in &user_ids {
                    sharing.user_ids.remove(u);
                }
                sharing.public &= !public;
            }
            SharingChange::Reset => sharing = SnapshotSharing::new(id.clone()),
        }
        if sharing.is_empty() {
            self.sharing.remove(&id);
        } else {
            self.sharing.insert(id.clone(), sharing);
        }
        self.dirty.insert(RecordKey::Sharing(id));
        Ok(CommandOutput::Done)
    }
}
