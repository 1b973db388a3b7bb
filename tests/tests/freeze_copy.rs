//! Copy-on-write freezes, change tracking, incremental and resumable copies,
//! replication failures and lazy restore, on real nodes (port 0, temp dirs).

use cairn_core::BLOCK_SIZE;
use cairn_tests::node::{
    copy_with_parent, create_volume, freeze, read_all, restart, restore, start, volume_stats,
    TestNode,
};
use cairn_tests::wait_for;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const BS: u64 = BLOCK_SIZE as u64;

/// A whole block stamped with `seq` throughout.
fn stamped(seq: u64) -> Vec<u8> {
    seq.to_le_bytes().iter().copied().cycle().take(BLOCK_SIZE).collect()
}

/// The stamp of a block, or `None` if it is not one stamp throughout.
fn stamp_of(block: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(block[..8].try_into().ok()?);
    block.chunks(8).all(|c| c == seq.to_le_bytes()).then_some(seq)
}

async fn write_block(n: &TestNode, vol: &str, idx: u64, data: Vec<u8>) -> anyhow::Result<()> {
    let v = n.node.volumes().get(vol).ok_or_else(|| anyhow::anyhow!("no volume"))?;
    v.write(idx * BS, data, false).await?;
    Ok(())
}

/// How long a wait on a single node may take.
const WAIT: Duration = Duration::from_secs(60);

/// A writer keeps overwriting blocks while a freeze is taken and copied:
/// the snapshot holds every write acknowledged before the freeze was
/// called, none started after it returned, and only whole blocks, both for
/// blocks overwritten before the copy reached them (saved by copy-on-write)
/// and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freeze_is_a_point_in_time_under_concurrent_writes() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000011";
    const SNAP: &str = "snap-00000000000000011";
    const BLOCKS: u64 = 96;
    let a = start("chunk-a", "cairn-1a").await?;
    create_volume(&a, VOL, BLOCKS * BS).await?;
    for i in 0..BLOCKS {
        write_block(&a, VOL, i, stamped(i + 1)).await?;
    }
    // Logical clock: every write's (block, seq, sent, acked).
    let clock = Arc::new(AtomicU64::new(1_000));
    let stop = Arc::new(AtomicU64::new(0));
    let volume = a.node.volumes().get(VOL).expect("volume");
    let writer = {
        let (clock, stop, volume) = (clock.clone(), stop.clone(), volume.clone());
        tokio::spawn(async move {
            let mut log = Vec::new();
            let mut k = 0u64;
            while stop.load(Ordering::SeqCst) == 0 || k < 400 {
                // Walk the volume backwards so some writes hit blocks the
                // copy has not reached yet and others blocks it has passed.
                let idx = BLOCKS - 1 - (k * 7 % BLOCKS);
                let sent = clock.fetch_add(1, Ordering::SeqCst);
                volume.write(idx * BS, stamped(sent), false).await.expect("write");
                let acked = clock.fetch_add(1, Ordering::SeqCst);
                log.push((idx, sent, acked));
                k += 1;
                tokio::task::yield_now().await;
            }
            log
        })
    };
    wait_for("the writer is going", WAIT, || async { clock.load(Ordering::SeqCst) > 1_100 })
        .await?;
    let called = clock.fetch_add(1, Ordering::SeqCst);
    let reply = freeze(&a, VOL, SNAP, "").await?;
    let returned = clock.fetch_add(1, Ordering::SeqCst);
    assert!(!reply.incremental);
    assert_eq!(reply.blocks_to_read, BLOCKS);
    let progress = copy_with_parent(&a, VOL, SNAP, vec![a.store_node()], 1, None).await?;
    stop.store(1, Ordering::SeqCst);
    let log = writer.await?;
    let last = progress.last().expect("progress");
    assert!(last.done);
    let overlay = a.dir.path().join(format!("volumes/{VOL}.state/freezes/{SNAP}/overlay"));
    assert!(std::fs::metadata(&overlay)?.len() > 0, "copy-on-write saved blocks");

    restore(&a, "vol-00000000000000012", BLOCKS * BS, &last.manifest_root, vec![a.store_node()], 1)
        .await?;
    let image = read_all(&a, "vol-00000000000000012").await?;
    for (idx, block) in image.chunks(BLOCK_SIZE).enumerate() {
        let idx = idx as u64;
        let seq = stamp_of(block).unwrap_or_else(|| panic!("block {idx} is torn"));
        let writes: Vec<&(u64, u64, u64)> = log.iter().filter(|w| w.0 == idx).collect();
        let floor = writes.iter().filter(|w| w.2 < called).map(|w| w.1).max().unwrap_or(idx + 1);
        assert!(seq >= floor, "block {idx}: {seq} misses the acknowledged write {floor}");
        if let Some(w) = writes.iter().find(|w| w.1 == seq) {
            assert!(
                w.1 < returned,
                "block {idx} holds write {seq}, sent after the freeze returned"
            );
        } else {
            assert_eq!(seq, idx + 1, "block {idx} holds an unknown stamp");
        }
    }
    a.node.shutdown().await;
    Ok(())
}

/// Snapshot 2 of a volume reads only the block written since snapshot 1,
/// writes one new chunk, one page and a root, and restores correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_copy_reads_only_changed_blocks() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000021";
    let page = cairn_core::manifest::PAGE_BLOCKS;
    let size = 3 * page * BS; // three manifest pages, sparse
    let a = start("chunk-a", "cairn-1a").await?;
    create_volume(&a, VOL, size).await?;
    for (k, idx) in [5, page + 5, 2 * page + 5].into_iter().enumerate() {
        write_block(&a, VOL, idx, stamped(k as u64 + 1)).await?;
    }
    let targets = vec![a.store_node()];
    let r1 = freeze(&a, VOL, "snap-1", "").await?;
    assert_eq!((r1.incremental, r1.blocks_to_read), (false, 3));
    let p1 = copy_with_parent(&a, VOL, "snap-1", targets.clone(), 1, None).await?;
    let root1 = p1.last().expect("done").manifest_root.clone();
    a.volumes()
        .await?
        .release(cairn_proto::pb::ReleaseRequest {
            volume_id: VOL.into(),
            snapshot_id: "snap-1".into(),
        })
        .await?;
    let chunks_before = a.stats().await?.chunks;
    let read_before = volume_stats(&a, VOL).await?.copy_blocks_read;

    write_block(&a, VOL, page + 5, stamped(99)).await?;
    let r2 = freeze(&a, VOL, "snap-2", "snap-1").await?;
    assert_eq!((r2.incremental, r2.blocks_to_read), (true, 1));
    // Without the parent's manifest an incremental freeze cannot be copied.
    let err =
        copy_with_parent(&a, VOL, "snap-2", targets.clone(), 1, None).await.expect_err("no parent");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let p2 =
        copy_with_parent(&a, VOL, "snap-2", targets.clone(), 1, Some((&root1, "snap-1"))).await?;
    let last = p2.last().expect("done");
    assert_eq!(last.blocks_read, 1);
    assert_eq!(volume_stats(&a, VOL).await?.copy_blocks_read - read_before, 1);
    assert_eq!(a.stats().await?.chunks - chunks_before, 3, "one chunk, one page, one root");
    assert_eq!(last.full_size_bytes, 3 * BS);

    // The new root references its parent and restores the new content.
    let root2 = cairn_core::ChunkId::from_slice(&last.manifest_root).expect("root");
    let bytes = a.node.store().get(root2).await?.expect("root stored");
    let decoded = cairn_core::manifest::ManifestRoot::decode(&bytes)?;
    assert_eq!(decoded.parent.map(|p| p.0.to_vec()), Some(root1.clone()));
    restore(&a, "vol-00000000000000022", size, &last.manifest_root, targets, 1).await?;
    let v = a.node.volumes().get("vol-00000000000000022").expect("restored");
    for (idx, seq) in [(5, 1), (page + 5, 99), (2 * page + 5, 3)] {
        assert_eq!(stamp_of(&v.read(idx * BS, BLOCK_SIZE).await?), Some(seq), "block {idx}");
    }
    assert!(v.read(6 * BS, BLOCK_SIZE).await?.iter().all(|b| *b == 0));
    a.node.shutdown().await;
    Ok(())
}

/// A host killed with a freeze pending keeps its overlay (a torn record at
/// its end is dropped), switches tracking to unknown, copies the exact frozen
/// image after the restart, and the next snapshot reads every block but
/// sends only new chunks; tracking is known again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_keeps_freezes_and_forgets_tracking() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000031";
    const BLOCKS: u64 = 16;
    let a = start("chunk-a", "cairn-1a").await?;
    let store = start("chunk-s", "cairn-1b").await?;
    let targets = vec![store.store_node()];
    create_volume(&a, VOL, BLOCKS * BS).await?;
    for i in 0..BLOCKS {
        write_block(&a, VOL, i, stamped(i + 1)).await?;
    }
    freeze(&a, VOL, "snap-1", "").await?;
    let root1 = copy_with_parent(&a, VOL, "snap-1", targets.clone(), 1, None).await?;
    let root1 = root1.last().expect("done").manifest_root.clone();
    write_block(&a, VOL, 2, stamped(200)).await?;
    let r2 = freeze(&a, VOL, "snap-2", "snap-1").await?;
    assert_eq!((r2.incremental, r2.blocks_to_read), (true, 1));
    // After the freeze: overwrite the frozen block (saved first) and another.
    write_block(&a, VOL, 2, stamped(300)).await?;
    write_block(&a, VOL, 3, stamped(301)).await?;
    assert!(volume_stats(&a, VOL).await?.tracking_known);

    let dir = {
        let TestNode { node, dir } = a;
        node.kill_for_test().await;
        dir
    };
    // A write torn by the kill: half a record at the end of the overlay.
    let overlay = dir.path().join(format!("volumes/{VOL}.state/freezes/snap-2/overlay"));
    let len = std::fs::metadata(&overlay)?.len();
    assert!(len > BS, "the overwritten block was saved");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&overlay)?;
        f.write_all(&[0x31, 0x4c, 0x52, 0x43, 0, 0, 8, 0, 1, 2, 3])?;
    }
    let a = restart("chunk-a", "cairn-1a", dir).await?;
    let s = volume_stats(&a, VOL).await?;
    assert!(!s.tracking_known, "tracking is unknown after a kill");
    assert_eq!(std::fs::metadata(&overlay)?.len(), len, "the torn record was dropped");

    let p2 =
        copy_with_parent(&a, VOL, "snap-2", targets.clone(), 1, Some((&root1, "snap-1"))).await?;
    let root2 = p2.last().expect("done").manifest_root.clone();
    restore(&store, "vol-00000000000000032", BLOCKS * BS, &root2, targets.clone(), 1).await?;
    let image = read_all(&store, "vol-00000000000000032").await?;
    let stamps: Vec<Option<u64>> = image.chunks(BLOCK_SIZE).map(stamp_of).collect();
    let mut want: Vec<Option<u64>> = (1..=BLOCKS).map(Some).collect();
    want[2] = Some(200);
    assert_eq!(stamps, want, "exactly the frozen image");

    // Next snapshot: tracking unknown, so every block is read, but only the
    // chunks the destination lacks (blocks 2 and 3) are sent.
    let r3 = freeze(&a, VOL, "snap-3", "snap-2").await?;
    assert_eq!((r3.incremental, r3.blocks_to_read), (false, BLOCKS));
    assert!(volume_stats(&a, VOL).await?.tracking_known, "known again from this freeze on");
    let p3 =
        copy_with_parent(&a, VOL, "snap-3", targets.clone(), 1, Some((&root2, "snap-2"))).await?;
    let last = p3.last().expect("done");
    assert_eq!(last.blocks_read, BLOCKS);
    // Two new chunks, plus the page and the root.
    assert_eq!(last.chunks_sent, 4);
    write_block(&a, VOL, 9, stamped(900)).await?;
    let r4 = freeze(&a, VOL, "snap-4", "snap-3").await?;
    assert_eq!((r4.incremental, r4.blocks_to_read), (true, 1));
    a.node.shutdown().await;
    store.node.shutdown().await;
    Ok(())
}

/// A copy interrupted after its first checkpoint, then the host killed and
/// restarted: the re-run continues from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_resumes_from_its_checkpoint_after_a_kill() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000041";
    const BLOCKS: u64 = 256;
    let a = start("chunk-a", "cairn-1a").await?;
    let targets = vec![a.store_node()];
    create_volume(&a, VOL, BLOCKS * BS).await?;
    for i in 0..BLOCKS {
        write_block(&a, VOL, i, stamped(i + 1)).await?;
    }
    freeze(&a, VOL, "snap-1", "").await?;
    let mut c = a.volumes().await?;
    let req = cairn_proto::pb::CopyRequest {
        volume_id: VOL.into(),
        snapshot_id: "snap-1".into(),
        targets: targets.clone(),
        replication_factor: 1,
        ..Default::default()
    };
    let mut stream = c.copy(req).await?.into_inner();
    let mut percents = Vec::new();
    loop {
        let p = stream.message().await?.expect("progress before done");
        percents.push(p.percent);
        if p.checkpoint_block > 0 {
            assert!(!p.done && p.percent < 100);
            break;
        }
    }
    drop(stream);
    let dir = {
        let TestNode { node, dir } = a;
        node.kill_for_test().await;
        dir
    };
    let a = restart("chunk-a", "cairn-1a", dir).await?;
    let targets = vec![a.store_node()];
    let progress = copy_with_parent(&a, VOL, "snap-1", targets.clone(), 1, None).await?;
    let first = progress.first().expect("progress");
    assert!(first.checkpoint_block > 0, "resumed at {}", first.checkpoint_block);
    let last = progress.last().expect("done");
    assert!(last.done);
    assert!(last.blocks_read < BLOCKS, "second run read {} of {BLOCKS}", last.blocks_read);
    assert_eq!(last.blocks_read, BLOCKS - first.checkpoint_block);
    let mut all: Vec<u32> = progress.iter().map(|p| p.percent).collect();
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
    all.dedup();
    assert!(all.len() >= 3, "progress rises in steps: {all:?}");
    restore(&a, "vol-00000000000000042", BLOCKS * BS, &last.manifest_root, targets, 1).await?;
    let image = read_all(&a, "vol-00000000000000042").await?;
    for (i, b) in image.chunks(BLOCK_SIZE).enumerate() {
        assert_eq!(stamp_of(b), Some(i as u64 + 1), "block {i}");
    }
    a.node.shutdown().await;
    Ok(())
}

/// An unreachable placement target fails the copy with Unavailable instead
/// of under-replicating; the retry with the target back completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_replica_fails_the_copy() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000051";
    let a = start("chunk-a", "cairn-1a").await?;
    let b = start("chunk-b", "cairn-1b").await?;
    create_volume(&a, VOL, 8 * BS).await?;
    for i in 0..8 {
        write_block(&a, VOL, i, stamped(i + 1)).await?;
    }
    freeze(&a, VOL, "snap-1", "").await?;
    let b_node = b.store_node();
    let b_dir = {
        let TestNode { node, dir } = b;
        node.shutdown().await;
        dir
    };
    let err = copy_with_parent(&a, VOL, "snap-1", vec![a.store_node(), b_node.clone()], 2, None)
        .await
        .expect_err("a replica is down");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let b = restart("chunk-b", "cairn-1b", b_dir).await?;
    let p =
        copy_with_parent(&a, VOL, "snap-1", vec![a.store_node(), b.store_node()], 2, None).await?;
    assert!(p.last().expect("done").done);
    // RF 2 over two nodes: both hold everything (8 chunks, a page, a root).
    assert_eq!(b.stats().await?.chunks, 10);
    assert_eq!(a.stats().await?.chunks, 10);
    a.node.shutdown().await;
    b.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_five_pending_freezes() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000061";
    let a = start("chunk-a", "cairn-1a").await?;
    create_volume(&a, VOL, 4 * BS).await?;
    for k in 1..=5 {
        freeze(&a, VOL, &format!("snap-{k}"), "").await?;
    }
    freeze(&a, VOL, "snap-3", "").await?; // the same freeze again is fine
    let err = freeze(&a, VOL, "snap-6", "").await.expect_err("sixth");
    assert_eq!(err.code(), Code::ResourceExhausted);
    a.volumes()
        .await?
        .release(cairn_proto::pb::ReleaseRequest {
            volume_id: VOL.into(),
            snapshot_id: "snap-1".into(),
        })
        .await?;
    freeze(&a, VOL, "snap-6", "").await?;
    a.node.shutdown().await;
    Ok(())
}

/// A restored volume is usable at once: reads fetch on demand while the
/// hydrator works, a partial write fetches its block first, a whole-block
/// write needs no fetch, and hydration resumes after a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lazy_restore_serves_reads_while_hydrating() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000071";
    const NEW: &str = "vol-00000000000000072";
    const BLOCKS: u64 = 384;
    let src = start("chunk-s", "cairn-1b").await?;
    let b = start("chunk-b", "cairn-1a").await?;
    let targets = vec![src.store_node()];
    create_volume(&src, VOL, BLOCKS * BS).await?;
    for i in (0..BLOCKS).filter(|i| i % 5 != 4) {
        write_block(&src, VOL, i, stamped(i + 1)).await?;
    }
    freeze(&src, VOL, "snap-1", "").await?;
    let p = copy_with_parent(&src, VOL, "snap-1", targets.clone(), 1, None).await?;
    let root = p.last().expect("done").manifest_root.clone();

    restore(&b, NEW, BLOCKS * BS, &root, targets.clone(), 1).await?;
    let s = volume_stats(&b, NEW).await?;
    assert_eq!(s.total_blocks, BLOCKS);
    assert!(s.hydrated_blocks < s.total_blocks, "reading starts before hydration ends: {s:?}");
    let v = b.node.volumes().get(NEW).expect("volume");
    // Partial write into a block not yet local (from the end, where the
    // hydrator starts last), and a whole-block write.
    v.write((BLOCKS - 2) * BS + 100, vec![0xab; 10], false).await?;
    v.write((BLOCKS - 3) * BS, stamped(7777), false).await?;
    let mut want: Vec<Vec<u8>> = (0..BLOCKS)
        .map(|i| if i % 5 == 4 { vec![0; BLOCK_SIZE] } else { stamped(i + 1) })
        .collect();
    want[(BLOCKS - 2) as usize][100..110].fill(0xab);
    want[(BLOCKS - 3) as usize] = stamped(7777);
    let image = read_all(&b, NEW).await?;
    for (i, (got, want)) in image.chunks(BLOCK_SIZE).zip(&want).enumerate() {
        assert!(got == &want[..], "block {i} differs");
    }

    let dir = {
        let TestNode { node, dir } = b;
        node.kill_for_test().await;
        dir
    };
    let b = restart("chunk-b", "cairn-1a", dir).await?;
    wait_for("hydration completes after the restart", WAIT, || async {
        volume_stats(&b, NEW).await.is_ok_and(|s| s.hydrated_blocks == s.total_blocks)
    })
    .await?;
    let image = read_all(&b, NEW).await?;
    for (i, (got, want)) in image.chunks(BLOCK_SIZE).zip(&want).enumerate() {
        assert!(got == &want[..], "block {i} differs after the restart");
    }
    for state in ["hydrate.map", "hydrate.ids", "hydrate.log"] {
        let path = b.dir.path().join(format!("volumes/{NEW}.state/{state}"));
        assert!(!path.exists(), "{state} left after hydration");
    }
    b.node.shutdown().await;
    src.node.shutdown().await;
    Ok(())
}

/// A restored volume's hydrator is one of the node's workers: listed while
/// the volume hydrates, and stopped once every block is local.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hydrator_is_a_listed_worker_that_stops_when_hydrated() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000073";
    const NEW: &str = "vol-00000000000000074";
    const BLOCKS: u64 = 64;
    let src = start("chunk-s", "cairn-1b").await?;
    let b = start("chunk-b", "cairn-1a").await?;
    let targets = vec![src.store_node()];
    create_volume(&src, VOL, BLOCKS * BS).await?;
    for i in 0..BLOCKS {
        write_block(&src, VOL, i, stamped(i + 1)).await?;
    }
    freeze(&src, VOL, "snap-1", "").await?;
    let p = copy_with_parent(&src, VOL, "snap-1", targets.clone(), 1, None).await?;
    let root = p.last().expect("done").manifest_root.clone();
    let hydrators = |ws: Vec<cairn_worker::WorkerStatus>| {
        ws.into_iter().filter(|w| w.name.starts_with("hydrator")).count()
    };
    assert_eq!(hydrators(b.node.workers()), 0, "no hydrator before a restore");

    restore(&b, NEW, BLOCKS * BS, &root, targets, 1).await?;
    let name = format!("hydrator {NEW}");
    let hydrator = || b.node.workers().into_iter().find(|w| w.name == name);
    assert!(hydrator().is_some(), "the hydrator is listed: {:?}", b.node.workers());
    wait_for("the hydrator stops", WAIT, || async {
        hydrator().is_some_and(|w| w.state == cairn_worker::WorkerState::Stopped)
    })
    .await?;
    let s = volume_stats(&b, NEW).await?;
    assert_eq!(s.hydrated_blocks, s.total_blocks, "stopped only once hydrated: {s:?}");
    let w = hydrator().expect("listed");
    assert_eq!(w.errors, 0, "{w:?}");
    b.node.shutdown().await;
    src.node.shutdown().await;
    Ok(())
}

/// A copy over several manifest pages, in batches of 8 blocks that cross
/// page boundaries, abandoned and its host killed mid-way: the resumed copy
/// (which replays its log into the manifest) writes the manifest an
/// uninterrupted copy of the same content writes, and it restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_copy_over_several_pages_writes_the_same_manifest() -> anyhow::Result<()> {
    use cairn_chunk_node::ChunkNodeConfig;
    use cairn_tests::node::start_with;
    const A: &str = "vol-00000000000000051";
    const B: &str = "vol-00000000000000052";
    let page = cairn_core::manifest::PAGE_BLOCKS;
    let size = 3 * page * BS;
    let small = |dir: &tempfile::TempDir| {
        let mut c = ChunkNodeConfig::for_test("chunk-a", "cairn-1a", dir.path());
        c.copy_memory_bytes = 1; // the smallest cut: batches of 8 blocks
        c
    };
    let dir = tempfile::tempdir()?;
    let n = start_with(small(&dir), dir).await?;
    // 60 blocks a page: the eighth batch holds page 0's last and page 1's first.
    let blocks: Vec<u64> = (0..3).flat_map(|p| (0..60).map(move |k| p * page + k * 61)).collect();
    for (vol, snap) in [(A, "snap-a"), (B, "snap-b")] {
        create_volume(&n, vol, size).await?;
        for &i in &blocks {
            write_block(&n, vol, i, stamped(i + 1)).await?;
        }
        freeze(&n, vol, snap, "").await?;
    }
    let targets = vec![n.store_node()];
    let whole = copy_with_parent(&n, B, "snap-b", targets.clone(), 1, None).await?;
    let want = whole.last().expect("done").manifest_root.clone();

    let req = cairn_proto::pb::CopyRequest {
        volume_id: A.into(),
        snapshot_id: "snap-a".into(),
        targets: targets.clone(),
        replication_factor: 1,
        ..Default::default()
    };
    let mut stream = n.volumes().await?.copy(req).await?.into_inner();
    while stream.message().await?.expect("progress before done").checkpoint_block == 0 {}
    drop(stream);
    let dir = {
        let TestNode { node, dir } = n;
        node.kill_for_test().await;
        dir
    };
    let n = start_with(small(&dir), dir).await?;
    let targets = vec![n.store_node()];
    let progress = copy_with_parent(&n, A, "snap-a", targets.clone(), 1, None).await?;
    let resumed_at = progress.first().expect("progress").checkpoint_block;
    let end = blocks.last().expect("blocks") + 1;
    assert!(resumed_at > 0 && resumed_at < end, "resumed mid-way, at {resumed_at}");
    let last = progress.last().expect("done");
    assert_eq!(last.manifest_root, want, "the same manifest as an uninterrupted copy");
    let root = cairn_core::ChunkId::from_slice(&want).expect("root");
    let bytes = n.node.store().get(root).await?.expect("root stored");
    let decoded = cairn_core::manifest::ManifestRoot::decode(&bytes)?;
    assert_eq!((decoded.pages.len(), decoded.data_blocks), (3, Some(blocks.len() as u64)));

    restore(&n, "vol-00000000000000053", size, &want, targets, 1).await?;
    let v = n.node.volumes().get("vol-00000000000000053").expect("restored");
    for &i in &blocks {
        assert_eq!(stamp_of(&v.read(i * BS, BLOCK_SIZE).await?), Some(i + 1), "block {i}");
    }
    n.node.shutdown().await;
    Ok(())
}
