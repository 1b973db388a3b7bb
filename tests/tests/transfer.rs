//! CopySnapshot between the region and an Outpost, on real processes: the
//! copy is `pending` at once and completes; the Outpost then holds it (a
//! volume restored there from the copy reads back the same bytes) and only
//! what it lacked was sent (a second copy of the same snapshot sends
//! nothing, a copy after a 1% change sends about that change); a local
//! Outpost snapshot copied to the region restores there; a gateway killed
//! mid-copy leaves the copy to the other one; an unreachable source Outpost
//! fails the copy with a message that names it once the timeout passed.
//!
//! Build the workspace first (`cargo build --workspace`): the processes are
//! the real `cairn` binary.

use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::snapshots::{
    create_volume, describe, make_image, path_str, qemu_img, wait_finished, wait_mid_copy, LONG,
    MIB,
};
use cairn_tests::{http, xml_text, ACCOUNT, REGION};
use std::path::Path;

fn options(gateways: usize, gateway_extra: &str) -> ProcOptions {
    ProcOptions { gateways, gateway_extra: gateway_extra.to_string(), ..ProcOptions::default() }
}

fn outpost_arn(c: &ProcCluster) -> String {
    format!("arn:aws:outposts:{REGION}:{ACCOUNT}:outpost/{}", c.outpost)
}

/// A volume of `gib` GiB holding `img` (written over NBD): in cairn-1a, on
/// the Outpost when `outpost` is set.
async fn volume_with(
    c: &ProcCluster,
    gib: &str,
    img: &Path,
    outpost: Option<&str>,
) -> anyhow::Result<String> {
    let mut params = vec![("AvailabilityZone", "cairn-1a"), ("Size", gib)];
    if let Some(arn) = outpost {
        params.push(("OutpostArn", arn));
    }
    let vol = create_volume(c, 0, &params).await?;
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", path_str(img), &c.nbd_uri(0, &vol)])
        .await?;
    Ok(vol)
}

/// A completed snapshot of `vol` (a local one on the Outpost with `outpost`).
async fn completed_snapshot(
    c: &ProcCluster,
    vol: &str,
    outpost: Option<&str>,
) -> anyhow::Result<String> {
    let mut params = vec![("VolumeId", vol)];
    if let Some(arn) = outpost {
        params.push(("OutpostArn", arn));
    }
    let (status, body) = c.ec2(0, "CreateSnapshot", &params).await?;
    anyhow::ensure!(status == 200, "CreateSnapshot: {status} {body}");
    let snap = xml_text(&body, "snapshotId").ok_or_else(|| anyhow::anyhow!("{body}"))?;
    let done = wait_finished(c, 0, &snap, LONG).await?;
    anyhow::ensure!(done.status == "completed", "{snap}: {done:?}");
    Ok(snap)
}

/// CopySnapshot through gateway `g` to the Outpost (`to` set) or the
/// region; the copy's id, checked to be listed at once (`pending`, unless
/// it finished before DescribeSnapshots was asked) with its destination.
async fn copy(c: &ProcCluster, g: usize, snap: &str, to: Option<&str>) -> anyhow::Result<String> {
    let mut params =
        vec![("SourceSnapshotId", snap), ("SourceRegion", REGION), ("Description", "moved")];
    if let Some(arn) = to {
        params.push(("DestinationOutpostArn", arn));
    }
    let (status, body) = c.ec2(g, "CopySnapshot", &params).await?;
    anyhow::ensure!(status == 200, "CopySnapshot: {status} {body}");
    let id = xml_text(&body, "snapshotId").ok_or_else(|| anyhow::anyhow!("{body}"))?;
    let (_, d) = c.ec2(g, "DescribeSnapshots", &[("SnapshotId.1", &id)]).await?;
    let state = xml_text(&d, "status");
    anyhow::ensure!(matches!(state.as_deref(), Some("pending" | "completed")), "{d}");
    let arn = xml_text(&d, "outpostArn");
    anyhow::ensure!(arn.as_deref() == to, "outpostArn {arn:?}, want {to:?}: {d}");
    Ok(id)
}

/// Copies `snap`, waits for the copy to complete: its id and the bytes the
/// copy sent (what the destination lacked), from the gateway's live view.
async fn copied(c: &ProcCluster, snap: &str, to: Option<&str>) -> anyhow::Result<(String, u64)> {
    let id = copy(c, 0, snap, to).await?;
    let done = wait_finished(c, 0, &id, LONG).await?;
    anyhow::ensure!(done.status == "completed", "{id}: {done:?}\n{}", c.gateways[0].log_tail());
    anyhow::ensure!(done.progress == 100, "{done:?}");
    let (status, body) =
        http::get(c.gateways[0].main, &format!("/_cairn/snapshots/{id}/progress")).await?;
    anyhow::ensure!(status == 200, "progress: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let sent = v["live"]["bytes_sent"].as_u64().ok_or_else(|| anyhow::anyhow!("{body}"))?;
    Ok((id, sent))
}

/// Restores `snap` into a new volume (on the Outpost with `outpost`) and
/// compares it with `img`.
async fn restore_equals(
    c: &ProcCluster,
    snap: &str,
    img: &Path,
    outpost: Option<&str>,
) -> anyhow::Result<()> {
    let mut params = vec![("AvailabilityZone", "cairn-1a"), ("SnapshotId", snap)];
    if let Some(arn) = outpost {
        params.push(("OutpostArn", arn));
    }
    let restored = create_volume(c, 0, &params).await?;
    qemu_img(&["compare", "-f", "raw", "-F", "raw", path_str(img), &c.nbd_uri(0, &restored)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_between_region_and_outpost_send_only_what_is_missing() -> anyhow::Result<()> {
    let c = ProcCluster::start(options(1, "")).await?;
    let arn = outpost_arn(&c);
    let img = make_image(c.dir.path(), "a.img", 1 << 30, 64, 1)?;
    let vol = volume_with(&c, "1", &img, None).await?;
    let snap = completed_snapshot(&c, &vol, None).await?;

    let (first, full) = copied(&c, &snap, Some(&arn)).await?;
    assert!(full >= 64 * MIB, "a first copy sends every block: {full} bytes");
    assert!(full < 66 * MIB, "only the data and its manifest: {full} bytes");
    restore_equals(&c, &first, &img, Some(&arn)).await?;

    let (_, again) = copied(&c, &snap, Some(&arn)).await?;
    assert_eq!(again, 0, "the Outpost holds everything already");

    // 1 MiB of 64 changed: the next copy sends about that.
    let changed = make_image(c.dir.path(), "b.img", 1 << 30, 64, 1)?;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&changed)?;
        let fresh: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all_at(&fresh, 0)?;
        f.sync_all()?;
    }
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", path_str(&changed), &c.nbd_uri(0, &vol)])
        .await?;
    let next = completed_snapshot(&c, &vol, None).await?;
    let (incremental, inc) = copied(&c, &next, Some(&arn)).await?;
    assert!((MIB..4 * MIB).contains(&inc), "an incremental copy sent {inc} bytes");
    restore_equals(&c, &incremental, &changed, Some(&arn)).await?;

    // A local Outpost snapshot, copied to the region, restores there.
    let local_img = make_image(c.dir.path(), "c.img", 1 << 30, 16, 3)?;
    let local_vol = volume_with(&c, "1", &local_img, Some(&arn)).await?;
    let local = completed_snapshot(&c, &local_vol, Some(&arn)).await?;
    let (home, sent) = copied(&c, &local, None).await?;
    assert!(sent >= 16 * MIB, "the region lacked the Outpost's data: {sent} bytes");
    restore_equals(&c, &home, &local_img, None).await?;
    eprintln!("bytes sent: full {full}, again {again}, after 1 MiB changed {inc}, home {sent}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_mid_copy_leaves_the_copy_to_another() -> anyhow::Result<()> {
    let extra = "job_lease_ms = 1500\njob_scan_ms = 200\ncopy_idle_secs = 20\n";
    let mut c = ProcCluster::start(options(2, extra)).await?;
    let arn = outpost_arn(&c);
    let img = make_image(c.dir.path(), "a.img", 2 << 30, 640, 2)?;
    let vol = volume_with(&c, "2", &img, None).await?;
    let snap = completed_snapshot(&c, &vol, None).await?;
    let id = copy(&c, 0, &snap, Some(&arn)).await?;
    let seen = wait_mid_copy(&c, 0, &id).await?;
    c.gateways[0].kill9();

    let done = wait_finished(&c, 1, &id, LONG).await?;
    assert_eq!(done.status, "completed", "{done:?}\n{}", c.gateways[1].log_tail());
    let log = c.gateways[1].log_text();
    assert!(log.contains("taking over a copy job"), "gateway 1 never took the job over:\n{log}");
    let restored = create_volume(
        &c,
        1,
        &[("AvailabilityZone", "cairn-1a"), ("OutpostArn", &arn), ("SnapshotId", &id)],
    )
    .await?;
    qemu_img(&["compare", "-f", "raw", "-F", "raw", path_str(&img), &c.nbd_uri(1, &restored)])
        .await?;
    eprintln!("progress seen before the kill: {seen}%");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_source_outpost_fails_the_copy_after_the_timeout() -> anyhow::Result<()> {
    let extra = "copy_idle_secs = 2\ncopy_host_timeout_secs = 4\n";
    let c = ProcCluster::start(options(1, extra)).await?;
    let arn = outpost_arn(&c);
    let img = make_image(c.dir.path(), "a.img", 1 << 30, 8, 4)?;
    let vol = volume_with(&c, "1", &img, Some(&arn)).await?;
    let local = completed_snapshot(&c, &vol, Some(&arn)).await?;
    let outpost_node = c.chunks.iter().position(|p| p.name == "chunk-op").expect("chunk-op");
    c.chunks[outpost_node].pause();
    let id = copy(&c, 0, &local, None).await;
    let done = match &id {
        Ok(id) => wait_finished(&c, 0, id, LONG).await,
        Err(e) => Err(anyhow::anyhow!("{e}")),
    };
    c.chunks[outpost_node].resume();
    let done = done?;
    assert_eq!(done.status, "error", "{done:?}");
    let message = done.message.unwrap_or_default();
    assert!(message.contains("no progress"), "StateMessage: {message:?}");
    assert!(message.contains(&format!("Outpost {}", c.outpost)), "StateMessage: {message:?}");
    // Nothing was left half made: the failed copy holds nothing and restores nothing.
    let v = describe(&c, 0, id?.as_str()).await.expect("the failed copy is listed");
    assert_eq!(v.progress, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_outpost_copy_gives_the_outpost_its_space_back() -> anyhow::Result<()> {
    // GC marks each placement domain on its own: the region's snapshot,
    // which names the same chunks, does not keep the Outpost's replicas.
    let c = ProcCluster::start(options(1, "")).await?;
    let arn = outpost_arn(&c);
    let img = make_image(c.dir.path(), "a.img", 1 << 30, 16, 5)?;
    let vol = volume_with(&c, "1", &img, None).await?;
    let snap = completed_snapshot(&c, &vol, None).await?;
    let (there, sent) = copied(&c, &snap, Some(&arn)).await?;
    assert!(sent >= 16 * MIB, "{sent}");
    let (status, body) = c.ec2(0, "DeleteSnapshot", &[("SnapshotId", &there)]).await?;
    assert_eq!(status, 200, "{body}");
    let report = cairn_tests::gc::run_pass(c.gateways[0].main).await?;
    let freed = |node: &str| {
        report["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["node_id"] == node))
            .and_then(|n| n["deleted_bytes"].as_u64())
            .unwrap_or(0)
    };
    assert!(freed("chunk-op") >= 16 * MIB, "the Outpost kept its copy's chunks: {report}");
    assert_eq!(freed("chunk-1a") + freed("chunk-1b"), 0, "the region lost chunks: {report}");
    eprintln!("the Outpost freed {} bytes", freed("chunk-op"));
    restore_equals(&c, &snap, &img, None).await?;
    Ok(())
}
