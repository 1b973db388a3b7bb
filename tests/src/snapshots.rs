//! Snapshots and volumes through one gateway of a [`ProcCluster`], as the
//! process-level tests drive them: images with random data, volumes made
//! and waited for, DescribeSnapshots polled until a state is reached.

use crate::procs::ProcCluster;
use crate::{run, wait_for, xml_text};
use rand::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a test waits for a volume or a copy.
pub const LONG: Duration = Duration::from_secs(60);
pub const MIB: u64 = 1 << 20;

/// A sparse raw image of `size` bytes with `random_mib` MiB of random data in
/// 1 MiB pieces spread evenly over it.
pub fn make_image(
    dir: &Path,
    name: &str,
    size: u64,
    random_mib: u64,
    seed: u64,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(name);
    let f = std::fs::File::create(&path)?;
    f.set_len(size)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    let stride = (size / MIB / random_mib.max(1)).max(1) * MIB;
    for i in 0..random_mib {
        rng.fill_bytes(&mut buf);
        f.write_all_at(&buf, (i * stride).min(size - MIB))?;
    }
    f.sync_all()?;
    Ok(path)
}

pub async fn qemu_img(args: &[&str]) -> anyhow::Result<()> {
    let (code, out) = run("qemu-img", args).await?;
    anyhow::ensure!(code == 0, "qemu-img {args:?}: {out}");
    Ok(())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Creates a volume through gateway `g` and waits until it is available.
pub async fn create_volume(
    c: &ProcCluster,
    g: usize,
    params: &[(&str, &str)],
) -> anyhow::Result<String> {
    let (status, body) = c.ec2(g, "CreateVolume", params).await?;
    anyhow::ensure!(status == 200, "CreateVolume: {status} {body}");
    let id = xml_text(&body, "volumeId").ok_or_else(|| anyhow::anyhow!("no volumeId: {body}"))?;
    wait_for("the volume is available", LONG, || async {
        matches!(c.ec2(g, "DescribeVolumes", &[("VolumeId.1", &id)]).await,
            Ok((200, b)) if xml_text(&b, "status").as_deref() == Some("available"))
    })
    .await?;
    Ok(id)
}

/// What DescribeSnapshots says: status, progress and StateMessage.
#[derive(Clone, Debug, Default)]
pub struct SnapView {
    pub status: String,
    pub progress: u32,
    pub message: Option<String>,
}

pub async fn describe(c: &ProcCluster, g: usize, snap: &str) -> Option<SnapView> {
    let (status, body) = c.ec2(g, "DescribeSnapshots", &[("SnapshotId.1", snap)]).await.ok()?;
    if status != 200 {
        return None;
    }
    Some(SnapView {
        status: xml_text(&body, "status")?,
        progress: xml_text(&body, "progress")?.trim_end_matches('%').parse().ok()?,
        message: xml_text(&body, "statusMessage"),
    })
}

/// Polls DescribeSnapshots every 50 ms until `done` accepts a view; answers
/// that view, or fails after `within` with the last view seen.
pub async fn poll_snapshot(
    c: &ProcCluster,
    g: usize,
    snap: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&SnapView) -> bool,
) -> anyhow::Result<SnapView> {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(v) = describe(c, g, snap).await {
            if done(&v) {
                return Ok(v);
            }
            last = Some(v);
        }
        if start.elapsed() > within {
            anyhow::bail!("timed out after {within:?} waiting until {what}; last seen {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the snapshot has left `pending`; answers its final view.
pub async fn wait_finished(
    c: &ProcCluster,
    g: usize,
    snap: &str,
    within: Duration,
) -> anyhow::Result<SnapView> {
    poll_snapshot(c, g, snap, "the snapshot leaves pending", within, |v| v.status != "pending")
        .await
}

/// Polls until the snapshot shows progress strictly between 0 and 100 while
/// pending; answers that progress.
pub async fn wait_mid_copy(c: &ProcCluster, g: usize, snap: &str) -> anyhow::Result<u32> {
    let v = poll_snapshot(c, g, snap, "progress strictly between 0% and 100%", LONG, |v| {
        v.status != "pending" || (v.progress > 0 && v.progress < 100)
    })
    .await?;
    anyhow::ensure!(
        v.status == "pending",
        "the copy ended before any progress between 0% and 100% was seen: {v:?}"
    );
    Ok(v.progress)
}
