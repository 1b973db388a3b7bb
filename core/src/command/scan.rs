//! Paged scans of snapshots and volumes: one page costs time and memory in
//! proportion to the page (and to the records its conditions skip, at most
//! [`MAX_SCAN_PAGE`]), never to the table, and walks the narrowest index its
//! conditions allow.

use super::index::{after_bounds, ids_after, union_after, Postings};
use super::messages::{Page, SnapshotScan, VolumeScan, MAX_SCAN_PAGE};
use super::store::Records;
use crate::ids::{SnapshotId, VolumeId};
use crate::records::{Snapshot, SnapshotSharing, Volume};
use std::collections::{BTreeMap, BTreeSet};

/// Whether `tags` carry `key` with one of `values`.
fn tagged(tags: &BTreeMap<String, String>, tag: &Option<(String, Vec<String>)>) -> bool {
    tag.as_ref().is_none_or(|(k, values)| tags.get(k).is_some_and(|v| values.contains(v)))
}

/// Whether `account` may see a snapshot owned by `owner`, shared as `sharing`.
fn visible(owner: &str, sharing: Option<&SnapshotSharing>, account: &str) -> bool {
    owner == account || sharing.is_some_and(|sh| sh.public || sh.user_ids.contains(account))
}

/// Walks `candidates` (ids in order, at most [`MAX_SCAN_PAGE`]: more may
/// follow when there are that many) and keeps the records `keep` accepts, at
/// most `limit`.
/// Most bytes of records one page carries, as [`Weigh`] estimates them: a
/// page of large records (many long tags) ends early, far below the 64 MiB
/// message limit, with `next` set.
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// About how many bytes a record takes encoded: its variable-length fields
/// plus a generous allowance for the fixed ones.
trait Weigh {
    fn weight(&self) -> usize;
}

fn tags_weight(tags: &BTreeMap<String, String>) -> usize {
    tags.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
}

impl Weigh for Snapshot {
    fn weight(&self) -> usize {
        512 + self.description.len()
            + self.state_message.as_ref().map_or(0, String::len)
            + tags_weight(&self.tags)
    }
}

impl Weigh for Volume {
    fn weight(&self) -> usize {
        512 + tags_weight(&self.tags)
    }
}

fn page<K: Ord + Clone, T: Clone + Weigh>(
    candidates: Vec<K>,
    table: &BTreeMap<K, T>,
    limit: u32,
    keep: impl Fn(&T) -> bool,
) -> Page<T, K> {
    // 0: as many as a page holds.
    let limit = if limit == 0 { MAX_SCAN_PAGE } else { limit.min(MAX_SCAN_PAGE) } as usize;
    let truncated = candidates.len() >= MAX_SCAN_PAGE as usize;
    let total = candidates.len();
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    for (seen, id) in (1..).zip(candidates) {
        if let Some(rec) = table.get(&id).filter(|r| keep(r)) {
            bytes += rec.weight();
            items.push(rec.clone());
        }
        last = Some(id);
        if items.len() == limit || bytes >= MAX_PAGE_BYTES {
            let next = if seen < total || truncated { last } else { None };
            return Page { items, next };
        }
    }
    Page { items, next: if truncated { last } else { None } }
}

impl Records {
    pub(super) fn scan_snapshots(&self, q: &SnapshotScan) -> Page<Snapshot, SnapshotId> {
        let budget = MAX_SCAN_PAGE as usize;
        let after = q.after.as_ref();
        let candidates: Vec<SnapshotId> = if !q.ids.is_empty() {
            listed_after(&q.ids, after, budget)
        } else if let Some(tag) = &q.tag {
            tagged_after(&self.index.by_tag, tag, after, budget)
        } else if !q.volumes.is_empty() {
            union_after(q.volumes.iter().filter_map(|v| self.index.by_volume.get(v)), after, budget)
        } else if let Some(account) = q.owner.as_ref().or(q.visible_to.as_ref()) {
            let own = self.index.by_owner.get(account).into_iter();
            let mut ids = union_after(own, after, budget);
            if q.owner.is_none() {
                // Shared with the account: the sharing table is keyed by id.
                let shared = self
                    .sharing
                    .range::<SnapshotId, _>(after_bounds(after))
                    .filter(|(_, sh)| sh.public || sh.user_ids.contains(account))
                    .map(|(id, _)| id.clone())
                    .take(budget);
                let all: BTreeSet<SnapshotId> = ids.into_iter().chain(shared).collect();
                ids = all.into_iter().take(budget).collect();
            }
            ids
        } else {
            keys_after(&self.snapshots, after, budget)
        };
        page(candidates, &self.snapshots, q.limit, |s| {
            (q.ids.is_empty() || q.ids.contains(&s.id))
                && (q.volumes.is_empty() || q.volumes.contains(&s.volume_id))
                && tagged(&s.tags, &q.tag)
                && q.owner.as_ref().is_none_or(|o| &s.owner == o)
                && q.visible_to
                    .as_ref()
                    .is_none_or(|a| visible(&s.owner, self.sharing.get(&s.id), a))
        })
    }

    pub(super) fn scan_volumes(&self, q: &VolumeScan) -> Page<Volume, VolumeId> {
        let budget = MAX_SCAN_PAGE as usize;
        let after = q.after.as_ref();
        let candidates: Vec<VolumeId> = if !q.ids.is_empty() {
            listed_after(&q.ids, after, budget)
        } else if let Some(tag) = &q.tag {
            tagged_after(&self.volume_index.by_tag, tag, after, budget)
        } else if let Some(owner) = &q.owner {
            union_after(self.volume_index.by_owner.get(owner), after, budget)
        } else {
            keys_after(&self.volumes, after, budget)
        };
        page(candidates, &self.volumes, q.limit, |v| {
            (q.ids.is_empty() || q.ids.contains(&v.id))
                && tagged(&v.tags, &q.tag)
                && q.owner.as_ref().is_none_or(|o| &v.owner == o)
        })
    }
}

/// The candidates of a scan by ids: those given, in order, after `after`.
fn listed_after<K: Ord + Clone>(ids: &[K], after: Option<&K>, budget: usize) -> Vec<K> {
    let ids: BTreeSet<K> = ids.iter().cloned().collect();
    ids_after(&ids, after).take(budget).cloned().collect()
}

/// The candidates of a scan by tag: what carries `key` with one of the values.
fn tagged_after<K: Ord + Clone>(
    by_tag: &Postings<(String, String), K>,
    (key, values): &(String, Vec<String>),
    after: Option<&K>,
    budget: usize,
) -> Vec<K> {
    let sets = values.iter().filter_map(|v| by_tag.get(&(key.clone(), v.clone())));
    union_after(sets, after, budget)
}

/// The candidates of a scan of a whole table.
fn keys_after<K: Ord + Clone, T>(
    table: &BTreeMap<K, T>,
    after: Option<&K>,
    budget: usize,
) -> Vec<K> {
    table.range::<K, _>(after_bounds(after)).map(|(id, _)| id.clone()).take(budget).collect()
}
