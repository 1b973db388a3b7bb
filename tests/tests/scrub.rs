//! Scrub and repair in a cluster: a record rotten on one regional node is
//! found by `/_cairn/scrub`, rebuilt from the other regional node, and the
//! snapshot then restores byte for byte from the repaired node alone.

use cairn_core::ChunkId;
use cairn_tests::nbd::NbdConn;
use cairn_tests::scrub::run_scrub;
use cairn_tests::{pattern, wait_for, xml_text, TestCluster};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

const BS: usize = cairn_core::BLOCK_SIZE;
const LONG: Duration = Duration::from_secs(120);
const BLOCKS: u64 = 16;

fn content(b: u64) -> Vec<u8> {
    pattern(b + 1)
}

/// Records in a pack start on this boundary (the chunk node's direct I/O).
const ALIGN: u64 = 4096;

/// The first data block record (not a small manifest record, whose padding
/// a flip could miss) of `node`'s lowest-numbered pack: (pack file, chunk id).
fn first_record(c: &TestCluster, node: &str) -> anyhow::Result<(PathBuf, ChunkId)> {
    let dir = c.data_dir().join(node).join("packs");
    let mut packs: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack" || e == "open"))
        .collect();
    packs.sort();
    let pack = packs.first().cloned().ok_or_else(|| anyhow::anyhow!("no pack in {dir:?}"))?;
    let file = std::fs::File::open(&pack)?;
    let size = file.metadata()?.len();
    let mut pos = 0u64;
    let mut header = [0u8; 40];
    while pos + 40 <= size {
        file.read_exact_at(&mut header, pos)?;
        let len = u64::from(u32::from_le_bytes(header[4..8].try_into()?));
        if len == BS as u64 {
            let id =
                ChunkId::from_slice(&header[8..]).ok_or_else(|| anyhow::anyhow!("bad header"))?;
            return Ok((pack, id));
        }
        pos = (pos + 40 + len).next_multiple_of(ALIGN);
    }
    anyhow::bail!("no data block record in {pack:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotten_copy_is_repaired_and_restores_without_the_other_replica() -> anyhow::Result<()> {
    let mut c = TestCluster::start().await?;
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    let mut w = NbdConn::connect(c.nbd_addr(), &vol).await?;
    for b in 0..BLOCKS {
        w.write(b * BS as u64, &content(b)).await?;
    }
    w.flush().await?;
    let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", &vol)]).await?;
    anyhow::ensure!(status == 200, "CreateSnapshot: {body}");
    let snap = xml_text(&body, "snapshotId").unwrap_or_default();
    wait_for("the snapshot completes", LONG, || async {
        c.status_of("DescribeSnapshots", "SnapshotId.1", &snap).await.as_deref()
            == Some("completed")
    })
    .await?;

    // Rot one record on chunk-1a (c.chunks[0]).
    let (_, id) = first_record(&c, "chunk-1a")?;
    let (pack, payload) = c.chunks[0].store().locate(&id).expect("the record is indexed");
    let f = std::fs::File::options().read(true).write(true).open(&pack)?;
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, payload + 100)?;
    b.iter_mut().for_each(|x| *x ^= 0xa5);
    f.write_all_at(&b, payload + 100)?;
    drop(f);

    let nodes = run_scrub(c.http_addr()).await?;
    let a = &nodes["chunk-1a"];
    eprintln!("scrub: {nodes:?}");
    assert!(a["found"].as_u64().unwrap_or(0) >= 1, "{a}");
    assert_eq!(a["repaired"], a["found"], "{a}");
    assert_eq!(a["unrepairable"], 0, "{a}");
    assert!(a["records_checked"].as_u64().unwrap_or(0) > BLOCKS, "{a}");
    for other in ["chunk-1b", "chunk-op"] {
        assert_eq!(nodes[other]["found"], 0, "{other}: {}", nodes[other]);
    }
    assert!(c.chunks[0].store().get(id).await?.is_some(), "the repaired copy reads back");

    // Only the repaired node holds the region's copies now.
    let b = c.chunks.remove(1);
    anyhow::ensure!(b.info().node_id == "chunk-1b", "chunk-1b is the second node");
    b.shutdown().await;
    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("SnapshotId", &snap)]).await?;
    anyhow::ensure!(status == 200, "restore: {body}");
    let restored = xml_text(&body, "volumeId").unwrap_or_default();
    wait_for("the restored volume is available", LONG, || async {
        c.status_of("DescribeVolumes", "VolumeId.1", &restored).await.as_deref()
            == Some("available")
    })
    .await?;
    let mut r = NbdConn::connect(c.nbd_addr(), &restored).await?;
    for b in 0..BLOCKS {
        let got = r.read(b * BS as u64, BS as u32).await?;
        anyhow::ensure!(got == content(b), "block {b} differs after the repair");
    }
    c.shutdown().await;
    Ok(())
}
