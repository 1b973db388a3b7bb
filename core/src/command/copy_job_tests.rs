//! Copy jobs as `Records::apply` handles them: creation with the snapshot,
//! leases, checkpoints, host-down bookkeeping, completion, persistence.

use super::messages::{
    Command, CommandOutput, CommandResult, CopyOutcome, JobOp, MetaError, Query, QueryOutput,
};
use super::snapshots::MAX_PENDING_SNAPSHOTS;
use super::store::Records;
use crate::block::ChunkId;
use crate::ids::{OutpostId, SnapshotId, VolumeId};
use crate::records::{
    CopyJob, CopyJobKind, RecordKey, Snapshot, SnapshotState, Volume, VolumeState, RECORD_VERSION,
};
use std::collections::BTreeMap;

pub(super) const LEASE: u64 = 10_000;

pub(super) fn volume(outpost: Option<OutpostId>) -> Volume {
    Volume {
        version: RECORD_VERSION,
        id: VolumeId::generate(),
        owner: "123456789012".into(),
        size_gib: 1,
        az: "cairn-1a".into(),
        outpost,
        host_node: "chunk-1a".into(),
        volume_type: "gp3".into(),
        iops: None,
        throughput: None,
        encrypted: false,
        state: VolumeState::Available,
        create_time_ms: 1,
        snapshot_id: None,
        tags: BTreeMap::new(),
    }
}

pub(super) fn snapshot(v: &Volume, start: u64, outpost: Option<OutpostId>) -> Snapshot {
    Snapshot {
        version: RECORD_VERSION,
        id: SnapshotId::generate(),
        volume_id: v.id.clone(),
        owner: v.owner.clone(),
        state: SnapshotState::Pending,
        state_message: None,
        progress: 0,
        start_time_ms: start,
        completion_time_ms: None,
        description: String::new(),
        volume_size_gib: v.size_gib,
        encrypted: false,
        outpost,
        storage_tier: "standard".into(),
        manifest_root: None,
        // Whatever the proposer says, apply decides.
        parent: Some(SnapshotId::generate()),
        full_size_bytes: None,
        tags: BTreeMap::new(),
    }
}

pub(super) fn with_volume() -> (Records, Volume) {
    let mut r = Records::default();
    let v = volume(None);
    r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).expect("volume");
    (r, v)
}

/// Creates a snapshot through apply with its job leased to `gw` from `now`.
pub(super) fn create(
    r: &mut Records,
    s: Snapshot,
    gw: &str,
    now: u64,
) -> Result<Snapshot, MetaError> {
    let cmd = Command::CreateSnapshot {
        snapshot: s,
        client_token: None,
        job_owner: gw.into(),
        lease_expires_ms: now + LEASE,
    };
    match r.apply(cmd)? {
        CommandOutput::Snapshot(s) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

pub(super) fn op(r: &mut Records, id: &SnapshotId, gw: &str, now: u64, op: JobOp) -> CommandResult {
    r.apply(Command::CopyJob { id: id.clone(), owner: gw.into(), now_ms: now, op })
}

pub(super) fn job(r: &Records, id: &SnapshotId) -> Option<CopyJob> {
    match r.query(&Query::CopyJobs) {
        QueryOutput::CopyJobs(jobs) => jobs.into_iter().find(|j| &j.snapshot_id == id),
        other => panic!("unexpected {other:?}"),
    }
}

fn snap(r: &Records, id: &SnapshotId) -> Snapshot {
    match r.query(&Query::Snapshot(id.clone())) {
        QueryOutput::Snapshot(Some(s)) => s,
        other => panic!("unexpected {other:?}"),
    }
}

pub(super) fn complete(r: &mut Records, id: &SnapshotId, gw: &str, now: u64) -> CommandResult {
    let outcome =
        CopyOutcome::Completed { manifest_root: ChunkId::of(b"root"), full_size_bytes: 7 };
    op(r, id, gw, now, JobOp::Finish { outcome })
}

#[test]
fn create_snapshot_creates_a_leased_job_and_picks_the_parent() {
    let (mut r, v) = with_volume();
    let first = create(&mut r, snapshot(&v, 100, None), "gw-a", 100).expect("first");
    assert_eq!(first.parent, None, "a first snapshot has no parent");
    let j = job(&r, &first.id).expect("job created with the snapshot");
    assert_eq!(j.kind, CopyJobKind::Snapshot);
    assert_eq!(j.volume_id, v.id);
    assert_eq!(j.owner.as_deref(), Some("gw-a"));
    assert_eq!(j.lease_expires_ms, 100 + LEASE);
    assert_eq!((j.checkpoint_block, j.acquisitions, j.host_down_since_ms), (0, 1, None));

    // A pending snapshot is no parent.
    let second = create(&mut r, snapshot(&v, 200, None), "gw-a", 200).expect("second");
    assert_eq!(second.parent, None);
    complete(&mut r, &first.id, "gw-a", 300).expect("complete first");
    complete(&mut r, &second.id, "gw-a", 400).expect("complete second");
    // The latest completed one by start time, not by completion order.
    let third = create(&mut r, snapshot(&v, 500, None), "gw-a", 500).expect("third");
    assert_eq!(third.parent, Some(second.id.clone()));
    // A local snapshot on an Outpost never builds on a regional one.
    let op_id = OutpostId::generate();
    let local = create(&mut r, snapshot(&v, 600, Some(op_id)), "gw-a", 600).expect("local");
    assert_eq!(local.parent, None);
}

#[test]
fn leases_exclude_other_gateways_until_they_lapse() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 0, None), "gw-a", 0).expect("snapshot");
    let acquire = JobOp::Acquire { lease_ms: LEASE };

    // gw-b cannot take a live lease; the answer shows who holds it.
    let CommandOutput::CopyJob(j) = op(&mut r, &s.id, "gw-b", 5_000, acquire.clone()).unwrap()
    else {
        panic!("job expected")
    };
    assert_eq!(j.owner.as_deref(), Some("gw-a"));
    // The holder renews; a lapsed lease at the old expiry is not lapsed any more.
    op(&mut r, &s.id, "gw-a", 8_000, JobOp::Renew { lease_ms: LEASE }).unwrap();
    op(&mut r, &s.id, "gw-b", 12_000, acquire.clone()).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().owner.as_deref(), Some("gw-a"));
    // Once it lapses, gw-b takes over.
    op(&mut r, &s.id, "gw-b", 18_000, acquire.clone()).unwrap();
    let j = job(&r, &s.id).unwrap();
    assert_eq!((j.owner.as_deref(), j.lease_expires_ms, j.acquisitions), (Some("gw-b"), 28_000, 2));
    // Re-acquiring one's own job only extends the lease.
    op(&mut r, &s.id, "gw-b", 19_000, acquire).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().acquisitions, 2);

    // The old holder's steps change nothing, and it cannot end the snapshot.
    let before = job(&r, &s.id).unwrap();
    op(&mut r, &s.id, "gw-a", 19_500, JobOp::Renew { lease_ms: LEASE }).unwrap();
    let cp = JobOp::Checkpoint { checkpoint_block: 100, progress: 50, lease_ms: LEASE };
    op(&mut r, &s.id, "gw-a", 19_500, cp).unwrap();
    op(&mut r, &s.id, "gw-a", 19_500, JobOp::HostDown { error: "x".into() }).unwrap();
    let fail = JobOp::Finish { outcome: CopyOutcome::Failed { message: "stale".into() } };
    let CommandOutput::Snapshot(after) = op(&mut r, &s.id, "gw-a", 19_500, fail).unwrap() else {
        panic!("snapshot expected")
    };
    assert_eq!(after.state, SnapshotState::Pending);
    assert_eq!(job(&r, &s.id).unwrap(), before);
    assert_eq!(snap(&r, &s.id).progress, 0);
}

#[test]
fn checkpoints_raise_progress_and_host_down_counts_from_the_first_failure() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 0, None), "gw", 0).expect("snapshot");
    let cp =
        |block, progress| JobOp::Checkpoint { checkpoint_block: block, progress, lease_ms: LEASE };
    op(&mut r, &s.id, "gw", 1_000, cp(64, 25)).unwrap();
    assert_eq!(snap(&r, &s.id).progress, 25);
    assert_eq!(job(&r, &s.id).unwrap().lease_expires_ms, 1_000 + LEASE);
    // A resumed copy may report less: neither checkpoint nor progress go down.
    op(&mut r, &s.id, "gw", 2_000, cp(10, 5)).unwrap();
    assert_eq!((job(&r, &s.id).unwrap().checkpoint_block, snap(&r, &s.id).progress), (64, 25));
    // Only completion makes 100%.
    op(&mut r, &s.id, "gw", 3_000, cp(2048, 100)).unwrap();
    assert_eq!(snap(&r, &s.id).progress, 99);

    op(&mut r, &s.id, "gw", 4_000, JobOp::HostDown { error: "unreachable".into() }).unwrap();
    op(&mut r, &s.id, "gw", 6_000, JobOp::HostDown { error: "still".into() }).unwrap();
    let j = job(&r, &s.id).unwrap();
    assert_eq!(j.host_down_since_ms, Some(4_000));
    assert_eq!((j.failed_attempts, j.last_error.as_deref()), (2, Some("still")));
    op(&mut r, &s.id, "gw", 7_000, JobOp::HostUp).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().host_down_since_ms, None);
    op(&mut r, &s.id, "gw", 8_000, JobOp::HostDown { error: "again".into() }).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().host_down_since_ms, Some(8_000));
    // A host that answers without moving its checkpoint is still failing
    // (a destination node is gone): the clock keeps running.
    op(&mut r, &s.id, "gw", 9_000, cp(2048, 99)).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().host_down_since_ms, Some(8_000));
    // A checkpoint that moves means the copy works again.
    op(&mut r, &s.id, "gw", 9_500, cp(2100, 99)).unwrap();
    assert_eq!(job(&r, &s.id).unwrap().host_down_since_ms, None);
}

#[test]
fn finishing_ends_the_snapshot_and_removes_the_job() {
    let (mut r, v) = with_volume();
    let a = create(&mut r, snapshot(&v, 0, None), "gw", 0).expect("a");
    let CommandOutput::Snapshot(done) = complete(&mut r, &a.id, "gw", 50).unwrap() else {
        panic!("snapshot expected")
    };
    assert_eq!(
        (done.state, done.progress, done.completion_time_ms),
        (SnapshotState::Completed, 100, Some(50))
    );
    assert_eq!(done.manifest_root, Some(ChunkId::of(b"root")));
    assert!(job(&r, &a.id).is_none());
    // A retried finish answers the snapshot as it ended; other steps are refused.
    assert_eq!(complete(&mut r, &a.id, "gw", 60).unwrap(), CommandOutput::Snapshot(done.clone()));
    let renew = op(&mut r, &a.id, "gw", 60, JobOp::Renew { lease_ms: 1 });
    assert!(matches!(renew, Err(MetaError::IncorrectState(_))), "{renew:?}");

    let b = create(&mut r, snapshot(&v, 100, None), "gw", 100).expect("b");
    let fail = JobOp::Finish { outcome: CopyOutcome::Failed { message: "host gone".into() } };
    op(&mut r, &b.id, "gw", 200, fail).unwrap();
    let b = snap(&r, &b.id);
    assert_eq!((b.state, b.state_message.as_deref()), (SnapshotState::Error, Some("host gone")));
    assert!(job(&r, &b.id).is_none());

    // FailSnapshot (a failed freeze) and DeleteSnapshot remove the job as well.
    let c = create(&mut r, snapshot(&v, 300, None), "gw", 300).expect("c");
    r.apply(Command::FailSnapshot { id: c.id.clone(), message: "no freeze".into(), at_ms: 301 })
        .unwrap();
    assert!(job(&r, &c.id).is_none());
    let d = create(&mut r, snapshot(&v, 400, None), "gw", 400).expect("d");
    r.apply(Command::DeleteSnapshot { id: d.id.clone() }).unwrap();
    assert!(job(&r, &d.id).is_none());
    let gone = op(&mut r, &d.id, "gw", 500, JobOp::Acquire { lease_ms: 1 });
    assert!(matches!(gone, Err(MetaError::SnapshotNotFound(_))), "{gone:?}");
}

#[test]
fn at_most_five_pending_snapshots_per_volume() {
    let (mut r, v) = with_volume();
    let mut ids = Vec::new();
    for i in 0..MAX_PENDING_SNAPSHOTS as u64 {
        ids.push(create(&mut r, snapshot(&v, i, None), "gw", i).expect("within the limit").id);
    }
    let sixth = create(&mut r, snapshot(&v, 9, None), "gw", 9);
    assert_eq!(sixth, Err(MetaError::ConcurrentSnapshotLimit(v.id.to_string())));
    let QueryOutput::CopyJobs(jobs) = r.query(&Query::CopyJobs) else { panic!("jobs expected") };
    assert_eq!(jobs.len(), MAX_PENDING_SNAPSHOTS);
    complete(&mut r, &ids[0], "gw", 10).unwrap();
    create(&mut r, snapshot(&v, 11, None), "gw", 11).expect("room again");
}

#[test]
fn jobs_persist_through_dirty_keys_and_reload() {
    let (mut r, v) = with_volume();
    r.take_dirty();
    let s = create(&mut r, snapshot(&v, 0, None), "gw", 0).expect("snapshot");
    let dirty = r.take_dirty();
    assert!(dirty.contains(&RecordKey::CopyJob(s.id.clone())), "{dirty:?}");
    let cp = JobOp::Checkpoint { checkpoint_block: 3, progress: 10, lease_ms: LEASE };
    op(&mut r, &s.id, "gw", 1, cp).unwrap();

    let pairs = r.encode_all();
    let reloaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("load");
    assert_eq!(job(&reloaded, &s.id), job(&r, &s.id));
    assert_eq!(reloaded.query(&Query::Snapshots), r.query(&Query::Snapshots));

    r.take_dirty();
    complete(&mut r, &s.id, "gw", 2).unwrap();
    assert!(r.take_dirty().contains(&RecordKey::CopyJob(s.id.clone())));
    assert_eq!(r.encode_key(&RecordKey::CopyJob(s.id.clone())), None, "deleted key");
}

#[test]
fn snapshot_index_matches_a_full_scan_through_every_change() {
    let (mut r, v) = with_volume();
    let scan = |r: &Records| {
        let QueryOutput::Snapshots(all) = r.query(&Query::Snapshots) else { panic!("snapshots") };
        all.iter().filter(|s| s.state == SnapshotState::Pending).count()
    };
    let a = create(&mut r, snapshot(&v, 1, None), "gw", 1).expect("a").id;
    let b = create(&mut r, snapshot(&v, 2, None), "gw", 2).expect("b").id;
    assert_eq!(r.pending_snapshots(&v.id), 2);
    complete(&mut r, &a, "gw", 3).unwrap();
    assert_eq!((r.pending_snapshots(&v.id), scan(&r)), (1, 1));
    // The newest completed snapshot is the parent of the next one.
    let c = create(&mut r, snapshot(&v, 5, None), "gw", 5).expect("c");
    assert_eq!(c.parent, Some(a.clone()));
    complete(&mut r, &b, "gw", 6).unwrap();
    r.apply(Command::DeleteSnapshot { id: a.clone() }).expect("delete");
    let d = create(&mut r, snapshot(&v, 7, None), "gw", 7).expect("d");
    assert_eq!(d.parent, Some(b.clone()), "a deleted parent is never chosen");
    // A reload rebuilds the same index.
    let pairs = r.encode_all();
    let reloaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("load");
    assert_eq!(reloaded.pending_snapshots(&v.id), r.pending_snapshots(&v.id));
    assert_eq!(reloaded.pending_snapshots(&v.id), scan(&r));
}
