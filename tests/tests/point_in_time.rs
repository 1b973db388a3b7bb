//! CreateSnapshot is a point in time under live writes, through the whole
//! stack: a writer keeps overwriting 512 KiB blocks over the gateway's NBD
//! door, each stamped throughout with a global sequence number, while two
//! snapshots are taken; both are restored and every block is checked
//! against when each write was sent and acknowledged and when each call was
//! sent and returned.

use cairn_tests::nbd::NbdConn;
use cairn_tests::{wait_for, xml_text, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: usize = cairn_core::BLOCK_SIZE;
/// Blocks the writer cycles over (64 MiB of the 1 GiB volume).
const BLOCKS: u64 = 128;
const LONG: Duration = Duration::from_secs(120);

fn stamped(seq: u64) -> Vec<u8> {
    seq.to_le_bytes().iter().copied().cycle().take(BS).collect()
}

fn stamp_of(block: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(block[..8].try_into().ok()?);
    block.chunks(8).all(|c| c == seq.to_le_bytes()).then_some(seq)
}

/// One write: block, sequence number, when sent, when acknowledged.
struct Write {
    block: u64,
    seq: u64,
    sent: Instant,
    acked: Instant,
}

/// Calls CreateSnapshot; returns (id, when sent, when it returned).
async fn snapshot(c: &TestCluster, vol: &str) -> anyhow::Result<(String, Instant, Instant)> {
    let sent = Instant::now();
    let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", vol)]).await?;
    let returned = Instant::now();
    anyhow::ensure!(status == 200, "CreateSnapshot: {status} {body}");
    let id = xml_text(&body, "snapshotId").ok_or_else(|| anyhow::anyhow!("no id: {body}"))?;
    Ok((id, sent, returned))
}

async fn completed(c: &TestCluster, snap: &str) -> bool {
    matches!(c.ec2("DescribeSnapshots", &[("SnapshotId.1", snap)]).await,
        Ok((200, b)) if xml_text(&b, "status").as_deref() == Some("completed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_capture_exactly_the_acknowledged_writes() -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    let mut conn = NbdConn::connect(c.nbd_addr(), &vol).await?;
    // Every block starts whole, with stamp = its index + 1.
    for b in 0..BLOCKS {
        conn.write(b * BS as u64, &stamped(b + 1)).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut log: Vec<Write> = Vec::new();
            let mut seq = 1_000u64;
            while !stop.load(Ordering::SeqCst) {
                // A stride walk, so the copy meets blocks overwritten both
                // before it reached them and after.
                let block = (seq * 37) % BLOCKS;
                let data = stamped(seq);
                let sent = Instant::now();
                conn.write(block * BS as u64, &data).await?;
                log.push(Write { block, seq, sent, acked: Instant::now() });
                seq += 1;
            }
            Ok::<_, anyhow::Error>(log)
        })
    };
    let progressed = |n: usize| {
        let start = Instant::now();
        async move {
            // The writer's progress is only visible through time here; give
            // it a measurable stretch of writes before each call.
            while start.elapsed() < Duration::from_millis(50 * n as u64) {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    progressed(4).await;
    let (s1, s1_sent, s1_ret) = snapshot(&c, &vol).await?;
    progressed(4).await;
    let (s2, s2_sent, s2_ret) = snapshot(&c, &vol).await?;
    wait_for("both snapshots complete", LONG, || async {
        completed(&c, &s1).await && completed(&c, &s2).await
    })
    .await?;
    let copies_done = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let log = writer.await??;
    let during = log.iter().filter(|w| w.sent > s1_ret && w.acked < copies_done).count();
    assert!(during > 20, "writes went on during the copies ({during})");

    for (snap, sent, returned) in [(&s1, s1_sent, s1_ret), (&s2, s2_sent, s2_ret)] {
        let restored = c
            .create_volume(&[("AvailabilityZone", "cairn-1b"), ("SnapshotId", snap.as_str())])
            .await?;
        let mut r = NbdConn::connect(c.nbd_addr(), &restored).await?;
        for b in 0..BLOCKS {
            let block = r.read(b * BS as u64, BS as u32).await?;
            let seq = stamp_of(&block)
                .ok_or_else(|| anyhow::anyhow!("{snap}: block {b} is not whole"))?;
            let writes: Vec<&Write> = log.iter().filter(|w| w.block == b).collect();
            let floor =
                writes.iter().filter(|w| w.acked < sent).map(|w| w.seq).max().unwrap_or(b + 1);
            assert!(
                seq >= floor,
                "{snap}: block {b} holds {seq}, but {floor} was acknowledged before the call"
            );
            match writes.iter().find(|w| w.seq == seq) {
                Some(w) => assert!(
                    w.sent < returned,
                    "{snap}: block {b} holds write {seq}, sent after the call returned"
                ),
                None => assert_eq!(seq, b + 1, "{snap}: block {b} holds an unknown stamp {seq}"),
            }
        }
        // The rest of the volume was never written: zero.
        let size = r.size();
        let mut off = BLOCKS * BS as u64;
        while off < size {
            let len = (8u64 << 20).min(size - off);
            let data = r.read(off, len as u32).await?;
            assert!(data.iter().all(|b| *b == 0), "{snap}: non-zero bytes at {off}");
            off += len;
        }
    }
    c.shutdown().await;
    Ok(())
}
