//! Damage the store must survive: a damaged header in the middle of a
//! sealed pack, a rotten record found by the check after an unclean stop,
//! and scrub's check of every indexed record.

use super::chunk_store::ChunkStore;
use super::shared::Checked;
use cairn_core::ChunkId;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Records of 1000 bytes take 4 KiB each; a pack is sealed after three.
const PACK: u64 = 10_000;

async fn open(dir: &Path) -> ChunkStore {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ChunkStore::open_blocking(&dir, PACK, None))
        .await
        .expect("join")
        .expect("open")
}

fn flip_byte(path: &Path, at: u64) {
    let f = File::options().read(true).write(true).open(path).expect("open pack");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x55;
    f.write_all_at(&b, at).expect("write");
}

/// A store holding one sealed pack of three chunks.
async fn three(dir: &Path) -> (ChunkStore, Vec<(ChunkId, Vec<u8>)>) {
    let store = open(dir).await;
    let mut chunks = Vec::new();
    for i in 0..3u8 {
        let data = vec![i + 1; 1000];
        let id = ChunkId::of(&data);
        store.put(id, data.clone()).await.expect("put");
        chunks.push((id, data));
    }
    let (pack, _) = store.locate(&chunks[0].0).expect("stored");
    assert!(pack.to_string_lossy().ends_with(".pack"), "sealed: {}", pack.display());
    (store, chunks)
}

#[tokio::test]
async fn a_damaged_header_in_a_sealed_pack_loses_only_its_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, chunks) = three(dir.path()).await;
    let (pack, payload) = store.locate(&chunks[1].0).expect("stored");
    store.close().expect("close");
    drop(store);
    // The magic of the middle record's header.
    flip_byte(&pack, payload - 40);
    let store = open(dir.path()).await;
    let has = store.has(chunks.iter().map(|c| c.0).collect()).await.expect("has");
    assert_eq!(has, vec![true, false, true], "the records after the damage are kept");
    assert_eq!(store.get(chunks[2].0).await.expect("get"), Some(chunks[2].1.clone()));
}

#[tokio::test]
async fn an_unclean_stop_verifies_sealed_packs_and_buries_what_is_bad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, chunks) = three(dir.path()).await;
    let (pack, payload) = store.locate(&chunks[1].0).expect("stored");
    store.close().expect("close");
    drop(store);
    flip_byte(&pack, payload + 10);
    // Closed cleanly: the headers are trusted, the rot is found on read.
    let store = open(dir.path()).await;
    assert_eq!(store.has(vec![chunks[1].0]).await.expect("has"), vec![true]);
    drop(store);
    // No marker now (this open removed it): the next open hashes everything.
    let store = open(dir.path()).await;
    let has = store.has(chunks.iter().map(|c| c.0).collect()).await.expect("has");
    assert_eq!(has, vec![true, false, true]);
    assert_eq!(store.stats().corrupt, 1);
    assert_eq!(store.take_repairs(10), vec![chunks[1].0], "queued for repair");
    drop(store);
    // The tombstone keeps it buried (and not counted again).
    let store = open(dir.path()).await;
    assert_eq!(store.has(vec![chunks[1].0]).await.expect("has"), vec![false]);
    assert_eq!(store.stats().corrupt, 0);
}

#[tokio::test]
async fn scrub_checks_every_indexed_record_and_buries_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, chunks) = three(dir.path()).await;
    // And one in the pack being appended.
    let open_data = vec![9u8; 1000];
    store.put(ChunkId::of(&open_data), open_data).await.expect("put");
    let (pack, payload) = store.locate(&chunks[2].0).expect("stored");
    flip_byte(&pack, payload + 999);
    let packs = store.scrub_packs();
    assert_eq!(packs.len(), 2);
    let mut verdicts = Vec::new();
    for p in packs {
        for (id, loc) in store.scrub_records(p, 0) {
            verdicts.push((id, store.scrub_check(id, loc).expect("check")));
        }
    }
    assert_eq!(verdicts.len(), 4);
    let bad: Vec<_> = verdicts.iter().filter(|(_, v)| *v == Checked::Buried).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, chunks[2].0);
    assert_eq!(store.has(vec![chunks[2].0]).await.expect("has"), vec![false]);
    assert_eq!(store.repairs_waiting(), (1, 0));
    // From a position: only what lies after it.
    let (first, _) = store.scrub_records(0, 0)[0];
    let from = store.scrub_records(0, 1);
    assert!(from.iter().all(|(id, _)| *id != first) && from.len() == 1);
}
