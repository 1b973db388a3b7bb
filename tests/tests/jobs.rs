//! Copy jobs under faults, on real processes: a gateway SIGKILLed mid-copy
//! (a second gateway takes the job over once the lease lapses), a volume
//! host SIGKILLed mid-copy (the job resumes once it is back), a destination
//! node lost for good mid-copy (the rest is placed on the others), a host that
//! stays unreachable (the snapshot ends in `error` with a StateMessage), a
//! snapshot whose gateway died before freezing the volume, the limit of
//! five pending snapshots per volume, and a restored volume's host
//! SIGKILLed while it hydrates.
//!
//! The cluster has four region chunk nodes (two per AZ), so RF 3 holds.
//! Build the workspace first (`cargo build --workspace`): the processes are
//! the real `cairn` binary.

use cairn_core::command::{Command, CommandOutput, Query, QueryOutput};
use cairn_core::records::Snapshot;
use cairn_core::time::now_ms;
use cairn_core::VolumeId;
use cairn_proto::pb;
use cairn_tests::nbd::NbdConn;
use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::snapshots::{
    create_volume, describe, make_image, path_str, qemu_img, wait_finished, wait_mid_copy, LONG,
    MIB,
};
use cairn_tests::{records, wait_for, xml_text};
use std::path::Path;
use std::time::Duration;

/// Four region nodes, two per AZ; no Outpost.
fn region_nodes() -> Vec<(String, String, bool)> {
    ["chunk-1a", "chunk-1a-2", "chunk-1b", "chunk-1b-2"]
        .iter()
        .map(|n| (n.to_string(), format!("cairn-{}", &n[6..8]), false))
        .collect()
}

fn options(gateways: usize, gateway_extra: &str) -> ProcOptions {
    ProcOptions {
        chunk_nodes: region_nodes(),
        gateways,
        gateway_extra: gateway_extra.to_string(),
        ..ProcOptions::default()
    }
}

/// A volume of `gib` GiB in cairn-1a holding `img`, written over NBD.
async fn volume_with(c: &ProcCluster, g: usize, gib: &str, img: &Path) -> anyhow::Result<String> {
    let vol = create_volume(c, g, &[("AvailabilityZone", "cairn-1a"), ("Size", gib)]).await?;
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw", path_str(img), &c.nbd_uri(g, &vol)])
        .await?;
    Ok(vol)
}

async fn create_snapshot(c: &ProcCluster, g: usize, vol: &str) -> anyhow::Result<(u16, String)> {
    c.ec2(g, "CreateSnapshot", &[("VolumeId", vol)]).await
}

async fn snapshot_of(c: &ProcCluster, g: usize, vol: &str) -> anyhow::Result<String> {
    let (status, body) = create_snapshot(c, g, vol).await?;
    anyhow::ensure!(status == 200, "CreateSnapshot: {status} {body}");
    anyhow::ensure!(xml_text(&body, "status").as_deref() == Some("pending"), "{body}");
    xml_text(&body, "snapshotId").ok_or_else(|| anyhow::anyhow!("no snapshotId: {body}"))
}

/// Index into `c.chunks` of the node hosting `vol`.
async fn host_of(c: &ProcCluster, vol: &str) -> anyhow::Result<usize> {
    let id = VolumeId::parse(vol).ok_or_else(|| anyhow::anyhow!("bad id {vol}"))?;
    let QueryOutput::Volume(Some(v)) = c.client.read(&Query::Volume(id)).await? else {
        anyhow::bail!("volume {vol} not found")
    };
    c.chunks
        .iter()
        .position(|p| p.name == v.host_node)
        .ok_or_else(|| anyhow::anyhow!("host {} is not one of the test's nodes", v.host_node))
}

/// Restores `snap` into cairn-1b through gateway `g` and compares it with `img`.
async fn restore_equals(c: &ProcCluster, g: usize, snap: &str, img: &Path) -> anyhow::Result<()> {
    let restored =
        create_volume(c, g, &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", snap)]).await?;
    qemu_img(&["compare", "-f", "raw", "-F", "raw", path_str(img), &c.nbd_uri(g, &restored)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_sigkill_mid_copy_a_second_gateway_resumes() -> anyhow::Result<()> {
    // Short leases, so the takeover happens within seconds.
    let extra = "job_lease_ms = 1500\njob_scan_ms = 200\ncopy_idle_secs = 20\ncopy_host_timeout_secs = 60\n";
    let mut c = ProcCluster::start(options(2, extra)).await?;
    let img = make_image(c.dir.path(), "a.img", 2 << 30, 320, 1)?;
    let vol = volume_with(&c, 0, "2", &img).await?;
    let snap = snapshot_of(&c, 0, &vol).await?;
    let seen = wait_mid_copy(&c, 0, &snap).await?;
    c.gateways[0].kill9();

    let done = wait_finished(&c, 1, &snap, LONG).await?;
    assert_eq!(done.status, "completed", "{done:?}\n{}", c.gateways[1].log_tail());
    assert_eq!(done.progress, 100);
    let log = c.gateways[1].log_text();
    assert!(log.contains("taking over a copy job"), "gateway 1 never took the job over:\n{log}");
    restore_equals(&c, 1, &snap, &img).await?;
    eprintln!("progress seen before the kill: {seen}%");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_host_sigkill_mid_copy_resumes_after_restart() -> anyhow::Result<()> {
    let extra = "copy_idle_secs = 10\ncopy_host_timeout_secs = 60\n";
    let mut c = ProcCluster::start(options(1, extra)).await?;
    let img = make_image(c.dir.path(), "b.img", 2 << 30, 320, 2)?;
    let vol = volume_with(&c, 0, "2", &img).await?;
    let host = host_of(&c, &vol).await?;
    let snap = snapshot_of(&c, 0, &vol).await?;
    wait_mid_copy(&c, 0, &snap).await?;
    c.chunks[host].kill9();
    c.chunks[host].restart().await?;

    let done = wait_finished(&c, 0, &snap, LONG).await?;
    assert_eq!(done.status, "completed", "{done:?}\n{}", c.gateways[0].log_tail());
    restore_equals(&c, 0, &snap, &img).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_unreachable_past_the_timeout_ends_in_error() -> anyhow::Result<()> {
    let extra = "copy_idle_secs = 2\ncopy_host_timeout_secs = 4\n";
    let c = ProcCluster::start(options(1, extra)).await?;
    let img = make_image(c.dir.path(), "c.img", 2 << 30, 320, 3)?;
    let vol = volume_with(&c, 0, "2", &img).await?;
    let host = host_of(&c, &vol).await?;
    let snap = snapshot_of(&c, 0, &vol).await?;
    wait_mid_copy(&c, 0, &snap).await?;
    c.chunks[host].pause();
    let done = wait_finished(&c, 0, &snap, LONG).await;
    // Let the host go on, so the cluster can stop, whatever happened.
    c.chunks[host].resume();
    let done = done?;
    assert_eq!(done.status, "error", "{done:?}");
    let message = done.message.unwrap_or_default();
    assert!(message.contains("no progress"), "StateMessage: {message:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destination_node_lost_for_good_mid_copy_the_snapshot_completes_on_the_others(
) -> anyhow::Result<()> {
    // A node that will never come back (killed, its disk gone) is declared
    // down after `node_down_secs`; the copy's next attempt re-places what it
    // still had to store on the three nodes left instead of waiting for it,
    // well before `copy_host_timeout_secs` would end the snapshot in error.
    let extra = "node_down_secs = 3\ncopy_idle_secs = 5\ncopy_host_timeout_secs = 120\n";
    let mut c = ProcCluster::start(options(1, extra)).await?;
    let img = make_image(c.dir.path(), "g.img", 2 << 30, 320, 7)?;
    let vol = volume_with(&c, 0, "2", &img).await?;
    let host = host_of(&c, &vol).await?;
    let lost = (host + 1) % c.chunks.len();
    let lost_name = c.chunks[lost].name.clone();
    let snap = snapshot_of(&c, 0, &vol).await?;
    let seen = wait_mid_copy(&c, 0, &snap).await?;
    c.chunks[lost].kill9();
    std::fs::remove_dir_all(c.dir.path().join(&lost_name))?;
    let v = describe(&c, 0, &snap).await.ok_or_else(|| anyhow::anyhow!("{snap} vanished"))?;
    anyhow::ensure!(v.status == "pending", "the copy ended before the node was lost: {v:?}");

    let done = wait_finished(&c, 0, &snap, Duration::from_secs(110)).await?;
    assert_eq!(done.status, "completed", "{done:?}\n{}", c.gateways[0].log_tail());
    assert_eq!(done.progress, 100);
    let state = cairn_tests::nodes::state(c.gateways[0].main, &lost_name).await;
    assert_eq!(state.as_deref(), Some("down"), "{lost_name} is not declared down");
    restore_equals(&c, 0, &snap, &img).await?;
    eprintln!("{lost_name} lost at {seen}%");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_whose_gateway_died_before_freezing_ends_in_error() -> anyhow::Result<()> {
    // What a gateway killed between recording a snapshot and freezing its
    // volume leaves: the record and its job, leased to a gateway that is
    // gone, and no frozen image on the host. The CreateSnapshot call was never
    // answered. Another gateway takes the job over; freezing now would
    // capture later writes, so the snapshot ends in `error`, saying why.
    let extra = "job_lease_ms = 1500\njob_scan_ms = 200\n";
    let c = ProcCluster::start(options(1, extra)).await?;
    let img = make_image(c.dir.path(), "e.img", 1 << 30, 16, 5)?;
    let vol = volume_with(&c, 0, "1", &img).await?;
    let vid = VolumeId::parse(&vol).ok_or_else(|| anyhow::anyhow!("bad id {vol}"))?;
    let QueryOutput::Volume(Some(volume)) = c.client.read(&Query::Volume(vid)).await? else {
        anyhow::bail!("volume {vol} not found")
    };
    let snapshot = Snapshot {
        description: "its gateway died".into(),
        volume_size_gib: volume.size_gib,
        ..records::pending_snapshot(volume.id.clone(), &volume.owner)
    };
    let cmd = Command::CreateSnapshot {
        snapshot,
        client_token: None,
        job_owner: "gw-killed".into(),
        lease_expires_ms: now_ms(),
    };
    let CommandOutput::Snapshot(snap) = c.client.write(&cmd).await?? else {
        anyhow::bail!("CreateSnapshot answered no snapshot")
    };
    let done = wait_finished(&c, 0, snap.id.as_str(), LONG).await?;
    assert_eq!(done.status, "error", "{done:?}");
    let message = done.message.unwrap_or_default();
    assert!(message.starts_with("The snapshot was never taken"), "StateMessage: {message:?}");
    // The volume is unharmed: a snapshot taken now completes.
    let next = snapshot_of(&c, 0, &vol).await?;
    assert_eq!(wait_finished(&c, 0, &next, LONG).await?.status, "completed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sixth_pending_snapshot_is_refused() -> anyhow::Result<()> {
    let c = ProcCluster::start(options(1, "copy_idle_secs = 60\n")).await?;
    let img = make_image(c.dir.path(), "d.img", 1 << 30, 16, 4)?;
    let vol = volume_with(&c, 0, "1", &img).await?;
    // Copies need the other region nodes (each chunk goes to 3 of the 4);
    // with one of them stopped they cannot finish, while the host still
    // freezes. So five snapshots stay pending.
    let host = host_of(&c, &vol).await?;
    let peer = (0..c.chunks.len()).find(|i| *i != host).unwrap_or(0);
    c.chunks[peer].pause();
    let mut snaps = Vec::new();
    for _ in 0..5 {
        snaps.push(snapshot_of(&c, 0, &vol).await?);
    }
    let (status, body) = create_snapshot(&c, 0, &vol).await?;
    c.chunks[peer].resume();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        xml_text(&body, "Code").as_deref(),
        Some("ConcurrentSnapshotLimitExceeded"),
        "{body}"
    );
    for s in &snaps {
        let v = describe(&c, 0, s).await.ok_or_else(|| anyhow::anyhow!("{s} vanished"))?;
        assert!(v.status == "pending" || v.status == "completed", "{s}: {v:?}");
    }
    // Once the peer is back, they complete, and there is room again.
    for s in &snaps {
        let v = wait_finished(&c, 0, s, LONG).await?;
        assert_eq!(v.status, "completed", "{s}: {v:?}");
    }
    snapshot_of(&c, 0, &vol).await?;
    Ok(())
}

/// The restored volume's hydration counters, from its host.
async fn hydration(c: &ProcCluster, host: usize, vol: &str) -> anyhow::Result<(u64, u64)> {
    let addr = format!("http://{}", c.chunks[host].main);
    let mut vh = pb::volume_host_client::VolumeHostClient::connect(addr).await?;
    let s = vh.volume_stats(pb::VolumeStatsRequest { volume_id: vol.into() }).await?.into_inner();
    anyhow::ensure!(s.exists, "{vol} is not on its host");
    Ok((s.hydrated_blocks, s.total_blocks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_host_sigkill_mid_hydration_loses_nothing() -> anyhow::Result<()> {
    // A restored volume takes writes at once; its host is SIGKILLed while
    // blocks are hydrated in memory whose marks are not yet on disk. After
    // the restart the hydrator fetches what it had not recorded, and must
    // never put snapshot bytes over a write the user made and flushed.
    let mut c = ProcCluster::start(options(1, "")).await?;
    let img = make_image(c.dir.path(), "f.img", 2 << 30, 640, 6)?;
    let vol = volume_with(&c, 0, "2", &img).await?;
    let snap = snapshot_of(&c, 0, &vol).await?;
    assert_eq!(wait_finished(&c, 0, &snap, LONG).await?.status, "completed");

    let restored =
        create_volume(&c, 0, &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", &snap)]).await?;
    let host = host_of(&c, &restored).await?;
    let door = c.gateways[0].nbd.ok_or_else(|| anyhow::anyhow!("gateway has no NBD door"))?;
    let mut nbd = NbdConn::connect(door, &restored).await?;
    // Whole blocks, and 4 KiB inside a block (the rest of which must still
    // come from the snapshot), all over data of the image.
    let bs = cairn_core::BLOCK_SIZE as u64;
    let writes: Vec<(u64, Vec<u8>)> = vec![
        (1800 * MIB, vec![0xa1; bs as usize]),
        (1200 * MIB + 8192, vec![0xb2; 4096]),
        (600 * MIB, vec![0xc3; bs as usize]),
    ];
    for (offset, data) in &writes {
        nbd.write(*offset, data).await?;
    }
    nbd.flush().await?;
    drop(nbd);
    let (hydrated, total) = hydration(&c, host, &restored).await?;
    anyhow::ensure!(hydrated < total, "hydration ended before the kill ({hydrated}/{total})");
    c.chunks[host].kill9();
    c.chunks[host].restart().await?;

    let expected = c.dir.path().join("f-expected.img");
    std::fs::copy(&img, &expected)?;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&expected)?;
        for (offset, data) in &writes {
            f.write_all_at(data, *offset)?;
        }
    }
    wait_for("the restored volume is hydrated after the restart", LONG, || async {
        hydration(&c, host, &restored).await.is_ok_and(|(h, t)| h == t)
    })
    .await?;
    qemu_img(&["compare", "-f", "raw", "-F", "raw", path_str(&expected), &c.nbd_uri(0, &restored)])
        .await?;
    eprintln!("hydrated before the kill: {hydrated}/{total} blocks");
    Ok(())
}
