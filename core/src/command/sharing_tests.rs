//! Sharing as `Records::apply` handles it: only the owner changes it, an
//! encrypted snapshot never goes public, an emptied share leaves no record,
//! deleting the snapshot takes its shares along, and shares persist.

use super::copy_job_tests::{create, snapshot, with_volume};
use super::messages::{Command, CommandOutput, MetaError, Query, QueryOutput, SharingChange};
use super::store::Records;
use crate::ids::SnapshotId;
use crate::records::{RecordKey, SnapshotSharing};

const OWNER: &str = "123456789012";
const FRIEND: &str = "111122223333";

fn sharing(r: &Records, id: &SnapshotId) -> Option<SnapshotSharing> {
    match r.query(&Query::Sharing(id.clone())) {
        QueryOutput::Sharing(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

pub(super) fn share(
    r: &mut Records,
    id: &SnapshotId,
    owner: &str,
    change: SharingChange,
) -> Result<(), MetaError> {
    r.apply(Command::ShareSnapshot { id: id.clone(), owner: owner.into(), change }).map(|out| {
        assert_eq!(out, CommandOutput::Done);
    })
}

pub(super) fn add(users: &[&str], public: bool) -> SharingChange {
    SharingChange::Add { user_ids: users.iter().map(|u| u.to_string()).collect(), public }
}

fn remove(users: &[&str], public: bool) -> SharingChange {
    SharingChange::Remove { user_ids: users.iter().map(|u| u.to_string()).collect(), public }
}

#[test]
fn the_owner_shares_and_takes_back() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    r.take_dirty();
    assert_eq!(sharing(&r, &s.id), None);

    share(&mut r, &s.id, OWNER, add(&[FRIEND], false)).unwrap();
    let got = sharing(&r, &s.id).expect("shared");
    assert!(got.grants(FRIEND) && !got.grants("999999999999") && !got.public);
    assert!(r.take_dirty().contains(&RecordKey::Sharing(s.id.clone())));

    share(&mut r, &s.id, OWNER, add(&[], true)).unwrap();
    assert!(sharing(&r, &s.id).unwrap().grants("999999999999"));
    share(&mut r, &s.id, OWNER, remove(&[], true)).unwrap();
    assert!(!sharing(&r, &s.id).unwrap().public);

    // Taking back the last grant leaves no record, and the key is persisted as deleted.
    share(&mut r, &s.id, OWNER, remove(&[FRIEND], false)).unwrap();
    assert_eq!(sharing(&r, &s.id), None);
    let dirty = r.take_dirty();
    assert!(dirty.contains(&RecordKey::Sharing(s.id.clone())));
    assert_eq!(r.encode_key(&RecordKey::Sharing(s.id.clone())), None);

    share(&mut r, &s.id, OWNER, add(&[FRIEND, "444455556666"], true)).unwrap();
    share(&mut r, &s.id, OWNER, SharingChange::Reset).unwrap();
    assert_eq!(sharing(&r, &s.id), None);
}

#[test]
fn nobody_but_the_owner_changes_it_and_refusals_change_nothing() {
    let (mut r, v) = with_volume();
    let s = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    share(&mut r, &s.id, OWNER, add(&[FRIEND], false)).unwrap();
    let before = r.clone();
    // Not even the grantee.
    for who in [FRIEND, "999999999999"] {
        assert_eq!(
            share(&mut r, &s.id, who, SharingChange::Reset),
            Err(MetaError::SnapshotNotFound(s.id.to_string()))
        );
    }
    let unknown = SnapshotId::generate();
    assert_eq!(
        share(&mut r, &unknown, OWNER, add(&[FRIEND], false)),
        Err(MetaError::SnapshotNotFound(unknown.to_string()))
    );
    assert_eq!(r.query(&Query::Sharings), before.query(&Query::Sharings));
}

#[test]
fn an_encrypted_snapshot_is_never_public() {
    let (mut r, v) = with_volume();
    let mut s = snapshot(&v, 1, None);
    s.encrypted = true;
    let s = create(&mut r, s, "gw", 1).unwrap();
    assert!(matches!(
        share(&mut r, &s.id, OWNER, add(&[FRIEND], true)),
        Err(MetaError::OperationNotPermitted(_))
    ));
    assert_eq!(sharing(&r, &s.id), None);
    // Shared with an account, it may be.
    share(&mut r, &s.id, OWNER, add(&[FRIEND], false)).unwrap();
    assert!(sharing(&r, &s.id).unwrap().grants(FRIEND));
}

#[test]
fn deleting_the_snapshot_revokes_its_shares_and_shares_persist() {
    let (mut r, v) = with_volume();
    let kept = create(&mut r, snapshot(&v, 1, None), "gw", 1).unwrap();
    let gone = create(&mut r, snapshot(&v, 2, None), "gw", 1).unwrap();
    share(&mut r, &kept.id, OWNER, add(&[FRIEND], true)).unwrap();
    share(&mut r, &gone.id, OWNER, add(&[FRIEND], false)).unwrap();
    r.take_dirty();
    r.apply(Command::DeleteSnapshot { id: gone.id.clone() }).unwrap();
    assert_eq!(sharing(&r, &gone.id), None);
    assert!(r.take_dirty().contains(&RecordKey::Sharing(gone.id.clone())));

    let pairs = r.encode_all();
    let loaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).unwrap();
    assert_eq!(loaded.query(&Query::Sharings), r.query(&Query::Sharings));
    assert!(sharing(&loaded, &kept.id).unwrap().public);
}
