//! Deletes that give space back: snapshots deleted anywhere in a chain of
//! incrementals, the parent of a pending incremental, the source of a
//! hydrating volume; garbage collection frees what nothing needs, and every
//! snapshot left restores byte for byte over NBD.

use cairn_tests::gc::{run_pass, stored_bytes};
use cairn_tests::nbd::NbdConn;
use cairn_tests::{pattern, wait_for, xml_text, TestCluster};
use std::collections::BTreeMap;
use std::time::Duration;

const BS: usize = cairn_core::BLOCK_SIZE;
const LONG: Duration = Duration::from_secs(120);
/// The blocks the tests write: the first 32 MiB of a 1 GiB volume.
const SPAN: u64 = 64;
/// The blocks the restore test writes: 128 MiB, so that the restored volume
/// is still hydrating when its source is deleted.
const WIDE: u64 = 256;

/// A block's content for `(round, block)`: distinct for each pair.
fn content(round: u64, b: u64) -> Vec<u8> {
    pattern(round << 32 | b)
}

async fn snapshot(c: &TestCluster, vol: &str) -> anyhow::Result<String> {
    let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", vol)]).await?;
    anyhow::ensure!(status == 200, "CreateSnapshot: {body}");
    Ok(xml_text(&body, "snapshotId").unwrap_or_default())
}

async fn completed(c: &TestCluster, snap: &str) -> anyhow::Result<()> {
    wait_for("the snapshot completes", LONG, || async {
        c.status_of("DescribeSnapshots", "SnapshotId.1", snap).await.as_deref() == Some("completed")
    })
    .await
}

async fn delete_snapshot(c: &TestCluster, snap: &str) -> anyhow::Result<()> {
    let (status, body) = c.ec2("DeleteSnapshot", &[("SnapshotId", snap)]).await?;
    anyhow::ensure!(status == 200, "DeleteSnapshot {snap}: {body}");
    Ok(())
}

/// Bytes of pack files on disk, over every node (what `du` sees).
fn pack_file_bytes(c: &TestCluster) -> u64 {
    let mut total = 0;
    for node in ["chunk-1a", "chunk-1b", "chunk-op"] {
        let dir = c.data_dir().join(node).join("packs");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

/// Restores `snap` into a new volume and checks its first SPAN blocks.
async fn restores_to(
    c: &TestCluster,
    snap: &str,
    want: &BTreeMap<u64, Vec<u8>>,
) -> anyhow::Result<()> {
    let span = want.keys().max().map_or(SPAN, |m| (m + 1).max(SPAN));
    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", snap)]).await?;
    anyhow::ensure!(status == 200, "restore {snap}: {body}");
    let vol = xml_text(&body, "volumeId").unwrap_or_default();
    wait_for("the restored volume is available", LONG, || async {
        c.status_of("DescribeVolumes", "VolumeId.1", &vol).await.as_deref() == Some("available")
    })
    .await?;
    let mut r = NbdConn::connect(c.nbd_addr(), &vol).await?;
    for b in 0..span {
        let got = r.read(b * BS as u64, BS as u32).await?;
        let ok = match want.get(&b) {
            Some(w) => got == *w,
            None => got.iter().all(|x| *x == 0),
        };
        anyhow::ensure!(ok, "snapshot {snap}: block {b} differs");
    }
    Ok(())
}

async fn new_volume(c: &TestCluster) -> anyhow::Result<String> {
    c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_every_other_snapshot_of_a_chain_frees_space_and_the_rest_restore(
) -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let vol = new_volume(&c).await?;
    let mut w = NbdConn::connect(c.nbd_addr(), &vol).await?;
    let mut image: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut chain = Vec::new();
    for round in 0..10u64 {
        // The first snapshot is full; each later one rewrites 8 blocks.
        let blocks: Vec<u64> = if round == 0 {
            (0..SPAN).collect()
        } else {
            (0..8).map(|i| (round * 5 + i * 7) % SPAN).collect()
        };
        for b in blocks {
            let data = content(round, b);
            w.write(b * BS as u64, &data).await?;
            image.insert(b, data);
        }
        w.flush().await?;
        let snap = snapshot(&c, &vol).await?;
        completed(&c, &snap).await?;
        chain.push((snap, image.clone()));
    }
    let first = run_pass(c.http_addr()).await?;
    assert_eq!(first["deleted"], 0, "nothing is garbage yet: {first}");
    let before = (stored_bytes(c.http_addr()).await?, pack_file_bytes(&c));

    // The first, the middle ones and the last but one.
    for (snap, _) in chain.iter().step_by(2) {
        delete_snapshot(&c, snap).await?;
    }
    let report = run_pass(c.http_addr()).await?;
    let after = (stored_bytes(c.http_addr()).await?, pack_file_bytes(&c));
    eprintln!("gc after deleting 5 of 10: {report}\nstored {before:?} -> {after:?}");
    assert!(report["deleted"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(after.0 < before.0, "the chunk stores hold less: {before:?} -> {after:?}");

    for (snap, want) in chain.iter().skip(1).step_by(2) {
        restores_to(&c, snap, want).await?;
    }
    // A second pass finds nothing more to delete.
    let again = run_pass(c.http_addr()).await?;
    assert_eq!(again["deleted"], 0, "{again}");

    // Only the last snapshot left: most of what the packs hold is dead, so
    // compaction gives the disk back (what `du` sees falls).
    let kept = chain.iter().skip(1).step_by(2).map(|(s, _)| s);
    for snap in kept.clone().take(4) {
        delete_snapshot(&c, snap).await?;
    }
    let last = run_pass(c.http_addr()).await?;
    let end = (stored_bytes(c.http_addr()).await?, pack_file_bytes(&c));
    eprintln!("gc after keeping only the last: {last}\nstored {after:?} -> {end:?}");
    assert!(last["bytes_freed"].as_u64().unwrap_or(0) > 0, "{last}");
    assert!(end.1 < after.1, "pack files take less disk: {after:?} -> {end:?}");
    let (snap, want) = chain.last().expect("ten snapshots");
    restores_to(&c, snap, want).await?;
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_parent_or_source_stays_while_a_child_or_a_restore_needs_it() -> anyhow::Result<()>
{
    let c = TestCluster::start().await?;
    let vol = new_volume(&c).await?;
    let mut w = NbdConn::connect(c.nbd_addr(), &vol).await?;
    let mut image: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for b in 0..WIDE {
        let data = content(1, b);
        w.write(b * BS as u64, &data).await?;
        image.insert(b, data);
    }
    w.flush().await?;
    let parent = snapshot(&c, &vol).await?;
    completed(&c, &parent).await?;
    let parent_image = image.clone();
    // A pass now fences the parent's chunks into an older generation than
    // the child's and the restore's: only their holds' roots keep them.
    run_pass(c.http_addr()).await?;

    // An incremental changing half the blocks: the parent is deleted and
    // collected while the child may still be pending.
    for b in (0..WIDE).step_by(2) {
        let data = content(2, b);
        w.write(b * BS as u64, &data).await?;
        image.insert(b, data);
    }
    w.flush().await?;
    let child = snapshot(&c, &vol).await?;
    // A restore from the parent, still hydrating when the parent goes.
    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", &parent)]).await?;
    anyhow::ensure!(status == 200, "{body}");
    let restored = xml_text(&body, "volumeId").unwrap_or_default();
    // Available (so the parent may be deleted) while it still hydrates.
    wait_for("the restored volume is available", LONG, || async {
        c.status_of("DescribeVolumes", "VolumeId.1", &restored).await.as_deref()
            == Some("available")
    })
    .await?;

    delete_snapshot(&c, &parent).await?;
    let child_then = c.status_of("DescribeSnapshots", "SnapshotId.1", &child).await;
    let hydrating = c.volume_stats(&restored).map(|s| s.total_blocks - s.hydrated_blocks);
    let during = run_pass(c.http_addr()).await?;
    eprintln!("parent deleted: child {child_then:?}, restored volume lacking {hydrating:?} blocks; gc {during}");
    // The restored volume holds the deleted parent's manifest (and the child
    // while pending): nothing of the parent the child or volume need goes.
    assert!(during["holds"].as_u64().unwrap_or(0) >= 1, "{during}");
    completed(&c, &child).await?;
    run_pass(c.http_addr()).await?;
    restores_to(&c, &child, &image).await?;

    let mut r = NbdConn::connect(c.nbd_addr(), &restored).await?;
    for b in 0..WIDE {
        let got = r.read(b * BS as u64, BS as u32).await?;
        anyhow::ensure!(got == parent_image[&b], "restored volume: block {b} differs");
    }
    // Hydrated now: its hold goes with the next pass.
    wait_for("hydration completes", LONG, || async {
        c.volume_stats(&restored).is_some_and(|s| s.hydrated_blocks == s.total_blocks)
    })
    .await?;
    let report = run_pass(c.http_addr()).await?;
    assert_eq!(
        report["holds"], 0,
        "hydrated volumes and completed snapshots hold nothing: {report}"
    );
    c.shutdown().await;
    Ok(())
}
