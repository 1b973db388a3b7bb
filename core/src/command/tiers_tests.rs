//! Storage tiers as `Records::apply` handles them: only the owner asks,
//! only completed unshared snapshots are archived, steps change nothing
//! unless their gateway holds the work, a restore holds its chunks until it
//! completes, temporary restores expire, permanent ones and deletes purge
//! the archive copy before the record goes.

use super::copy_job_tests::{complete, create, snapshot, with_volume};
use super::messages::{Command, CommandOutput, MetaError, Query, QueryOutput, TierOp};
use super::sharing_tests::{add, share};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::Holder;
use crate::tiering::{ArchiveCopy, SnapshotTiering, TierStatus};

const OWNER: &str = "123456789012";
const DAY: u64 = 86_400_000;

fn tier(
    r: &mut Records,
    id: &SnapshotId,
    now: u64,
    op: TierOp,
) -> Result<CommandOutput, MetaError> {
    r.apply(Command::Tier { id: id.clone(), now_ms: now, op })
}

fn record(r: &Records, id: &SnapshotId) -> Option<SnapshotTiering> {
    match r.query(&Query::Tierings) {
        QueryOutput::Tierings(all) => all.into_iter().find(|t| &t.snapshot_id == id),
        other => panic!("{other:?}"),
    }
}

fn tier_of(r: &Records, id: &SnapshotId) -> String {
    match r.query(&Query::Snapshot(id.clone())) {
        QueryOutput::Snapshot(Some(s)) => s.storage_tier,
        other => panic!("{other:?}"),
    }
}

fn held(r: &Records, id: &SnapshotId) -> bool {
    matches!(r.query(&Query::Hold(Holder::Snapshot(id.clone()))), QueryOutput::Hold(Some(_)))
}

fn copy() -> ArchiveCopy {
    ArchiveCopy { prefix: "snapshots/x".into(), objects: 2, bytes: 10 }
}

fn archived() -> (Records, SnapshotId) {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    complete(&mut r, &s.id, "gw", 2).unwrap();
    tier(&mut r, &s.id, 10, TierOp::Archive { owner: OWNER.into() }).unwrap();
    tier(&mut r, &s.id, 11, TierOp::Claim { gateway: "gw-a".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &s.id, 12, TierOp::Archived { gateway: "gw-a".into(), archive: copy() }).unwrap();
    (r, s.id)
}

#[test]
fn archiving_needs_the_owner_a_completed_unshared_snapshot_and_the_worker() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    let ask = TierOp::Archive { owner: OWNER.into() };
    assert!(matches!(tier(&mut r, &s.id, 5, ask.clone()), Err(MetaError::IncorrectState(_))));
    complete(&mut r, &s.id, "gw", 2).unwrap();
    let other = TierOp::Archive { owner: "111122223333".into() };
    assert!(matches!(tier(&mut r, &s.id, 5, other), Err(MetaError::SnapshotNotFound(_))));
    share(&mut r, &s.id, OWNER, add(&["111122223333"], false)).unwrap();
    assert!(matches!(
        tier(&mut r, &s.id, 5, ask.clone()),
        Err(MetaError::OperationNotPermitted(_))
    ));
    assert!(record(&r, &s.id).is_none(), "refusals change nothing");
    r.apply(Command::ShareSnapshot {
        id: s.id.clone(),
        owner: OWNER.into(),
        change: super::messages::SharingChange::Reset,
    })
    .unwrap();

    tier(&mut r, &s.id, 10, ask.clone()).unwrap();
    assert_eq!(record(&r, &s.id).unwrap().status, TierStatus::ArchivalInProgress);
    assert!(matches!(tier(&mut r, &s.id, 10, ask), Err(MetaError::IncorrectState(_))));
    // A gateway that does not hold the work changes nothing.
    tier(&mut r, &s.id, 11, TierOp::Claim { gateway: "gw-a".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &s.id, 12, TierOp::Claim { gateway: "gw-b".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &s.id, 13, TierOp::Archived { gateway: "gw-b".into(), archive: copy() }).unwrap();
    assert_eq!(tier_of(&r, &s.id), "standard");
    tier(&mut r, &s.id, 14, TierOp::Archived { gateway: "gw-a".into(), archive: copy() }).unwrap();
    let t = record(&r, &s.id).unwrap();
    assert_eq!(
        (t.status, t.archival_complete_ms, t.progress),
        (TierStatus::ArchivalCompleted, Some(14), 100)
    );
    assert_eq!(tier_of(&r, &s.id), "archive");
    assert!(!t.needs_chunks() && !t.readable());
    // A lapsed lease may be taken by another gateway.
    let (mut r, id) = archived();
    tier(&mut r, &id, 20, TierOp::Restore { owner: OWNER.into(), days: Some(1) }).unwrap();
    tier(&mut r, &id, 21, TierOp::Claim { gateway: "gw-a".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 50, TierOp::Claim { gateway: "gw-b".into(), lease_ms: 100 }).unwrap();
    assert_eq!(record(&r, &id).unwrap().worker.as_deref(), Some("gw-a"));
    tier(&mut r, &id, 121, TierOp::Claim { gateway: "gw-b".into(), lease_ms: 100 }).unwrap();
    assert_eq!(record(&r, &id).unwrap().worker.as_deref(), Some("gw-b"));
}

#[test]
fn a_temporary_restore_holds_completes_expires_and_can_be_made_permanent() {
    let (mut r, id) = archived();
    let restore = |days| TierOp::Restore { owner: OWNER.into(), days };
    tier(&mut r, &id, 100, restore(Some(2))).unwrap();
    let t = record(&r, &id).unwrap();
    assert_eq!(t.status, TierStatus::TemporaryRestoreInProgress);
    assert!(held(&r, &id), "a restore in progress holds what it puts");
    tier(&mut r, &id, 101, TierOp::Claim { gateway: "gw".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 200, TierOp::Restored { gateway: "gw".into() }).unwrap();
    let t = record(&r, &id).unwrap();
    assert_eq!(
        (t.status, t.restore_expiry_ms),
        (TierStatus::TemporaryRestoreCompleted, Some(200 + 2 * DAY))
    );
    assert!(t.needs_chunks() && t.readable() && !held(&r, &id));
    assert_eq!(tier_of(&r, &id), "archive");
    // A new period, from now; expiry only once due.
    tier(&mut r, &id, 1000, restore(Some(5))).unwrap();
    assert_eq!(record(&r, &id).unwrap().restore_expiry_ms, Some(1000 + 5 * DAY));
    tier(&mut r, &id, 1000 + DAY, TierOp::Expire).unwrap();
    assert_eq!(record(&r, &id).unwrap().status, TierStatus::TemporaryRestoreCompleted);
    tier(&mut r, &id, 1000 + 5 * DAY, TierOp::Expire).unwrap();
    let t = record(&r, &id).unwrap();
    assert_eq!((t.status, t.restore_expiry_ms), (TierStatus::ArchivalCompleted, None));
    assert!(t.archive.is_some(), "the archive copy stays");

    // Restored again, then made permanent: standard, and the copy purged.
    tier(&mut r, &id, 2000, restore(Some(1))).unwrap();
    tier(&mut r, &id, 2001, TierOp::Claim { gateway: "gw".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 2002, TierOp::Restored { gateway: "gw".into() }).unwrap();
    tier(&mut r, &id, 2003, restore(None)).unwrap();
    let t = record(&r, &id).unwrap();
    assert_eq!((t.status, t.purge), (TierStatus::PermanentRestoreCompleted, true));
    assert_eq!(tier_of(&r, &id), "standard");
    tier(&mut r, &id, 2004, TierOp::Claim { gateway: "gw".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 2005, TierOp::Purged { gateway: "gw".into() }).unwrap();
    let t = record(&r, &id).unwrap();
    assert!(t.archive.is_none() && !t.purge);
    // It may be archived again.
    tier(&mut r, &id, 3000, TierOp::Archive { owner: OWNER.into() }).unwrap();
}

#[test]
fn a_failed_restore_lets_go_and_a_deleted_snapshot_purges_then_goes() {
    let (mut r, id) = archived();
    tier(&mut r, &id, 100, TierOp::Restore { owner: OWNER.into(), days: None }).unwrap();
    tier(&mut r, &id, 101, TierOp::Claim { gateway: "gw".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 102, TierOp::Failed { gateway: "gw".into(), message: "no".into() }).unwrap();
    let t = record(&r, &id).unwrap();
    assert_eq!(
        (t.status, t.status_detail.as_deref()),
        (TierStatus::PermanentRestoreFailed, Some("no"))
    );
    assert!(!held(&r, &id) && !t.readable());
    assert_eq!(tier_of(&r, &id), "archive");

    r.apply(Command::DeleteSnapshot { id: id.clone() }).unwrap();
    assert!(record(&r, &id).unwrap().purge, "the archive copy is to be deleted");
    tier(&mut r, &id, 200, TierOp::Claim { gateway: "gw".into(), lease_ms: 100 }).unwrap();
    tier(&mut r, &id, 201, TierOp::Purged { gateway: "gw".into() }).unwrap();
    assert!(record(&r, &id).is_none());
}
