//! Garbage collection of the chunk store, on real files: fences and
//! sweeps, touches racing a sweep, compaction (removing, rewriting, the pack
//! number high-water mark, tombstones) and reads racing compaction.

use crate::store::chunk_store::{ChunkStore, COMPACT_LIVE_FRACTION};
use crate::store::compact::CompactReport;
use cairn_core::gc::{LiveFilter, Partition};
use cairn_core::ChunkId;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

async fn open_small(dir: &Path, pack_bytes: u64) -> ChunkStore {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ChunkStore::open_blocking(&dir, pack_bytes, None))
        .await
        .expect("join")
        .expect("open")
}

async fn compact(store: &ChunkStore, fraction: f64) -> CompactReport {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.compact(fraction))
        .await
        .expect("join")
        .expect("compact")
}

/// Distinct chunk `i`, `len` bytes.
fn block(i: u32, len: usize) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8; len];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b
}

fn filter_of(ids: &[ChunkId]) -> LiveFilter {
    let mut f = LiveFilter::new(Partition::WHOLE, 100_000, 1 << 20);
    ids.iter().for_each(|id| f.insert(id));
    f
}

/// Pack file names under the store, sorted.
fn pack_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("packs"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pack") || n.ends_with(".open"))
        .collect();
    names.sort();
    names
}

/// (bytes, allocated 512-byte blocks) of the files under the store's packs.
fn disk_usage(dir: &Path) -> (u64, u64) {
    fs::read_dir(dir.join("packs")).expect("list").fold((0, 0), |(len, blocks), e| {
        let m = e.expect("entry").metadata().expect("stat");
        (len + m.len(), blocks + m.blocks())
    })
}

async fn put_all(store: &ChunkStore, blocks: &[Vec<u8>]) -> Vec<ChunkId> {
    let mut ids = Vec::new();
    for b in blocks {
        let id = ChunkId::of(b);
        store.put(id, b.clone()).await.expect("put");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_sweep_deletes_unmarked_chunks_up_to_the_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let (live, dead) = (block(1, 1000), block(2, 3000));
    let ids = put_all(&store, &[live.clone(), dead.clone()]).await;
    store.gc_fence(1);
    let filter = filter_of(&ids[..1]);
    assert!(!filter.contains(&ids[1]));
    let r = store.gc_sweep(1, &filter);
    assert!(r.swept);
    assert_eq!((r.examined, r.deleted, r.deleted_bytes), (2, 1, 3000));
    assert_eq!(store.get(ids[1]).await.expect("get"), None);
    assert_eq!(store.has(vec![ids[1], ids[0]]).await.expect("has"), vec![false, true]);
    assert_eq!(store.get(ids[0]).await.expect("get"), Some(live));
    let s = store.stats();
    assert_eq!((s.chunks, s.bytes, s.gc_deleted, s.gc_deleted_bytes), (1, 1000, 1, 3000));
}

#[tokio::test]
async fn touches_after_the_fence_keep_chunks_and_unknown_fences_keep_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let blocks: Vec<Vec<u8>> = (0..4).map(|i| block(i, 2000)).collect();
    let ids = put_all(&store, &blocks).await;
    store.gc_fence(5);
    assert_eq!(store.has(vec![ids[0]]).await.expect("has"), vec![true]);
    assert!(!store.put(ids[1], blocks[1].clone()).await.expect("put again"));
    // A second fence of the same generation does not move it past the touches.
    store.gc_fence(5);
    let nothing = filter_of(&[]);
    let r = store.gc_sweep(4, &nothing);
    assert_eq!((r.swept, r.deleted), (false, 0), "no fence at or before generation 4");
    assert_eq!(store.stats().chunks, 4);
    // Generation 7 has no fence: the latest earlier one (5) counts.
    let r = store.gc_sweep(7, &nothing);
    assert_eq!((r.swept, r.examined, r.deleted), (true, 4, 2));
    let present = store.has(ids.clone()).await.expect("has");
    assert_eq!(present, vec![true, true, false, false]);
    drop(store);
    // Fences are not persisted: after a restart nothing is swept.
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let r = store.gc_sweep(5, &nothing);
    assert_eq!((r.swept, r.deleted), (false, 0));
}

#[tokio::test]
async fn a_sweep_in_small_batches_deletes_exactly_the_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let blocks: Vec<Vec<u8>> = (0..600).map(|i| block(i, 64)).collect();
    let ids = put_many(&store, &blocks).await;
    store.gc_fence(1);
    let live: Vec<ChunkId> = ids.iter().step_by(3).copied().collect();
    let filter = filter_of(&live);
    let dead = ids.iter().filter(|id| !filter.contains(id)).count() as u64;
    let r = store.gc_sweep_batched(1, &filter, 2);
    assert_eq!((r.examined, r.deleted), (600, dead));
    assert!(dead >= 390, "the filter keeps about a third: {dead}");
    let present = store.has(ids.clone()).await.expect("has");
    for (id, present) in ids.iter().zip(present) {
        assert_eq!(present, filter.contains(id));
    }
}

/// Puts concurrently (group commits), in order of `blocks`.
async fn put_many(store: &ChunkStore, blocks: &[Vec<u8>]) -> Vec<ChunkId> {
    let mut tasks = Vec::new();
    for b in blocks {
        let (s, b) = (store.clone(), b.clone());
        tasks.push(tokio::spawn(async move { s.put(ChunkId::of(&b), b).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("put");
    }
    blocks.iter().map(|b| ChunkId::of(b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_found_or_put_during_a_sweep_survive_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let blocks: Vec<Vec<u8>> = (0..3000).map(|i| block(i, 32)).collect();
    let ids = put_many(&store, &blocks).await;
    store.gc_fence(1);
    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(Mutex::new(HashSet::new()));
    let mut hammers = Vec::new();
    for h in 0..3usize {
        let (store, stop, touched) = (store.clone(), stop.clone(), touched.clone());
        let (ids, blocks) = (ids.clone(), blocks.clone());
        hammers.push(tokio::spawn(async move {
            let mut i = h * 997;
            while !stop.load(Ordering::SeqCst) {
                // Only even chunks are touched: odd ones are surely swept.
                let k = (i % (ids.len() / 2)) * 2;
                let kept = if h == 2 {
                    // A put of a stored chunk, acknowledged: it is kept.
                    store.put(ids[k], blocks[k].clone()).await.is_ok()
                } else {
                    store.has(vec![ids[k]]).await.expect("has")[0]
                };
                if kept {
                    touched.lock().expect("lock").insert(ids[k]);
                }
                i += 7 + h;
                tokio::task::yield_now().await;
            }
        }));
    }
    let sweeper = store.clone();
    let nothing = filter_of(&[]);
    let r = tokio::task::spawn_blocking(move || sweeper.gc_sweep_batched(1, &nothing, 3))
        .await
        .expect("join");
    stop.store(true, Ordering::SeqCst);
    for h in hammers {
        h.await.expect("hammer");
    }
    let touched = touched.lock().expect("lock").clone();
    let mut present = HashSet::new();
    for id in &ids {
        if store.get(*id).await.expect("get").is_some() {
            present.insert(*id);
        }
    }
    assert!(touched.is_subset(&present), "a chunk found or put during the sweep was deleted");
    assert!(present.is_subset(&touched), "an untouched dead chunk survived the sweep");
    assert!(ids.iter().skip(1).step_by(2).all(|id| !present.contains(id)));
    // A put may store again a chunk the sweep had deleted.
    assert!(r.deleted as usize >= ids.len() - present.len());
    assert_eq!(store.stats().chunks as usize, present.len());
}

fn flip_byte(path: &Path, at: u64) {
    let f = fs::File::options().read(true).write(true).open(path).expect("open pack");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 1;
    f.write_all_at(&b, at).expect("write");
}

#[tokio::test]
async fn compaction_removes_dead_packs_rewrites_mostly_dead_ones_and_never_reuses_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three 4000-byte chunks fill a 10000-byte pack: packs 0 to 3, sealed.
    let store = open_small(dir.path(), 10_000).await;
    let blocks: Vec<Vec<u8>> = (0..12).map(|i| block(i, 4000)).collect();
    let ids = put_all(&store, &blocks).await;
    assert_eq!(
        pack_files(dir.path()),
        ["00000000.pack", "00000001.pack", "00000002.pack", "00000003.pack"]
    );
    // A corrupt record in pack 0 leaves a tombstone.
    let (pack0, at) = store.locate(&ids[1]).expect("stored");
    flip_byte(&pack0, at + 10);
    assert_eq!(store.get(ids[1]).await.expect("get"), None);
    let tombstones = dir.path().join("packs/tombstones.log");
    assert!(fs::metadata(&tombstones).expect("stat").len() > 0);
    // Pack 1 keeps one chunk of three (rewritten), pack 3 two (kept as is),
    // packs 0 and 2 none (removed).
    let keep = [4usize, 9, 10];
    store.gc_fence(1);
    let filter = filter_of(&keep.map(|k| ids[k]));
    let r = store.gc_sweep(1, &filter);
    assert_eq!(r.deleted, 8);
    let before = disk_usage(dir.path());
    let report = compact(&store, COMPACT_LIVE_FRACTION).await;
    assert_eq!((report.packs_removed, report.packs_rewritten), (3, 1));
    assert_eq!(pack_files(dir.path()), ["00000003.pack", "00000004.open"]);
    let after = disk_usage(dir.path());
    assert!(after.0 < before.0 && after.1 < before.1, "{before:?} -> {after:?}");
    assert!(report.bytes_freed > 0);
    assert_eq!(fs::metadata(&tombstones).expect("stat").len(), 0, "pack 0's tombstone went");
    for k in keep {
        assert_eq!(store.get(ids[k]).await.expect("get").as_ref(), Some(&blocks[k]));
    }
    assert_eq!(store.stats().packs, 2);
    drop(store);

    let store = open_small(dir.path(), 10_000).await;
    for k in keep {
        assert_eq!(store.get(ids[k]).await.expect("get").as_ref(), Some(&blocks[k]));
    }
    // Chunks of removed packs stay gone (11, dead in the kept pack 3, comes
    // back until a later pass: see store::gc).
    let removed: Vec<ChunkId> = (0..9).filter(|k| *k != 4).map(|k| ids[k]).collect();
    assert!(store.has(removed).await.expect("has").iter().all(|p| !p));
    // Everything dead now: packs 3 and 4, the highest, go; a new pack after
    // a reopen must not take number 0 (or 3, 4) again.
    store.gc_fence(2);
    assert_eq!(store.gc_sweep(2, &filter_of(&[])).deleted, 4);
    let report = compact(&store, COMPACT_LIVE_FRACTION).await;
    assert_eq!((report.packs_removed, report.packs_rewritten), (2, 0));
    assert!(pack_files(dir.path()).is_empty());
    drop(store);
    let store = open_small(dir.path(), 10_000).await;
    assert_eq!(store.stats().chunks, 0, "nothing comes back from removed packs");
    let fresh = block(100, 4000);
    store.put(ChunkId::of(&fresh), fresh.clone()).await.expect("put");
    let (path, _) = store.locate(&ChunkId::of(&fresh)).expect("stored");
    assert!(path.ends_with("00000005.open"), "{}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_never_miss_a_chunk_while_compaction_moves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_small(dir.path(), 10_000).await;
    let blocks: Vec<Vec<u8>> = (0..30).map(|i| block(i, 4000)).collect();
    let ids = put_all(&store, &blocks).await;
    store.gc_fence(1);
    let keep: Vec<usize> = (0..30).step_by(3).collect();
    let filter = filter_of(&keep.iter().map(|k| ids[*k]).collect::<Vec<_>>());
    store.gc_sweep(1, &filter);
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3usize {
        let (store, stop) = (store.clone(), stop.clone());
        let live: Vec<(ChunkId, Vec<u8>)> =
            keep.iter().map(|k| (ids[*k], blocks[*k].clone())).collect();
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            let mut i = r;
            while !stop.load(Ordering::SeqCst) {
                let (id, data) = &live[i % live.len()];
                let got = store.get(*id).await.expect("get");
                assert_eq!(got.as_ref(), Some(data), "a read missed a live chunk");
                reads += 1;
                i += 1;
            }
            reads
        }));
    }
    // Every sealed pack is below a live fraction of 1: each round moves
    // every chunk of every sealed pack.
    let mut rewritten = 0;
    for _ in 0..8 {
        rewritten += compact(&store, 1.0).await.packs_rewritten;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.expect("reader") > 0);
    }
    assert!(rewritten >= 8, "{rewritten}");
    for k in keep {
        assert_eq!(store.get(ids[k]).await.expect("get").as_ref(), Some(&blocks[k]));
    }
}
