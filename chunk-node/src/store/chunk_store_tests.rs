//! The chunk store's tests: puts and gets, corruption, reopening, sealing,
//! torn tails, rot in an open pack and the legacy layout.

use super::*;
use crate::store::packfile::header;
use std::io::Write;
use std::os::unix::fs::FileExt;

async fn open_small(dir: &Path, pack_bytes: u64) -> ChunkStore {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ChunkStore::open_blocking(&dir, pack_bytes, None))
        .await
        .expect("join")
        .expect("open")
}

fn flip_byte(path: &Path, at: u64) {
    let f = File::options().read(true).write(true).open(path).expect("open pack");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 1;
    f.write_all_at(&b, at).expect("write");
}

fn packs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("packs"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pack") || n.ends_with(".open"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn put_get_has_and_idempotence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let data = vec![5u8; 1000];
    let id = ChunkId::of(&data);
    let other = ChunkId::of(b"other");
    assert!(store.put(id, data.clone()).await.expect("put"));
    assert!(!store.put(id, data.clone()).await.expect("second put"));
    assert_eq!(store.get(id).await.expect("get"), Some(data.clone()));
    assert_eq!(store.get(other).await.expect("get missing"), None);
    assert_eq!(store.has(vec![id, other]).await.expect("has"), vec![true, false]);
    assert_eq!(
        store.stats(),
        StoreStats { chunks: 1, bytes: 1000, corrupt: 0, packs: 1, ..StoreStats::default() }
    );
}

#[tokio::test]
async fn wrong_id_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let id = ChunkId::of(b"claimed");
    let err = store.put(id, b"actual".to_vec()).await.expect_err("mismatch");
    assert!(matches!(err, ChunkNodeError::HashMismatch(_)));
    assert_eq!(store.has(vec![id]).await.expect("has"), vec![false]);
    assert_eq!(store.stats().chunks, 0);
}

#[tokio::test]
async fn corruption_is_detected_counted_remembered_and_repaired_by_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let data = vec![9u8; 4096];
    let id = ChunkId::of(&data);
    store.put(id, data.clone()).await.expect("put");
    let (pack, at) = store.locate(&id).expect("stored");
    flip_byte(&pack, at + 100);
    assert_eq!(store.get(id).await.expect("get"), None, "corrupt bytes are never served");
    assert_eq!(
        store.stats(),
        StoreStats { chunks: 0, bytes: 0, corrupt: 1, packs: 1, ..StoreStats::default() }
    );
    assert_eq!(store.has(vec![id]).await.expect("has"), vec![false]);
    drop(store);
    // The tombstone keeps the bad record out after a restart.
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    assert_eq!(store.has(vec![id]).await.expect("has"), vec![false]);
    assert!(store.put(id, data.clone()).await.expect("repair put"));
    assert_eq!(store.get(id).await.expect("get"), Some(data.clone()));
    drop(store);
    let store = ChunkStore::open(dir.path()).await.expect("reopen again");
    assert_eq!(store.get(id).await.expect("get"), Some(data), "the repaired copy survives");
}

#[tokio::test]
async fn stats_survive_reopen_and_concurrent_puts_are_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let blocks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300 + i as usize]).collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for b in &blocks {
            let (s, b) = (store.clone(), b.clone());
            tasks.push(tokio::spawn(async move { s.put(ChunkId::of(&b), b).await }));
        }
    }
    let mut new = 0;
    for t in tasks {
        new += usize::from(t.await.expect("join").expect("put"));
    }
    assert_eq!(new, 10, "each chunk stored exactly once");
    let expect_bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
    assert_eq!(
        store.stats(),
        StoreStats {
            chunks: 10,
            bytes: expect_bytes,
            corrupt: 0,
            packs: 1,
            ..StoreStats::default()
        }
    );
    drop(store);
    let reopened = ChunkStore::open(dir.path()).await.expect("reopen");
    assert_eq!(
        reopened.stats(),
        StoreStats {
            chunks: 10,
            bytes: expect_bytes,
            corrupt: 0,
            packs: 1,
            ..StoreStats::default()
        }
    );
    for b in &blocks {
        assert_eq!(reopened.get(ChunkId::of(b)).await.expect("get").as_ref(), Some(b));
    }
}

#[tokio::test]
async fn full_packs_are_sealed_and_new_ones_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_small(dir.path(), 10_000).await;
    let blocks: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 4000]).collect();
    for b in &blocks {
        store.put(ChunkId::of(b), b.clone()).await.expect("put");
    }
    let names = packs(dir.path());
    assert!(names.iter().filter(|n| n.ends_with(".pack")).count() >= 2, "{names:?}");
    drop(store);
    let store = open_small(dir.path(), 10_000).await;
    for b in &blocks {
        assert_eq!(store.get(ChunkId::of(b)).await.expect("get").as_ref(), Some(b));
    }
    assert!(packs(dir.path()).iter().all(|n| n.ends_with(".pack")), "open packs sealed at open");
}

#[tokio::test]
async fn a_torn_tail_of_an_open_pack_is_cut_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let good = vec![1u8; 5000];
    store.put(ChunkId::of(&good), good.clone()).await.expect("put");
    let (pack, _) = store.locate(&ChunkId::of(&good)).expect("stored");
    drop(store);
    // A crash mid-append: a whole header, half a payload that does not hash
    // to its id, then nothing.
    let torn = vec![2u8; 5000];
    let mut f = File::options().append(true).open(&pack).expect("open pack");
    f.write_all(&header(&ChunkId::of(&torn), torn.len())).expect("header");
    f.write_all(&torn[..2000]).expect("part");
    f.write_all(&[0u8; 3000]).expect("garbage");
    drop(f);
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    assert_eq!(store.stats().chunks, 1);
    assert_eq!(store.get(ChunkId::of(&good)).await.expect("get"), Some(good));
    assert_eq!(store.has(vec![ChunkId::of(&torn)]).await.expect("has"), vec![false]);
    assert!(store.put(ChunkId::of(&torn), torn.clone()).await.expect("put again"));
    assert_eq!(store.get(ChunkId::of(&torn)).await.expect("get"), Some(torn));
}

#[tokio::test]
async fn rot_inside_an_open_pack_is_not_taken_for_a_torn_tail() {
    // Records acknowledged after a rotten one in a pack a crash left open
    // are kept at open; only the rotten record is lost (and queued for repair).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    let blocks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 5000]).collect();
    for b in &blocks {
        store.put(ChunkId::of(b), b.clone()).await.expect("put");
    }
    let (pack, at) = store.locate(&ChunkId::of(&blocks[1])).expect("stored");
    assert!(pack.extension().is_some_and(|e| e == "open"), "{pack:?}");
    drop(store);
    flip_byte(&pack, at + 100);
    let store = ChunkStore::open(dir.path()).await.expect("reopen");
    let stats = store.stats();
    assert_eq!((stats.chunks, stats.corrupt), (3, 1), "{stats:?}");
    for (i, b) in blocks.iter().enumerate() {
        let want = (i != 1).then(|| b.clone());
        assert_eq!(store.get(ChunkId::of(b)).await.expect("get"), want, "block {i}");
    }
    assert_eq!(store.repairs_waiting().0, 1, "the rotten record is queued for repair");
}

#[tokio::test]
async fn a_file_per_chunk_store_is_moved_into_packs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = vec![7u8; 3000];
    let id = ChunkId::of(&data);
    let shard = dir.path().join("chunks").join(format!("{:02x}", id.0[0]));
    fs::create_dir_all(&shard).expect("shard");
    fs::write(shard.join(id.to_hex()), &data).expect("legacy chunk");
    let store = ChunkStore::open(dir.path()).await.expect("open");
    assert_eq!(store.get(id).await.expect("get"), Some(data));
    assert!(!dir.path().join("chunks").exists(), "old layout removed");
    assert_eq!(store.stats().chunks, 1);
}
