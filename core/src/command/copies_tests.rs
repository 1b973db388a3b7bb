//! CopySnapshot as `Records::apply` handles it: within a placement domain
//! a completed record on the source's manifest that outlives its source;
//! into another a pending copy with a transfer job and a hold on the
//! source's root, at most 20 at once per destination; only completed
//! sources the caller may use, and refusals change nothing.

use super::copy_job_tests::{self, complete, create, job, op, snapshot, with_volume};
use super::messages::{
    Command, CommandOutput, CopyOutcome, JobOp, MetaError, Query, QueryOutput, SharingChange,
    MAX_CONCURRENT_COPIES,
};
use super::sharing_tests::{add, share};
use super::store::Records;
use crate::ids::{OutpostId, SnapshotId};
use crate::records::{CopyJobKind, Holder, Snapshot, SnapshotState};

const OWNER: &str = "123456789012";
const FRIEND: &str = "111122223333";

fn copy_of(r: &mut Records, source: &SnapshotId, owner: &str) -> Result<Snapshot, MetaError> {
    let mut copy = snapshot(&copy_job_tests::volume(None), 50, None);
    copy.owner = owner.into();
    copy.description = "the copy".into();
    match r.apply(Command::CopySnapshot { copy, source: source.clone() })? {
        CommandOutput::Snapshot(s) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_copy_shares_the_manifest_and_outlives_its_source() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    // Pending: nothing to copy yet, and nothing changes.
    let before = r.query(&Query::Snapshots);
    assert!(matches!(copy_of(&mut r, &s.id, OWNER), Err(MetaError::IncorrectState(_))));
    assert_eq!(r.query(&Query::Snapshots), before);
    complete(&mut r, &s.id, "gw", 2).unwrap();
    let src = match r.query(&Query::Snapshot(s.id.clone())) {
        QueryOutput::Snapshot(Some(s)) => s,
        other => panic!("{other:?}"),
    };

    let copy = copy_of(&mut r, &s.id, OWNER).unwrap();
    assert_ne!(copy.id, s.id);
    assert_eq!(copy.state, SnapshotState::Completed);
    assert_eq!((copy.progress, copy.manifest_root), (100, src.manifest_root));
    assert_eq!((copy.description.as_str(), copy.parent.clone()), ("the copy", None));
    assert_eq!(copy.full_size_bytes, src.full_size_bytes);
    r.apply(Command::DeleteSnapshot { id: s.id.clone() }).unwrap();
    match r.query(&Query::Snapshot(copy.id.clone())) {
        QueryOutput::Snapshot(Some(c)) => assert_eq!(c.manifest_root, src.manifest_root),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_an_owner_or_a_grantee_copies() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    complete(&mut r, &s.id, "gw", 2).unwrap();
    assert_eq!(
        copy_of(&mut r, &s.id, FRIEND).unwrap_err(),
        MetaError::SnapshotNotFound(s.id.to_string())
    );
    share(&mut r, &s.id, OWNER, add(&[FRIEND], false)).unwrap();
    let theirs = copy_of(&mut r, &s.id, FRIEND).unwrap();
    assert_eq!(theirs.owner, FRIEND);
    // The grantee's copy is its own: sharing taken back, it stays.
    share(&mut r, &s.id, OWNER, SharingChange::Reset).unwrap();
    assert!(matches!(r.query(&Query::Snapshot(theirs.id)), QueryOutput::Snapshot(Some(_))));
}

fn snap(r: &Records, id: &SnapshotId) -> Snapshot {
    match r.query(&Query::Snapshot(id.clone())) {
        QueryOutput::Snapshot(Some(s)) => s,
        other => panic!("{other:?}"),
    }
}

/// A completed regional snapshot of a new volume.
fn completed_source() -> (Records, Snapshot) {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    complete(&mut r, &s.id, "gw", 2).unwrap();
    let s = snap(&r, &s.id);
    (r, s)
}

fn transfer(
    r: &mut Records,
    source: &SnapshotId,
    to: Option<&OutpostId>,
) -> Result<Snapshot, MetaError> {
    let mut copy = snapshot(&copy_job_tests::volume(None), 50, to.cloned());
    copy.description = "moved".into();
    let cmd = Command::TransferSnapshot {
        copy,
        source: source.clone(),
        job_owner: "gw".into(),
        lease_expires_ms: 10_000,
    };
    match r.apply(cmd)? {
        CommandOutput::Snapshot(s) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_transfer_is_pending_with_a_job_and_a_hold_until_it_finishes() {
    let (mut r, src) = completed_source();
    let root = src.manifest_root.unwrap();
    let op_id = OutpostId::generate();
    let copy = transfer(&mut r, &src.id, Some(&op_id)).unwrap();
    assert_eq!((copy.state, copy.progress), (SnapshotState::Pending, 0));
    assert_eq!((copy.outpost.as_ref(), copy.manifest_root), (Some(&op_id), None));
    assert_eq!(copy.volume_id.as_str(), "vol-ffffffff");
    let j = job(&r, &copy.id).expect("a transfer job");
    let want = CopyJobKind::Transfer { source: src.id.clone(), root, from: None };
    assert_eq!((j.kind, j.owner.as_deref()), (want, Some("gw")));
    let hold = match r.query(&Query::Hold(Holder::Snapshot(copy.id.clone()))) {
        QueryOutput::Hold(h) => h.expect("a hold"),
        other => panic!("{other:?}"),
    };
    assert_eq!(hold.roots, vec![root]);

    // The source deleted mid-copy: the hold still names its root.
    r.apply(Command::DeleteSnapshot { id: src.id.clone() }).unwrap();
    assert!(matches!(
        r.query(&Query::Hold(Holder::Snapshot(copy.id.clone()))),
        QueryOutput::Hold(Some(_))
    ));
    let outcome = CopyOutcome::Completed { manifest_root: root, full_size_bytes: 7 };
    op(&mut r, &copy.id, "gw", 20, JobOp::Finish { outcome }).unwrap();
    let done = snap(&r, &copy.id);
    assert_eq!((done.state, done.manifest_root), (SnapshotState::Completed, Some(root)));
    assert!(job(&r, &copy.id).is_none());
    assert!(matches!(r.query(&Query::Hold(Holder::Snapshot(copy.id))), QueryOutput::Hold(None)));
}

#[test]
fn more_than_twenty_copies_to_one_destination_are_refused() {
    let (mut r, src) = completed_source();
    let op_a = OutpostId::generate();
    let first: Vec<Snapshot> = (0..MAX_CONCURRENT_COPIES)
        .map(|_| transfer(&mut r, &src.id, Some(&op_a)).unwrap())
        .collect();
    let before = r.query(&Query::Snapshots);
    let refused = transfer(&mut r, &src.id, Some(&op_a)).unwrap_err();
    assert!(matches!(refused, MetaError::ResourceLimitExceeded(_)), "{refused:?}");
    assert_eq!(r.query(&Query::Snapshots), before, "a refusal changes nothing");
    // Another destination has its own limit, and an ended copy frees a place.
    transfer(&mut r, &src.id, Some(&OutpostId::generate())).unwrap();
    let failed = CopyOutcome::Failed { message: "x".into() };
    op(&mut r, &first[0].id, "gw", 20, JobOp::Finish { outcome: failed }).unwrap();
    transfer(&mut r, &src.id, Some(&op_a)).unwrap();
}

#[test]
fn a_transfer_needs_another_domain_and_a_usable_completed_source() {
    let (mut r, src) = completed_source();
    let before = r.query(&Query::Snapshots);
    // Into its own domain a copy moves nothing: that is CopySnapshot's.
    assert!(matches!(transfer(&mut r, &src.id, None), Err(MetaError::IncorrectState(_))));
    let mut theirs = snapshot(&copy_job_tests::volume(None), 4, Some(OutpostId::generate()));
    theirs.owner = FRIEND.into();
    let cmd = Command::TransferSnapshot {
        copy: theirs,
        source: src.id.clone(),
        job_owner: "gw".into(),
        lease_expires_ms: 1,
    };
    assert_eq!(r.apply(cmd.clone()).unwrap_err(), MetaError::SnapshotNotFound(src.id.to_string()));
    assert_eq!(r.query(&Query::Snapshots), before, "refusals change nothing");
    // Shared with the stranger, it may be copied.
    share(&mut r, &src.id, OWNER, add(&[FRIEND], false)).unwrap();
    assert!(matches!(r.apply(cmd), Ok(CommandOutput::Snapshot(s)) if s.owner == FRIEND));
    // A pending source has nothing to copy yet.
    let (mut r, v) = with_volume();
    let pending = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    let op_id = OutpostId::generate();
    assert!(matches!(
        transfer(&mut r, &pending.id, Some(&op_id)),
        Err(MetaError::IncorrectState(_))
    ));
}
