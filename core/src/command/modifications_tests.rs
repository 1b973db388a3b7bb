//! ModifyVolume as `Records::apply` keeps it: the volume takes its new
//! settings at once, one modification at a time, never smaller, finished
//! once, persisted, and gone with its volume.

use super::copy_job_tests::volume;
use super::messages::{Command, CommandOutput, MetaError, Query, QueryOutput};
use super::store::Records;
use crate::records::{ModificationState, VolumeModification, VolumeSettings};

fn settings(size_gib: u64, volume_type: &str) -> VolumeSettings {
    VolumeSettings { size_gib, volume_type: volume_type.into(), iops: None, throughput: None }
}

fn modify(
    r: &mut Records,
    v: &crate::records::Volume,
    target: VolumeSettings,
) -> Result<VolumeModification, MetaError> {
    let cmd = Command::ModifyVolume { id: v.id.clone(), owner: v.owner.clone(), target, at_ms: 5 };
    match r.apply(cmd)? {
        CommandOutput::Modification(m) => Ok(m),
        other => panic!("unexpected {other:?}"),
    }
}

fn listed(r: &Records) -> Vec<VolumeModification> {
    match r.query(&Query::VolumeModifications) {
        QueryOutput::VolumeModifications(m) => m,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_modification_changes_the_volume_at_once_and_completes_once() {
    let mut r = Records::default();
    let v = volume(None);
    r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).unwrap();
    let m = modify(&mut r, &v, settings(4, "gp2")).unwrap();
    assert_eq!(m.state, ModificationState::Modifying);
    assert_eq!((m.original.size_gib, m.target.size_gib), (1, 4));
    assert_eq!(m.original.volume_type, "gp3");
    let now = match r.query(&Query::Volume(v.id.clone())) {
        QueryOutput::Volume(Some(v)) => v,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!((now.size_gib, now.volume_type.as_str()), (4, "gp2"));

    // One at a time.
    let e = modify(&mut r, &now, settings(8, "gp2")).unwrap_err();
    assert!(matches!(e, MetaError::IncorrectModificationState(_)), "{e:?}");

    let done = Command::FinishModification { id: v.id.clone(), at_ms: 9 };
    let CommandOutput::Modification(m) = r.apply(done.clone()).unwrap() else { panic!() };
    assert_eq!((m.state, m.progress, m.end_time_ms), (ModificationState::Completed, 100, Some(9)));
    // A retry leaves it as it was.
    let CommandOutput::Modification(again) =
        r.apply(Command::FinishModification { id: v.id.clone(), at_ms: 99 }).unwrap()
    else {
        panic!()
    };
    assert_eq!(again.end_time_ms, Some(9));

    // Persisted like every record, and replaced by the next modification.
    let pairs = r.encode_all();
    let loaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).unwrap();
    assert_eq!(listed(&loaded), listed(&r));
    modify(&mut r, &now, settings(8, "gp2")).unwrap();
    assert_eq!(listed(&r).len(), 1);
}

#[test]
fn refusals_change_nothing() {
    let mut r = Records::default();
    let mut v = volume(None);
    v.size_gib = 10;
    r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).unwrap();
    let before = r.clone();
    for (target, owner) in [
        (settings(9, "gp3"), v.owner.clone()),
        (settings(10, "gp3"), v.owner.clone()),
        (settings(20, "gp3"), "999999999999".to_string()),
    ] {
        let cmd = Command::ModifyVolume { id: v.id.clone(), owner, target, at_ms: 1 };
        assert!(r.apply(cmd).is_err());
    }
    assert!(matches!(
        modify(&mut r, &v, settings(9, "gp3")),
        Err(MetaError::InvalidModification(_))
    ));
    assert_eq!(r.query(&Query::VolumeModifications), before.query(&Query::VolumeModifications));
    assert_eq!(r.query(&Query::Volume(v.id.clone())), before.query(&Query::Volume(v.id.clone())));
}

#[test]
fn a_deleted_volume_takes_its_modification_along() {
    let mut r = Records::default();
    let v = volume(None);
    r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).unwrap();
    modify(&mut r, &v, settings(2, "gp3")).unwrap();
    r.apply(Command::DeleteVolume { id: v.id.clone() }).unwrap();
    assert!(listed(&r).is_empty());
    assert!(r.take_dirty().contains(&crate::records::RecordKey::VolumeModification(v.id.clone())));
}

#[test]
fn a_pending_snapshot_takes_the_size_its_freeze_found_and_never_shrinks() {
    use super::copy_job_tests::{create, snapshot, with_volume};
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    let raise = |size_gib| Command::RaiseSnapshotVolumeSize { id: s.id.clone(), size_gib };
    let size = |r: &Records| match r.query(&Query::Snapshot(s.id.clone())) {
        QueryOutput::Snapshot(Some(s)) => s.volume_size_gib,
        other => panic!("unexpected {other:?}"),
    };
    r.apply(raise(4)).unwrap();
    assert_eq!(size(&r), 4);
    r.apply(raise(2)).unwrap();
    assert_eq!(size(&r), 4, "never lowered");
    let unknown =
        Command::RaiseSnapshotVolumeSize { id: crate::ids::SnapshotId::generate(), size_gib: 9 };
    assert!(matches!(r.apply(unknown), Err(MetaError::SnapshotNotFound(_))));
}
