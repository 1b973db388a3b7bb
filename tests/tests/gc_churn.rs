//! Garbage collection running in a loop while eight writers create and
//! delete snapshots: afterwards every completed snapshot restores byte for
//! byte, and the chunk stores hold within 10% of what the live snapshots
//! need.

use cairn_tests::gc::{run_pass, stored_bytes};
use cairn_tests::nbd::NbdConn;
use cairn_tests::{pattern, wait_for, xml_text, TestCluster};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BS: usize = cairn_core::BLOCK_SIZE;
const LONG: Duration = Duration::from_secs(180);
const WRITERS: u64 = 8;
const ROUNDS: u64 = 6;
/// Blocks each writer's volume uses.
const SPAN: u64 = 12;

fn content(writer: u64, round: u64, b: u64) -> Vec<u8> {
    pattern(writer << 48 | round << 24 | b)
}

type Image = BTreeMap<u64, Vec<u8>>;

/// One writer: rewrites a few blocks, snapshots, and deletes every other
/// snapshot it took. Returns the snapshots it kept and their images.
async fn writer(c: &TestCluster, w: u64) -> anyhow::Result<Vec<(String, Image)>> {
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    let mut nbd = NbdConn::connect(c.nbd_addr(), &vol).await?;
    let mut image = Image::new();
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..3 {
            let b = (round * 5 + i * 4 + w) % SPAN;
            let data = content(w, round, b);
            nbd.write(b * BS as u64, &data).await?;
            image.insert(b, data);
        }
        nbd.flush().await?;
        let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", &vol)]).await?;
        anyhow::ensure!(status == 200, "CreateSnapshot: {body}");
        let snap = xml_text(&body, "snapshotId").unwrap_or_default();
        wait_for("a snapshot completes", LONG, || async {
            c.status_of("DescribeSnapshots", "SnapshotId.1", &snap).await.as_deref()
                == Some("completed")
        })
        .await?;
        if round % 2 == 0 {
            let (status, body) = c.ec2("DeleteSnapshot", &[("SnapshotId", &snap)]).await?;
            anyhow::ensure!(status == 200, "DeleteSnapshot: {body}");
        } else {
            kept.push((snap, image.clone()));
        }
    }
    Ok(kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_beside_eight_writers_keeps_every_snapshot_and_frees_the_rest(
) -> anyhow::Result<()> {
    let c = Arc::new(TestCluster::start().await?);
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let (c, done) = (c.clone(), done.clone());
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !done.load(Ordering::Relaxed) {
                run_pass(c.http_addr()).await?;
                passes += 1;
            }
            anyhow::Ok(passes)
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move { writer(&c, w).await })
        })
        .collect();
    let mut kept = Vec::new();
    for w in writers {
        kept.extend(w.await??);
    }
    done.store(true, Ordering::Relaxed);
    let passes = collector.await??;
    let last = run_pass(c.http_addr()).await?;

    for (snap, want) in &kept {
        let (status, body) = c
            .ec2("CreateVolume", &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", snap)])
            .await?;
        anyhow::ensure!(status == 200, "restore {snap}: {body}");
        let vol = xml_text(&body, "volumeId").unwrap_or_default();
        wait_for("the restored volume is available", LONG, || async {
            c.status_of("DescribeVolumes", "VolumeId.1", &vol).await.as_deref() == Some("available")
        })
        .await?;
        let mut r = NbdConn::connect(c.nbd_addr(), &vol).await?;
        for b in 0..SPAN {
            let got = r.read(b * BS as u64, BS as u32).await?;
            let ok = match want.get(&b) {
                Some(w) => got == *w,
                None => got.iter().all(|x| *x == 0),
            };
            anyhow::ensure!(ok, "snapshot {snap}: block {b} differs");
        }
    }

    // What the live snapshots need: their distinct blocks, on the two
    // regional nodes (RF 3 over two nodes is two replicas), plus manifests.
    let live: HashSet<&Vec<u8>> = kept.iter().flat_map(|(_, img)| img.values()).collect();
    let need = live.len() as u64 * BS as u64 * 2;
    let stored = stored_bytes(c.http_addr()).await?;
    let manifests = kept.len() as u64 * 2 * 64 * 1024;
    eprintln!(
        "{} snapshots kept, {passes} passes while writing; stored {stored} bytes, live need {need} (+ manifests); last pass {last}",
        kept.len()
    );
    assert!(stored >= need, "every live block is stored: {stored} < {need}");
    assert!(
        stored <= need + need / 10 + manifests,
        "space came back to within 10% of the live need: {stored} vs {need}"
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.shutdown().await,
        Err(_) => anyhow::bail!("the cluster is still shared"),
    }
    Ok(())
}
