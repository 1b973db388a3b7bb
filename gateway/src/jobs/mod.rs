//! Job orchestration: snapshot copies and volume restores. The gateway
//! carries no volume bytes; it tells volume hosts what to do, follows their
//! progress and commits each step to the metadata group. The exception is
//! CopySnapshot between the region and an Outpost ([`transfer`]), whose
//! chunks pass through the gateway holding its job.
//!
//! Snapshot copies are leased jobs in the metadata group ([`copy`] has the
//! whole story, [`lease`] the lease protocol): CreateSnapshot writes the
//! snapshot and its job, leased to this gateway, freezes the volume and
//! answers; a background task runs the host's `Copy`, renews the lease,
//! commits checkpoints and progress, and ends the snapshot. Every gateway
//! also runs a worker ([`runner`]) that scans for jobs whose lease lapsed
//! (their gateway died) and resumes them. Every call to a volume host goes
//! through [`host`]. CopySnapshot into another placement domain is a job of
//! the same kind, leased and resumed alike, run by [`transfer`].
//!
//! Volumes ([`volumes`]): the work that ends `creating` and `deleting`
//! runs as jobs, never inside the request that started it, so a request
//! that times out or loses its client leaves nothing half done. A worker
//! ([`volume_sweep`]) finishes, periodically, every volume left `creating`
//! (the host's CreateVolume is idempotent; with lazy load it returns as soon
//! as the volume exists, and the volume turns `available`) or `deleting`
//! longer than `volume_stall_ms` with no job for it here. These are not
//! leased: two gateways sweeping one volume both call the host, which is
//! harmless because every step is idempotent.
//!
//! ModifyVolume ([`modify`]): the record takes the new settings at once;
//! the host then grows the volume and the modification completes, in the
//! request, or, if that failed, from the volume sweep.

mod attempt;
pub mod copy;
pub mod host;
pub mod lease;
pub mod modify;
pub mod runner;
mod transfer;
pub mod volume_sweep;
pub mod volumes;

use crate::ctx::Ctx;
use std::sync::Arc;

/// Starts this gateway's job workers: the copy job runner
/// ([`runner::spawn_runner`]) and the sweep that finishes the volumes left
/// `creating` or `deleting` ([`volume_sweep::spawn_sweep`]).
pub fn spawn_workers(ctx: &Arc<Ctx>) {
    runner::spawn_runner(ctx);
    volume_sweep::spawn_sweep(ctx);
}
