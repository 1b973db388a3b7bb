//! A volume restored from a snapshot is usable at once: it is read over the
//! gateway's NBD door while its blocks are still being hydrated, and every
//! byte matches.

use cairn_tests::nbd::NbdConn;
use cairn_tests::{pattern, wait_for, xml_text, TestCluster};
use std::time::{Duration, Instant};

const BS: usize = cairn_core::BLOCK_SIZE;
/// The first 256 MiB of the 1 GiB volume are written (every fifth block zero).
const BLOCKS: u64 = 512;
const LONG: Duration = Duration::from_secs(120);

/// Block `b`'s content: distinct per block, every fifth all zero.
fn content(b: u64) -> Vec<u8> {
    if b % 5 == 4 {
        return vec![0; BS];
    }
    pattern(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restored_volume_reads_correctly_while_hydrating() -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    anyhow::ensure!(status == 200, "{body}");
    let vol = xml_text(&body, "volumeId").unwrap_or_default();
    wait_for("the volume is available", LONG, || async {
        c.status_of("DescribeVolumes", "VolumeId.1", &vol).await.as_deref() == Some("available")
    })
    .await?;
    let mut w = NbdConn::connect(c.nbd_addr(), &vol).await?;
    for b in 0..BLOCKS {
        let data = content(b);
        if b % 5 != 4 {
            w.write(b * BS as u64, &data).await?;
        }
    }
    let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", &vol)]).await?;
    anyhow::ensure!(status == 200, "{body}");
    let snap = xml_text(&body, "snapshotId").unwrap_or_default();
    let copy_started = Instant::now();
    wait_for("the snapshot completes", LONG, || async {
        c.status_of("DescribeSnapshots", "SnapshotId.1", &snap).await.as_deref()
            == Some("completed")
    })
    .await?;
    let copy_time = copy_started.elapsed();

    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", &snap)]).await?;
    anyhow::ensure!(status == 200, "{body}");
    let restored = xml_text(&body, "volumeId").unwrap_or_default();
    let restore_started = Instant::now();
    wait_for("the restored volume is available", LONG, || async {
        c.status_of("DescribeVolumes", "VolumeId.1", &restored).await.as_deref()
            == Some("available")
    })
    .await?;
    let available_after = restore_started.elapsed();
    let mut r = NbdConn::connect(c.nbd_addr(), &restored).await?;
    let at_start = c.volume_stats(&restored).ok_or_else(|| anyhow::anyhow!("no host has it"))?;
    assert!(
        at_start.hydrated_blocks < at_start.total_blocks,
        "reading starts while hydrating: {at_start:?}"
    );
    // Read from the end backwards: the hydrator works from the front, so
    // these reads fetch on demand.
    for b in (0..BLOCKS).rev() {
        let got = r.read(b * BS as u64, BS as u32).await?;
        assert!(got == content(b), "block {b} differs");
    }
    let read_time = restore_started.elapsed();
    let size = r.size();
    let mut off = BLOCKS * BS as u64;
    while off < size {
        let len = (8u64 << 20).min(size - off);
        assert!(r.read(off, len as u32).await?.iter().all(|b| *b == 0), "zero at {off}");
        off += len;
    }
    wait_for("hydration completes", LONG, || async {
        c.volume_stats(&restored).is_some_and(|s| s.hydrated_blocks == s.total_blocks)
    })
    .await?;
    eprintln!(
        "lazy restore: copy {copy_time:?}, available after {available_after:?}, \
         {} of {} blocks local when reading started, 256 MiB read back after {read_time:?}",
        at_start.hydrated_blocks, at_start.total_blocks
    );
    c.shutdown().await;
    Ok(())
}
