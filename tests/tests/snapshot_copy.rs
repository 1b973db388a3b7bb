//! Freeze, copy and restore across two chunk nodes in different AZs, with
//! the bytes checked by real NBD clients.

use cairn_core::{ChunkId, BLOCK_SIZE};
use cairn_proto::pb;
use cairn_tests::node::{create_volume, start, write_test_image, TestNode};
use cairn_tests::{ok, run};
use std::collections::HashSet;
use tonic::Code;

const VOL: &str = "vol-00000000000000001";
const VOL2: &str = "vol-00000000000000002";
const RESTORED: &str = "vol-00000000000000003";
const BIG: &str = "vol-00000000000000004";

async fn freeze(n: &TestNode, vol: &str, snap: &str) -> anyhow::Result<()> {
    let req =
        pb::FreezeRequest { volume_id: vol.into(), snapshot_id: snap.into(), ..Default::default() };
    n.volumes().await?.freeze(req).await?;
    Ok(())
}

/// Runs a copy to completion; returns every progress message.
async fn copy(
    n: &TestNode,
    vol: &str,
    snap: &str,
    targets: Vec<pb::StoreNode>,
) -> Result<Vec<pb::CopyProgress>, tonic::Status> {
    let mut client = n.volumes().await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let req = pb::CopyRequest {
        volume_id: vol.into(),
        snapshot_id: snap.into(),
        targets,
        replication_factor: 2,
        ..Default::default()
    };
    let mut stream = client.copy(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(p) = stream.message().await? {
        out.push(p);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_copy_dedup_and_restore() -> anyhow::Result<()> {
    let a = start("chunk-a", "cairn-1a").await?;
    let b = start("chunk-b", "cairn-1b").await?;
    let targets = vec![a.store_node(), b.store_node()];
    let size = 16usize << 20;
    let src = a.dir.path().join("src.raw");
    let data = write_test_image(&src, size, 7)?;
    let src = src.to_str().expect("utf8");

    create_volume(&a, VOL, size as u64).await?;
    ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src, &a.nbd_url(VOL)]).await?;

    // Not frozen yet: the copy is refused before it starts.
    let err =
        copy(&a, VOL, "snap-00000000000000001", targets.clone()).await.expect_err("not frozen");
    assert_eq!(err.code(), Code::NotFound);

    freeze(&a, VOL, "snap-00000000000000001").await?;
    // A write after the freeze returned must not be in the snapshot.
    ok("qemu-io", &["-f", "raw", &a.nbd_url(VOL), "-c", "write -P 0xee 0 512k"]).await?;

    let progress = copy(&a, VOL, "snap-00000000000000001", targets.clone()).await?;
    let last = progress.last().expect("progress");
    assert!(last.done && last.percent == 100);
    let percents: Vec<u32> = progress.iter().map(|p| p.percent).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert!(progress[..progress.len() - 1].iter().all(|p| !p.done));
    let root = last.manifest_root.clone();
    assert_eq!(root.len(), 32);

    let distinct: HashSet<ChunkId> =
        data.chunks(BLOCK_SIZE).filter(|b| !cairn_core::is_zero(b)).map(ChunkId::of).collect();
    let nonzero = data.chunks(BLOCK_SIZE).filter(|b| !cairn_core::is_zero(b)).count();
    assert_eq!(last.full_size_bytes, (nonzero * BLOCK_SIZE) as u64);
    // Block 5 duplicates block 1: one fewer distinct chunk than non-zero blocks.
    assert_eq!(distinct.len(), nonzero - 1);
    // RF 2 over two nodes: every chunk, page and root on both nodes.
    let expect = distinct.len() as u64 + 2;
    assert_eq!(last.chunks_sent, 2 * expect);
    // The data sent after dedup: each distinct block once, whatever the RF.
    assert_eq!(last.new_data_bytes, (distinct.len() * BLOCK_SIZE) as u64);
    let (sa, sb) = (a.stats().await?, b.stats().await?);
    assert_eq!((sa.chunks, sb.chunks), (expect, expect));
    assert_eq!((sa.node_id.as_str(), sa.zone.as_str()), ("chunk-a", "cairn-1a"));

    // The same bytes in another volume: copying again sends nothing new.
    create_volume(&a, VOL2, size as u64).await?;
    ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src, &a.nbd_url(VOL2)]).await?;
    freeze(&a, VOL2, "snap-00000000000000002").await?;
    let again = copy(&a, VOL2, "snap-00000000000000002", targets.clone()).await?;
    let last2 = again.last().expect("progress");
    assert_eq!(last2.manifest_root, root, "same content, same manifest");
    assert_eq!((last2.chunks_sent, last2.new_data_bytes), (0, 0));
    assert_eq!(a.stats().await?.bytes, sa.bytes);
    assert_eq!(b.stats().await?.chunks, sb.chunks);

    // Restore on the other node and compare over NBD.
    let restore = pb::CreateVolumeRequest {
        volume_id: RESTORED.into(),
        size_bytes: size as u64,
        manifest_root: root.clone(),
        sources: targets.clone(),
        replication_factor: 2,
    };
    b.volumes().await?.create_volume(restore.clone()).await?;
    b.volumes().await?.create_volume(restore).await?; // idempotent
    let restored = b.nbd_url(RESTORED);
    ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", src, &restored]).await?;
    // The live volume has the post-freeze write; the restored copy does not.
    let (code, _) =
        run("qemu-img", &["compare", "-f", "raw", "-F", "raw", src, &a.nbd_url(VOL)]).await?;
    assert_eq!(code, 1);
    ok("qemu-io", &["-f", "raw", &a.nbd_url(VOL), "-c", "read -P 0xee 0 512k"]).await?;
    let stats = b
        .volumes()
        .await?
        .volume_stats(pb::VolumeStatsRequest { volume_id: RESTORED.into() })
        .await?;
    assert!(stats.get_ref().exists && stats.get_ref().size_bytes == size as u64);

    // Release drops the frozen image; a copy then fails as not frozen.
    let rel =
        pb::ReleaseRequest { volume_id: VOL.into(), snapshot_id: "snap-00000000000000001".into() };
    a.volumes().await?.release(rel).await?;
    let err = copy(&a, VOL, "snap-00000000000000001", targets.clone()).await.expect_err("released");
    assert_eq!(err.code(), Code::NotFound);

    a.node.shutdown().await;
    b.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_sparse_volume_copies_only_its_data() -> anyhow::Result<()> {
    let a = start("chunk-a", "cairn-1a").await?;
    let size = 1u64 << 30;
    create_volume(&a, BIG, size).await?;
    let url = a.nbd_url(BIG);
    ok("qemu-io", &["-f", "raw", &url, "-c", "write -P 0x11 700M 4k", "-c", "write -z 100M 1M"])
        .await?;
    // Copy-on-write: freezing copies nothing, and only blocks that may
    // hold data are to be read.
    let reply = a
        .volumes()
        .await?
        .freeze(pb::FreezeRequest {
            volume_id: BIG.into(),
            snapshot_id: "snap-00000000000000009".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(!reply.incremental);
    assert!(reply.blocks_to_read <= 4, "to read: {}", reply.blocks_to_read);
    let overlay =
        a.dir.path().join(format!("volumes/{BIG}.state/freezes/snap-00000000000000009/overlay"));
    assert_eq!(std::fs::metadata(&overlay)?.len(), 0, "nothing saved before any write");

    let progress = copy(&a, BIG, "snap-00000000000000009", vec![a.store_node()]).await?;
    let last = progress.last().expect("progress");
    // The written block (plus at most the allocated zero range) is read; only it is stored.
    assert!(last.blocks_read <= 4, "read {} blocks", last.blocks_read);
    assert_eq!(last.full_size_bytes, BLOCK_SIZE as u64);
    assert_eq!(a.stats().await?.chunks, 3, "one block, one page, one root");

    // Restore onto the same node at a larger size and check the bytes.
    let req = pb::CreateVolumeRequest {
        volume_id: "vol-00000000000000005".into(),
        size_bytes: 2 * size,
        manifest_root: last.manifest_root.clone(),
        sources: vec![a.store_node()],
        replication_factor: 1,
    };
    a.volumes().await?.create_volume(req).await?;
    let url = a.nbd_url("vol-00000000000000005");
    ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            &url,
            "-c",
            "read -P 0x11 700M 4k",
            "-c",
            "read -P 0 0 1M",
            "-c",
            "read -P 0 1500M 1M",
        ],
    )
    .await?;
    a.node.shutdown().await;
    Ok(())
}

/// A node whose `copy_memory_bytes` is below the smallest cut copies in
/// batches of 8 blocks (one progress message each), two copies at once
/// share that budget without either stalling, and both restore exactly on
/// a node with no `restore_cache_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_share_a_small_copy_memory() -> anyhow::Result<()> {
    use cairn_chunk_node::ChunkNodeConfig;
    use cairn_tests::node::{copy_with_parent, read_all, restore, start_with};
    let dir = tempfile::tempdir()?;
    let mut config = ChunkNodeConfig::for_test("chunk-a", "cairn-1a", dir.path());
    config.copy_memory_bytes = 1 << 20;
    let a = start_with(config, dir).await?;
    // The restoring side keeps no repeated chunk (block 5 repeats block 1):
    // each is fetched again, and the bytes are the same.
    let dir = tempfile::tempdir()?;
    let mut config = ChunkNodeConfig::for_test("chunk-b", "cairn-1b", dir.path());
    config.restore_cache_bytes = 0;
    let b = start_with(config, dir).await?;
    let targets = vec![a.store_node(), b.store_node()];
    let size = 16usize << 20;
    let snaps = ["snap-00000000000000011", "snap-00000000000000012"];
    let mut images = Vec::new();
    for (k, vol) in [VOL, VOL2].into_iter().enumerate() {
        let src = a.dir.path().join(format!("src{k}.raw"));
        let data = write_test_image(&src, size, 11 + k as u64)?;
        create_volume(&a, vol, size as u64).await?;
        let src = src.to_str().expect("utf8");
        ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src, &a.nbd_url(vol)]).await?;
        let to_read = cairn_tests::node::freeze(&a, vol, snaps[k], "").await?.blocks_to_read;
        images.push((data, to_read));
    }
    let (p1, p2) = tokio::join!(
        copy_with_parent(&a, VOL, snaps[0], targets.clone(), 2, None),
        copy_with_parent(&a, VOL2, snaps[1], targets.clone(), 2, None),
    );
    for (k, (progress, (data, to_read))) in [p1?, p2?].into_iter().zip(&images).enumerate() {
        // The first message, one per batch of 8 blocks, and the last.
        assert_eq!(progress.len() as u64, 2 + to_read.div_ceil(8), "copy {k}");
        let last = progress.last().expect("done");
        assert!(last.done);
        let restored = format!("vol-0000000000000002{k}");
        restore(&b, &restored, size as u64, &last.manifest_root, targets.clone(), 2).await?;
        assert!(read_all(&b, &restored).await? == *data, "copy {k} restores its bytes");
    }
    a.node.shutdown().await;
    b.node.shutdown().await;
    Ok(())
}
