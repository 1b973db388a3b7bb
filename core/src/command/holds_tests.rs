//! Holds and the generation as `Records::apply` keeps them: what a pending
//! snapshot and a restored volume hold, from when, and until when.

use super::copy_job_tests::{create, snapshot, with_volume};
use super::messages::{Command, GcHolders, Query, QueryOutput};
use super::store::Records;
use crate::block::ChunkId;
use crate::records::{Hold, Holder, RecordKey, Volume};

fn holders(r: &Records) -> GcHolders {
    match r.query(&Query::GcHolders) {
        QueryOutput::GcHolders(h) => h,
        other => panic!("unexpected {other:?}"),
    }
}

fn hold(r: &Records, h: Holder) -> Option<Hold> {
    match r.query(&Query::Hold(h)) {
        QueryOutput::Hold(h) => h,
        other => panic!("unexpected {other:?}"),
    }
}

fn complete(r: &mut Records, s: &crate::ids::SnapshotId, root: ChunkId) {
    let cmd = Command::CompleteSnapshot {
        id: s.clone(),
        manifest_root: root,
        full_size_bytes: 1,
        at_ms: 5,
    };
    r.apply(cmd).expect("complete");
}

#[test]
fn a_pending_incremental_holds_its_parents_root_until_it_completes_even_if_the_parent_goes() {
    let (mut r, v) = with_volume();
    r.apply(Command::GcFence { generation: 3 }).expect("fence");
    let first = create(&mut r, snapshot(&v, 1, None), "gw", 1).expect("first");
    let first_hold = hold(&r, Holder::Snapshot(first.id.clone())).expect("held while pending");
    assert_eq!(
        (first_hold.generation, first_hold.roots.len()),
        (3, 0),
        "a full copy needs no root"
    );
    let root = ChunkId::of(b"root 1");
    complete(&mut r, &first.id, root);
    assert_eq!(hold(&r, Holder::Snapshot(first.id.clone())), None, "completed: its manifest holds");

    r.apply(Command::GcFence { generation: 4 }).expect("fence");
    let child = create(&mut r, snapshot(&v, 2, None), "gw", 2).expect("child");
    assert_eq!(child.parent.as_ref(), Some(&first.id));
    r.apply(Command::DeleteSnapshot { id: first.id.clone() }).expect("delete the parent");
    let h = hold(&r, Holder::Snapshot(child.id.clone())).expect("child held");
    assert_eq!((h.generation, h.roots), (4, vec![root]));
    assert_eq!(holders(&r).oldest_generation(), 4);

    r.apply(Command::DeleteSnapshot { id: child.id.clone() }).expect("delete the child");
    assert!(holders(&r).holds.is_empty(), "a deleted pending snapshot holds nothing");
    assert_eq!(holders(&r).oldest_generation(), 4, "no holder: the current generation");
}

#[test]
fn a_failed_snapshot_lets_go() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).expect("snap");
    r.apply(Command::FailSnapshot { id: s.id.clone(), message: "x".into(), at_ms: 2 })
        .expect("fail");
    assert!(holders(&r).holds.is_empty());
}

#[test]
fn a_restored_volume_holds_its_source_until_released_or_deleted() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).expect("snap");
    let root = ChunkId::of(b"root");
    complete(&mut r, &s.id, root);
    let restored = |r: &mut Records| {
        let mut nv: Volume = super::copy_job_tests::volume(None);
        nv.snapshot_id = Some(s.id.clone());
        r.apply(Command::CreateVolume { volume: nv.clone(), client_token: None }).expect("restore");
        nv
    };
    let a = restored(&mut r);
    let b = restored(&mut r);
    r.apply(Command::DeleteSnapshot { id: s.id.clone() }).expect("delete the source");
    assert_eq!(hold(&r, Holder::Volume(a.id.clone())).expect("held").roots, vec![root]);
    r.apply(Command::ReleaseHold { holder: Holder::Volume(a.id.clone()) }).expect("release");
    r.apply(Command::ReleaseHold { holder: Holder::Volume(a.id.clone()) }).expect("again: a retry");
    assert_eq!(hold(&r, Holder::Volume(a.id.clone())), None);
    r.apply(Command::DeleteVolume { id: b.id.clone() }).expect("delete b");
    assert!(holders(&r).holds.is_empty());
}

#[test]
fn the_generation_never_goes_down_and_holds_persist() {
    let (mut r, v) = with_volume();
    r.apply(Command::GcFence { generation: 7 }).expect("fence");
    r.apply(Command::GcFence { generation: 5 }).expect("an older fence is harmless");
    assert_eq!(holders(&r).generation, 7);
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).expect("snap");
    let dirty = r.take_dirty();
    assert!(dirty.contains(&RecordKey::Hold(Holder::Snapshot(s.id.clone()))), "{dirty:?}");
    let pairs = r.encode_all();
    let back = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("load");
    assert_eq!(holders(&back), holders(&r));
}
