//! Snapshot sharing (EC2's `createVolumePermission`): who besides the owner
//! may create volumes from a snapshot and read it. Only the owner changes it;
//! to anyone else the snapshot does not exist here (the gateway tells a
//! grantee it is not authorized before it gets this far).

use super::messages::{CommandOutput, CommandResult, MetaError, SharingChange};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::{RecordKey, Snapshot, SnapshotSharing};

impl Records {
    /// True when `account` owns snapshot `s` or it is shared with `account`.
    pub(super) fn usable_by(&self, s: &Snapshot, account: &str) -> bool {
        s.owner == account || self.sharing.get(&s.id).is_some_and(|sh| sh.grants(account))
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
