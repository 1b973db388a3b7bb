//! Paged scans against a brute-force filter of the whole table: whatever the
//! conditions, page size and changes in between (tags added and removed,
//! snapshots shared, deleted), walking the pages gives exactly the records a
//! scan of every record would, in id order, and the indexes survive a reload.

use super::copy_job_tests::{complete, create, snapshot, volume};
use super::messages::{Command, Page, Query, QueryOutput, SnapshotScan, VolumeScan};
use super::sharing_tests::{add, share};
use super::store::Records;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{Snapshot, Volume};

const OWNERS: [&str; 3] = ["111111111111", "222222222222", "333333333333"];

/// 3 owners x 4 volumes x 6 snapshots, tagged `team` = a/b/c by turns and
/// `keep` on every fourth; some shared, some deleted, some retagged.
fn populated() -> (Records, Vec<Volume>) {
    let mut r = Records::default();
    let mut vols = Vec::new();
    for (n, owner) in (0usize..).zip(OWNERS.iter().flat_map(|o| [*o; 4])) {
        let mut v = volume(None);
        v.owner = owner.into();
        if n.is_multiple_of(2) {
            v.tags.insert("team".into(), ["a", "b"][n % 4 / 2].into());
        }
        r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).unwrap();
        vols.push(v);
    }
    let mut n = 0u64;
    for v in &vols {
        for _ in 0..6 {
            n += 1;
            let mut s = snapshot(v, n, None);
            s.tags.insert("team".into(), ["a", "b", "c"][n as usize % 3].into());
            if n.is_multiple_of(4) {
                s.tags.insert("keep".into(), "yes".into());
            }
            let s = create(&mut r, s, "gw", n).unwrap();
            complete(&mut r, &s.id, "gw", n).unwrap();
        }
    }
    let all = snapshots(&r);
    for (i, s) in all.iter().enumerate() {
        match i % 7 {
            0 => share(&mut r, &s.id, &s.owner, add(&[OWNERS[0]], false)).unwrap(),
            1 => share(&mut r, &s.id, &s.owner, add(&[], true)).unwrap(),
            2 => r.apply(Command::DeleteSnapshot { id: s.id.clone() }).map(drop).unwrap(),
            3 => r
                .apply(Command::CreateTags {
                    resources: vec![s.id.to_string()],
                    tags: vec![("team".into(), "z".into())],
                })
                .map(drop)
                .unwrap(),
            4 => r
                .apply(Command::DeleteTags { resources: vec![s.id.to_string()], tags: vec![] })
                .map(drop)
                .unwrap(),
            _ => {}
        }
    }
    r.apply(Command::CreateTags {
        resources: vec![vols[1].id.to_string()],
        tags: vec![("team".into(), "b".into())],
    })
    .unwrap();
    (r, vols)
}

fn snapshots(r: &Records) -> Vec<Snapshot> {
    match r.query(&Query::Snapshots) {
        QueryOutput::Snapshots(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

/// Every page of `scan`, `limit` at a time, concatenated.
fn walk_snapshots(r: &Records, scan: &SnapshotScan, limit: u32) -> Vec<SnapshotId> {
    let mut out = Vec::new();
    let mut scan = SnapshotScan { limit, ..scan.clone() };
    loop {
        let QueryOutput::SnapshotPage(Page { items, next }) =
            r.query(&Query::SnapshotScan(scan.clone()))
        else {
            panic!("a page expected")
        };
        assert!(items.len() <= limit as usize);
        out.extend(items.into_iter().map(|s| s.id));
        match next {
            Some(n) => scan.after = Some(n),
            None => return out,
        }
    }
}

fn walk_volumes(r: &Records, scan: &VolumeScan, limit: u32) -> Vec<VolumeId> {
    let mut out = Vec::new();
    let mut scan = VolumeScan { limit, ..scan.clone() };
    loop {
        let QueryOutput::VolumePage(Page { items, next }) =
            r.query(&Query::VolumeScan(scan.clone()))
        else {
            panic!("a page expected")
        };
        out.extend(items.into_iter().map(|v| v.id));
        match next {
            Some(n) => scan.after = Some(n),
            None => return out,
        }
    }
}

fn tag(key: &str, values: &[&str]) -> Option<(String, Vec<String>)> {
    Some((key.into(), values.iter().map(|v| v.to_string()).collect()))
}

#[test]
fn snapshot_pages_equal_a_filter_of_the_table() {
    let (r, vols) = populated();
    let all = snapshots(&r);
    let sharing = |s: &Snapshot| match r.query(&Query::Sharing(s.id.clone())) {
        QueryOutput::Sharing(sh) => sh,
        other => panic!("unexpected {other:?}"),
    };
    let some_ids: Vec<SnapshotId> =
        all.iter().step_by(5).map(|s| s.id.clone()).chain([SnapshotId::generate()]).collect();
    let scans = [
        SnapshotScan::default(),
        SnapshotScan { owner: Some(OWNERS[1].into()), ..Default::default() },
        SnapshotScan { visible_to: Some(OWNERS[0].into()), ..Default::default() },
        SnapshotScan { visible_to: Some(OWNERS[2].into()), ..Default::default() },
        SnapshotScan {
            volumes: vec![vols[3].id.clone(), vols[8].id.clone()],
            ..Default::default()
        },
        SnapshotScan { tag: tag("team", &["a", "z"]), ..Default::default() },
        SnapshotScan {
            tag: tag("keep", &["yes"]),
            visible_to: Some(OWNERS[1].into()),
            ..Default::default()
        },
        SnapshotScan {
            ids: some_ids.clone(),
            visible_to: Some(OWNERS[2].into()),
            ..Default::default()
        },
        SnapshotScan { ids: some_ids, volumes: vec![vols[0].id.clone()], ..Default::default() },
    ];
    for scan in &scans {
        let want: Vec<SnapshotId> = all
            .iter()
            .filter(|s| {
                let sh = sharing(s);
                (scan.ids.is_empty() || scan.ids.contains(&s.id))
                    && (scan.volumes.is_empty() || scan.volumes.contains(&s.volume_id))
                    && scan
                        .tag
                        .as_ref()
                        .is_none_or(|(k, vs)| s.tags.get(k).is_some_and(|v| vs.contains(v)))
                    && scan.owner.as_ref().is_none_or(|o| &s.owner == o)
                    && scan.visible_to.as_ref().is_none_or(|a| {
                        &s.owner == a
                            || sh.as_ref().is_some_and(|sh| sh.public || sh.user_ids.contains(a))
                    })
            })
            .map(|s| s.id.clone())
            .collect();
        assert!(
            !want.is_empty() || scan.ids.len() > 1,
            "a scan that selects nothing tests little: {scan:?}"
        );
        for limit in [1, 2, 7, 1000] {
            assert_eq!(walk_snapshots(&r, scan, limit), want, "{scan:?} by {limit}");
        }
    }
}

#[test]
fn volume_pages_equal_a_filter_of_the_table() {
    let (r, vols) = populated();
    let QueryOutput::Volumes(all) = r.query(&Query::Volumes) else { panic!("volumes") };
    let scans = [
        VolumeScan::default(),
        VolumeScan { owner: Some(OWNERS[2].into()), ..Default::default() },
        VolumeScan { tag: tag("team", &["b"]), ..Default::default() },
        VolumeScan {
            tag: tag("team", &["a", "b"]),
            owner: Some(OWNERS[0].into()),
            ..Default::default()
        },
        VolumeScan {
            ids: vec![vols[0].id.clone(), vols[5].id.clone(), VolumeId::generate()],
            owner: Some(OWNERS[0].into()),
            ..Default::default()
        },
    ];
    for scan in &scans {
        let want: Vec<VolumeId> = all
            .iter()
            .filter(|v| {
                (scan.ids.is_empty() || scan.ids.contains(&v.id))
                    && scan
                        .tag
                        .as_ref()
                        .is_none_or(|(k, vs)| v.tags.get(k).is_some_and(|x| vs.contains(x)))
                    && scan.owner.as_ref().is_none_or(|o| &v.owner == o)
            })
            .map(|v| v.id.clone())
            .collect();
        assert!(!want.is_empty(), "{scan:?}");
        for limit in [1, 3, 1000] {
            assert_eq!(walk_volumes(&r, scan, limit), want, "{scan:?} by {limit}");
        }
    }
}

#[test]
fn indexes_are_rebuilt_on_load_and_emptied_by_deletes() {
    let (mut r, vols) = populated();
    r.take_dirty();
    let pairs = r.encode_all();
    let reloaded = Records::load(pairs.iter().map(|(_, v)| &v[..])).unwrap();
    // Records compare their indexes too.
    assert_eq!(reloaded, r);
    for s in snapshots(&r) {
        r.apply(Command::DeleteSnapshot { id: s.id }).unwrap();
    }
    for v in &vols {
        r.apply(Command::DeleteVolume { id: v.id.clone() }).unwrap();
    }
    assert_eq!(r.index, Default::default(), "no index entry outlives its snapshot");
    assert_eq!(r.volume_index, Default::default(), "no index entry outlives its volume");
}

#[test]
fn pages_of_large_records_end_early_and_still_cover_everything() {
    let mut r = Records::default();
    let v = volume(None);
    r.apply(Command::CreateVolume { volume: v.clone(), client_token: None }).unwrap();
    // 50 tags of 128 + 256 characters: about 20 KB a record, so 10,000 of
    // them would be 200 MB, far past the message limit.
    let tags: std::collections::BTreeMap<String, String> =
        (0..50).map(|i| (format!("{i:0>128}"), "v".repeat(256))).collect();
    for n in 0..1200 {
        let mut s = snapshot(&v, n, None);
        s.tags = tags.clone();
        let s = create(&mut r, s, "gw", n).unwrap();
        complete(&mut r, &s.id, "gw", n).unwrap();
    }
    let mut scan = SnapshotScan::default();
    let (mut pages, mut seen) = (0, Vec::new());
    loop {
        let QueryOutput::SnapshotPage(Page { items, next }) =
            r.query(&Query::SnapshotScan(scan.clone()))
        else {
            panic!("a page expected")
        };
        pages += 1;
        let bytes: usize = items
            .iter()
            .map(|s| {
                crate::records::encode_record(&crate::records::Record::Snapshot(s.clone())).len()
            })
            .sum();
        assert!(bytes < 32 << 20, "page {pages} carries {bytes} bytes");
        seen.extend(items.into_iter().map(|s| s.id));
        match next {
            Some(n) => scan.after = Some(n),
            None => break,
        }
    }
    assert!(pages >= 2, "1,200 records of 20 KB fit one page");
    let all: Vec<SnapshotId> = snapshots(&r).into_iter().map(|s| s.id).collect();
    assert_eq!(seen, all);
}
