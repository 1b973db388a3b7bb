//! Indexes derived from the volume and snapshot records, so that no command
//! and no query has to scan a whole table: per volume (pending snapshots, the
//! completed ones by start time, every snapshot), per owner and per tag
//! (`(key, value)`). Each set is ordered by id, so a paged scan of an index
//! resumes after the last id it returned.
//!
//! `store` keeps them equal to a scan of the records: every put removes the
//! old record's entries and adds the new one's, every removal removes them.

use crate::ids::{SnapshotId, VolumeId};
use crate::records::{Snapshot, SnapshotState, Volume};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Ids by one attribute: the ids of one value, in order.
pub(super) type Postings<K, V> = BTreeMap<K, BTreeSet<V>>;

fn post<K: Ord, V: Ord>(map: &mut Postings<K, V>, key: K, id: V) {
    map.entry(key).or_default().insert(id);
}

fn unpost<K: Ord, V: Ord>(map: &mut Postings<K, V>, key: &K, id: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct SnapshotIndex {
    pub(super) pending: Postings<VolumeId, SnapshotId>,
    pub(super) completed: Postings<VolumeId, (u64, SnapshotId)>,
    pub(super) by_volume: Postings<VolumeId, SnapshotId>,
    pub(super) by_owner: Postings<String, SnapshotId>,
    pub(super) by_tag: Postings<(String, String), SnapshotId>,
}

impl SnapshotIndex {
    pub(super) fn add(&mut self, s: &Snapshot) {
        match s.state {
            SnapshotState::Pending => post(&mut self.pending, s.volume_id.clone(), s.id.clone()),
            SnapshotState::Completed => {
                post(&mut self.completed, s.volume_id.clone(), (s.start_time_ms, s.id.clone()))
            }
            SnapshotState::Error => {}
        }
        post(&mut self.by_volume, s.volume_id.clone(), s.id.clone());
        post(&mut self.by_owner, s.owner.clone(), s.id.clone());
        for (k, v) in &s.tags {
            post(&mut self.by_tag, (k.clone(), v.clone()), s.id.clone());
        }
    }

    pub(super) fn remove(&mut self, s: &Snapshot) {
        unpost(&mut self.pending, &s.volume_id, &s.id);
        unpost(&mut self.completed, &s.volume_id, &(s.start_time_ms, s.id.clone()));
        unpost(&mut self.by_volume, &s.volume_id, &s.id);
        unpost(&mut self.by_owner, &s.owner, &s.id);
        for (k, v) in &s.tags {
            unpost(&mut self.by_tag, &(k.clone(), v.clone()), &s.id);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct VolumeIndex {
    pub(super) by_owner: Postings<String, VolumeId>,
    pub(super) by_tag: Postings<(String, String), VolumeId>,
}

impl VolumeIndex {
    pub(super) fn add(&mut self, v: &Volume) {
        post(&mut self.by_owner, v.owner.clone(), v.id.clone());
        for (k, val) in &v.tags {
            post(&mut self.by_tag, (k.clone(), val.clone()), v.id.clone());
        }
    }

    pub(super) fn remove(&mut self, v: &Volume) {
        unpost(&mut self.by_owner, &v.owner, &v.id);
        for (k, val) in &v.tags {
            unpost(&mut self.by_tag, &(k.clone(), val.clone()), &v.id);
        }
    }
}

/// The first `budget` ids after `after` in the union of `sets`, in order.
///
/// Each set gives at most `budget` ids, so the result is exact: no id of any
/// set below the last one returned is missing.
pub(super) fn union_after<'a, V: Ord + Clone + 'a>(
    sets: impl IntoIterator<Item = &'a BTreeSet<V>>,
    after: Option<&V>,
    budget: usize,
) -> Vec<V> {
    let mut merged = BTreeSet::new();
    for set in sets {
        merged.extend(ids_after(set, after).take(budget).cloned());
    }
    merged.into_iter().take(budget).collect()
}

/// The ids of `set` after `after`, in order.
pub(super) fn ids_after<'a, V: Ord>(
    set: &'a BTreeSet<V>,
    after: Option<&V>,
) -> impl Iterator<Item = &'a V> + 'a {
    set.range::<V, _>(after_bounds(after))
}

/// The range of keys after `after` (all of them without it).
pub(super) fn after_bounds<K>(after: Option<&K>) -> (Bound<&K>, Bound<&K>) {
    (after.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded)
}
