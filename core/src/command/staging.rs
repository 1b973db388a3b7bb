//! EBS direct staging: StartSnapshot, a pending snapshot that no volume backs
//! (its volume id is the synthetic `DIRECT_VOLUME_ID`) and that has no copy
//! job: the client writes its blocks, and the snapshot then completes or fails
//! like any other (see `snapshots`).
//!
//! Invariants it keeps: a parent must be a completed snapshot of the same
//! owner (another owner's snapshot is reported as not found), and its tokens
//! are scoped to StartSnapshot, so a token also used by another operation
//! never collides.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::{Holder, Snapshot, SnapshotState};

impl Records {
    pub(super) fn start_snapshot(
        &mut self,
        snapshot: Snapshot,
        client_token: Option<String>,
        fingerprint: String,
    ) -> CommandResult {
        // Scoped, so a token also used by another operation never collides.
        let client_token = client_token.map(|t| format!("StartSnapshot:{t}"));
        if let Some(id) = self.token_hit(&snapshot.owner, &client_token, &fingerprint)? {
            let existing = SnapshotId::parse(&id).and_then(|s| self.snapshots.get(&s).cloned());
            if let Some(s) = existing {
                return Ok(CommandOutput::Snapshot(s));
            }
        }
        if let Some(parent) = &snapshot.parent {
            match self.snapshots.get(parent) {
                Some(p) if p.owner != snapshot.owner => {
                    return Err(MetaError::SnapshotNotFound(parent.to_string()))
                }
                Some(p) if p.state == SnapshotState::Completed => {}
                Some(p) => {
                    return Err(MetaError::IncorrectState(format!(
                        "Snapshot '{parent}' is {}, not completed.",
                        p.state.as_str()
                    )))
                }
                None => return Err(MetaError::SnapshotNotFound(parent.to_string())),
            }
        }
        self.remember_token(&snapshot.owner, client_token, fingerprint, snapshot.id.to_string());
        let roots = snapshot.parent.as_ref().and_then(|p| self.completed_root(p));
        self.hold(Holder::Snapshot(snapshot.id.clone()), roots.into_iter().collect());
        self.put_snapshot(snapshot.clone());
        Ok(CommandOutput::Snapshot(snapshot))
    }
}
