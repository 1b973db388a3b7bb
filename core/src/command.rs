//! Commands change records; queries read them. Both travel inside Raft log
//! entries and the metadata client API as serde values, and are applied by
//! [`Records::apply`], a pure function of the current records and the command
//! (the proposer chooses ids and timestamps, so every member applies alike).
//!
//! This file only dispatches. The vocabulary (commands, outputs, errors,
//! queries) is in `messages`, the records and their primitives in `store`,
//! idempotency tokens in `tokens`, garbage collection's holds and generation
//! in `holds`, and each family of commands applies in its
//! own module: `nodes`, `volumes`, `modifications`, `snapshots`, `staging` (EBS direct),
//! `copy_jobs`, `tags`, `accounts` and `sharing`. Those modules import only `messages` and `store`,
//! never this file nor each other.

mod accounts;
#[cfg(test)]
mod accounts_tests;
mod copies;
#[cfg(test)]
mod copies_tests;
#[cfg(test)]
mod copy_job_fence_tests;
#[cfg(test)]
mod copy_job_tests;
mod copy_jobs;
mod holds;
#[cfg(test)]
mod holds_tests;
mod index;
mod messages;
mod modifications;
#[cfg(test)]
mod modifications_tests;
mod nodes;
#[cfg(test)]
mod nodes_tests;
mod scan;
#[cfg(test)]
mod scan_tests;
mod sharing;
#[cfg(test)]
mod sharing_tests;
mod snapshots;
mod staging;
mod store;
mod tags;
mod tiers;
#[cfg(test)]
mod tiers_tests;
mod tokens;
mod volumes;

pub use messages::{
    Command, CommandOutput, CommandResult, CopyOutcome, Counts, GcHolders, JobOp, MetaError,
    NodeEntry, Page, Query, QueryOutput, SharingChange, SnapshotScan, TierOp, VolumeScan,
    DIRECT_VOLUME_ID, MAX_CONCURRENT_COPIES, MAX_SCAN_PAGE,
};
pub use snapshots::MAX_PENDING_SNAPSHOTS;
pub use store::Records;

impl Records {
    /// Applies one command: every member, given the same records and command,
    /// makes the same change and gives the same answer.
    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::RegisterNode(n) => self.register_node(n),
            Command::CreateVolume { volume, client_token } => {
                self.create_volume(volume, client_token)
            }
            Command::SetVolumeState { id, state } => self.set_volume_state(id, state),
            Command::DeleteVolume { id } => self.delete_volume(id),
            Command::CreateSnapshot { snapshot, client_token, job_owner, lease_expires_ms } => {
                self.create_snapshot(snapshot, client_token, job_owner, lease_expires_ms)
            }
            Command::CopyJob { id, owner, now_ms, op } => self.apply_job_op(id, owner, now_ms, op),
            Command::StartSnapshot { snapshot, client_token, fingerprint } => {
                self.start_snapshot(snapshot, client_token, fingerprint)
            }
            Command::SnapshotProgress { id, progress } => self.snapshot_progress(id, progress),
            Command::CompleteSnapshot { id, manifest_root, full_size_bytes, at_ms } => {
                self.complete_snapshot(id, manifest_root, full_size_bytes, at_ms)
            }
            Command::FailSnapshot { id, message, at_ms } => self.fail_snapshot(id, message, at_ms),
            Command::DeleteSnapshot { id } => self.delete_snapshot(id),
            Command::CreateTags { resources, tags } => self.create_tags(resources, tags),
            Command::DeleteTags { resources, tags } => self.delete_tags(resources, tags),
            Command::GcFence { generation } => self.gc_fence(generation),
            Command::ReleaseHold { holder } => self.release_hold(&holder),
            Command::DrainNode { node_id, at_ms } => self.drain_node(&node_id, at_ms),
            Command::RemoveNode { node_id, at_ms } => self.remove_node(&node_id, at_ms),
            Command::NodeDown { node_id, at_ms } => self.node_down(&node_id, at_ms),
            Command::NodeUp { node_id, at_ms } => self.node_up(&node_id, at_ms),
            Command::ModifyVolume { id, owner, target, at_ms } => {
                self.modify_volume(id, &owner, target, at_ms)
            }
            Command::FinishModification { id, at_ms } => self.finish_modification(id, at_ms),
            Command::RaiseSnapshotVolumeSize { id, size_gib } => {
                self.raise_snapshot_volume_size(id, size_gib)
            }
            Command::CreateAccount(a) => self.create_account(a),
            Command::CreateAccessKey(k) => self.create_access_key(k),
            Command::RevokeAccessKey { id, at_ms } => self.revoke_access_key(&id, at_ms),
            Command::EnsureSecret(s) => self.ensure_secret(s),
            Command::ShareSnapshot { id, owner, change } => self.share_snapshot(id, &owner, change),
            Command::CopySnapshot { copy, source } => self.copy_snapshot(copy, &source),
            Command::TransferSnapshot { copy, source, job_owner, lease_expires_ms } => {
                self.transfer_snapshot(copy, &source, job_owner, lease_expires_ms)
            }
            Command::Tier { id, now_ms, op } => self.tier(id, now_ms, op),
        }
    }
}
