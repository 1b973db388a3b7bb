//! The capacity tier on a directory object store: sealed packs leave the
//! disk and read back by ranges through a bounded cache; reopening reads
//! their records; scrub checks the store's bytes; a bad cached copy is not
//! rot; GC and compaction remove objects; a store with packs in a tier
//! refuses to open without one.

use crate::error::ChunkNodeError;
use crate::store::cache::SEGMENT;
use crate::store::chunk_store::ChunkStore;
use crate::store::remote::TierSettings;
use crate::store::shared::Checked;
use cairn_core::gc::{LiveFilter, Partition};
use cairn_core::ChunkId;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PACK: u64 = 2 << 20;
const CHUNK: usize = 192 << 10;

fn settings(objects: &Path, cache_bytes: u64) -> TierSettings {
    let objects = cairn_proto::objects::open_dir(objects).expect("object dir");
    TierSettings { objects, prefix: "node-a".into(), cache_bytes }
}

async fn open(dir: &Path, tier: Option<TierSettings>) -> Result<ChunkStore, ChunkNodeError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ChunkStore::open_blocking(&dir, PACK, tier))
        .await
        .expect("join")
}

/// Distinct chunk `i`.
fn block(i: u32) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8; CHUNK];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b
}

async fn put_blocks(store: &ChunkStore, n: u32) -> Vec<(ChunkId, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = block(i);
        let id = ChunkId::of(&b);
        store.put(id, b.clone()).await.expect("put");
        out.push((id, b));
    }
    out
}

/// Polls until every sealed pack is uploaded.
async fn uploaded(store: &ChunkStore) {
    for _ in 0..2000 {
        if store.tier_stats().expect("tier").backlog == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("sealed packs were not uploaded");
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn get(store: &ChunkStore, id: ChunkId) -> Option<Vec<u8>> {
    store.get(id).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_packs_leave_the_disk_and_read_back_through_the_cache() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("open");
    let blocks = put_blocks(&store, 40).await;
    uploaded(&store).await;
    let stats = store.tier_stats().expect("tier");
    assert!(stats.packs >= 3, "{stats:?}");
    assert_eq!(files(dir.path(), ".pack"), Vec::<PathBuf>::new(), "no sealed pack left on disk");
    assert_eq!(files(dir.path(), ".remote").len() as u64, stats.packs);
    assert_eq!(files(objects.path(), ".pack").len() as u64, stats.packs);

    for (id, b) in &blocks {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
    let cold = store.tier_stats().expect("tier").cache;
    // Ranges, not whole packs: one fetch per segment a record needs.
    assert!(cold.misses > 0 && cold.misses <= stats.bytes.div_ceil(SEGMENT) + stats.packs);
    for (id, b) in &blocks {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
    let warm = store.tier_stats().expect("tier").cache;
    assert_eq!(warm.misses, cold.misses, "a second read is served by the cache");
    assert!(warm.hits > cold.hits);

    drop(store);
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("reopen");
    assert_eq!(store.stats().chunks, 40);
    for (id, b) in &blocks {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
    drop(store);
    let refused = open(dir.path(), None).await.err().expect("no tier configured");
    assert!(refused.to_string().contains("capacity_tier"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bound() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let limit = 2 * SEGMENT;
    let store = open(dir.path(), Some(settings(objects.path(), limit))).await.expect("open");
    let blocks = put_blocks(&store, 60).await;
    uploaded(&store).await;
    for (id, b) in blocks.iter().chain(blocks.iter().rev()) {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
        let held: u64 = files(&dir.path().join("pack-cache"), "")
            .iter()
            .map(|p| fs::metadata(p).expect("stat").len())
            .sum();
        assert!(held <= limit, "cache holds {held} bytes, limit {limit}");
    }
    assert!(store.tier_stats().expect("tier").cache.bytes <= limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_checks_the_stores_bytes_and_a_bad_cached_copy_is_not_rot() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("open");
    let blocks = put_blocks(&store, 20).await;
    uploaded(&store).await;
    let (first, data) = &blocks[0];

    // Damage the cached copy: the read goes back to the store.
    assert_eq!(get(&store, *first).await.as_ref(), Some(data));
    for cached in files(&dir.path().join("pack-cache"), "") {
        fs::write(&cached, vec![0u8; fs::metadata(&cached).expect("stat").len() as usize])
            .expect("damage");
    }
    assert_eq!(get(&store, *first).await.as_ref(), Some(data));
    assert_eq!(store.stats().corrupt, 0);

    // Damage the object: scrub (which reads the store) buries the record.
    let object = &files(objects.path(), ".pack")[0];
    let f = fs::OpenOptions::new().write(true).open(object).expect("open object");
    f.write_all_at(b"rot", 4096).expect("damage");
    let s = store.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for pack in s.scrub_packs() {
            for (id, loc) in s.scrub_records(pack, 0) {
                out.push((id, s.scrub_check(id, loc).expect("check")));
            }
        }
        out
    })
    .await
    .expect("join");
    let buried: Vec<ChunkId> =
        checked.iter().filter(|(_, c)| *c == Checked::Buried).map(|(id, _)| *id).collect();
    assert_eq!(buried, vec![*first], "{checked:?}");
    assert_eq!(get(&store, *first).await, None);
    assert_eq!(store.take_repairs(10), vec![*first]);
    // Repaired by a put, as from a replica: stored again, locally.
    store.put(*first, data.clone()).await.expect("repair");
    assert_eq!(get(&store, *first).await.as_ref(), Some(data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_compaction_remove_objects() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("open");
    let blocks = put_blocks(&store, 40).await;
    uploaded(&store).await;
    let before = files(objects.path(), ".pack").len();
    // Keep the last five chunks only.
    let mut filter = LiveFilter::new(Partition::WHOLE, 1000, 1 << 16);
    blocks[35..].iter().for_each(|(id, _)| filter.insert(id));
    store.gc_fence(1);
    let s = store.clone();
    let swept = tokio::task::spawn_blocking(move || {
        let swept = s.gc_sweep(1, &filter);
        (swept, s.compact(0.5).expect("compact"))
    })
    .await
    .expect("join");
    assert!(swept.1.packs_removed > 0, "{swept:?}");
    uploaded(&store).await;
    let after = files(objects.path(), ".pack").len();
    assert!(after < before, "objects {before} -> {after}");
    assert_eq!(
        files(dir.path(), ".remote").len(),
        store.tier_stats().expect("tier").packs as usize
    );
    for (id, b) in &blocks[35..] {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
    drop(store);
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("reopen");
    for (id, b) in &blocks[35..] {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_configured_otherwise_refuses_to_open_and_buries_nothing() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("open");
    let blocks = put_blocks(&store, 20).await;
    uploaded(&store).await;
    drop(store);
    // Another bucket: the packs recorded are not there.
    let elsewhere = tempfile::tempdir().expect("dir");
    let refused = open(dir.path(), Some(settings(elsewhere.path(), 64 << 20))).await;
    let why = refused.err().expect("refused").to_string();
    assert!(why.contains("missing from") && why.contains("configured"), "{why}");
    // The right one again: everything is there, nothing was buried.
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("reopen");
    for (id, b) in &blocks {
        assert_eq!(get(&store, *id).await.as_ref(), Some(b));
    }
    assert_eq!(store.stats().corrupt, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_cut_short_is_rot_for_scrub_not_a_crash() {
    let (dir, objects) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = open(dir.path(), Some(settings(objects.path(), 64 << 20))).await.expect("open");
    put_blocks(&store, 20).await;
    uploaded(&store).await;
    let object = &files(objects.path(), ".pack")[0];
    // Cut inside the header of a record past the first.
    let f = fs::OpenOptions::new().write(true).open(object).expect("open object");
    f.set_len(CHUNK as u64 + 4096 + 20).expect("truncate");
    let s = store.clone();
    let buried = tokio::task::spawn_blocking(move || {
        let mut buried = 0;
        for pack in s.scrub_packs() {
            for (id, loc) in s.scrub_records(pack, 0) {
                buried += usize::from(s.scrub_check(id, loc).expect("check") == Checked::Buried);
            }
        }
        buried
    })
    .await
    .expect("join");
    assert!(buried >= 1, "the records past the cut are buried");
}
