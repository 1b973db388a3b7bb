//! One writer per copy job, whatever the clocks say, and no volume left
//! half made:
//!
//! - a volume host runs one copy per snapshot: a call of a newer epoch stops
//!   the running copy (whose caller hears "superseded") before it runs, and
//!   a later call of an older epoch is refused;
//! - a gateway whose clock is an hour ahead does not take over a job whose
//!   holder keeps renewing it, and does once the holder stops;
//! - a volume a request left `creating` becomes `available`, and one it left
//!   `deleting` goes, with no new request.

use cairn_core::command::{Command, CommandOutput, JobOp, Query, QueryOutput};
use cairn_core::records::{Snapshot, SnapshotState, Volume, VolumeState, RECORD_VERSION};
use cairn_core::time::now_ms;
use cairn_core::{SnapshotId, VolumeId, BLOCK_SIZE};
use cairn_gateway::{Gateway, GatewayConfig};
use cairn_proto::pb;
use cairn_tests::node::{create_volume, freeze, start, TestNode};
use cairn_tests::{records, wait_for, xml_text, TestCluster, ACCOUNT};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);
const BS: u64 = BLOCK_SIZE as u64;

/// A "chunk node" that accepts connections and never answers: puts to it
/// hang, so a copy that stores there stays running until stopped.
async fn black_hole() -> anyhow::Result<pb::StoreNode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(pb::StoreNode {
        node_id: "chunk-black-hole".into(),
        az: "cairn-1a".into(),
        grpc_addr: format!("http://{addr}"),
    })
}

fn copy_request(vol: &str, snap: &str, targets: Vec<pb::StoreNode>, epoch: u64) -> pb::CopyRequest {
    pb::CopyRequest {
        volume_id: vol.into(),
        snapshot_id: snap.into(),
        targets,
        replication_factor: 1,
        epoch,
        ..Default::default()
    }
}

/// A volume of 64 blocks of data, frozen for `snap`.
async fn frozen_volume(n: &TestNode, vol: &str, snap: &str) -> anyhow::Result<()> {
    create_volume(n, vol, 64 * BS).await?;
    let v = n.node.volumes().get(vol).ok_or_else(|| anyhow::anyhow!("no volume"))?;
    for i in 0..64u64 {
        v.write(i * BS, vec![i as u8 + 1; BLOCK_SIZE], false).await?;
    }
    freeze(n, vol, snap, "").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_epoch_stops_the_running_copy_and_an_older_one_is_refused() -> anyhow::Result<()> {
    const VOL: &str = "vol-00000000000000071";
    let a = start("chunk-a", "cairn-1a").await?;
    frozen_volume(&a, VOL, "snap-1").await?;

    // Epoch 1 copies to a store that never answers: it runs until stopped.
    let mut first = a
        .volumes()
        .await?
        .copy(copy_request(VOL, "snap-1", vec![black_hole().await?], 1))
        .await?
        .into_inner();
    let started = first.message().await?.ok_or_else(|| anyhow::anyhow!("no progress"))?;
    assert!(!started.done);

    // Epoch 2 (a takeover) stops it first, then runs to the end.
    let mut second = a
        .volumes()
        .await?
        .copy(copy_request(VOL, "snap-1", vec![a.store_node()], 2))
        .await?
        .into_inner();
    let stopped = loop {
        match first.message().await {
            Ok(Some(p)) => assert!(!p.done, "the superseded copy completed: {p:?}"),
            Ok(None) => anyhow::bail!("the first stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(stopped.code(), tonic::Code::FailedPrecondition, "{stopped:?}");
    assert_eq!(stopped.message(), "superseded by epoch 2");
    let mut last = None;
    while let Some(p) = second.message().await? {
        last = Some(p);
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("no progress from the second copy"))?;
    assert!(last.done && last.manifest_root.len() == 32, "{last:?}");
    assert_eq!(last.blocks_read, 64, "{last:?}");

    // A late call of the old epoch, or of none, is refused at once.
    for epoch in [1, 0] {
        let late = a
            .volumes()
            .await?
            .copy(copy_request(VOL, "snap-1", vec![a.store_node()], epoch))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("the epoch {epoch} call was accepted"))?;
        assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
        assert_eq!(late.message(), "superseded by epoch 2");
    }
    a.node.shutdown().await;
    Ok(())
}

/// The cluster's own gateway replaced by one with `config`'s settings.
async fn with_gateway(
    c: &mut TestCluster,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> anyhow::Result<()> {
    if let Some(g) = c.gateway.take() {
        g.shutdown().await;
    }
    let mut config = GatewayConfig::for_test(c.meta_addrs.clone());
    adjust(&mut config);
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let nbd = TcpListener::bind("127.0.0.1:0").await?;
    c.gateway = Some(Gateway::start(config, http, nbd).await?);
    Ok(())
}

/// A volume record on `chunk-1a` in `state`, written as a request would.
async fn volume_record(c: &TestCluster, state: VolumeState) -> anyhow::Result<Volume> {
    let volume = Volume {
        version: RECORD_VERSION,
        id: VolumeId::generate(),
        owner: ACCOUNT.into(),
        size_gib: 1,
        az: "cairn-1a".into(),
        outpost: None,
        host_node: "chunk-1a".into(),
        volume_type: "gp3".into(),
        iops: Some(3000),
        throughput: Some(125),
        encrypted: false,
        state,
        create_time_ms: now_ms(),
        snapshot_id: None,
        tags: Default::default(),
    };
    let CommandOutput::Volume(v) =
        c.client.write(&Command::CreateVolume { volume, client_token: None }).await??
    else {
        anyhow::bail!("CreateVolume answered no volume")
    };
    Ok(v)
}

async fn copy_job_owner(c: &TestCluster, id: &SnapshotId) -> anyhow::Result<(Option<String>, u32)> {
    let QueryOutput::CopyJobs(jobs) = c.client.read(&Query::CopyJobs).await? else {
        anyhow::bail!("CopyJobs answered something else")
    };
    let j = jobs.iter().find(|j| &j.snapshot_id == id).ok_or_else(|| anyhow::anyhow!("no job"))?;
    Ok((j.owner.clone(), j.acquisitions))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_an_hour_ahead_never_takes_a_renewed_job() -> anyhow::Result<()> {
    const LEASE: u64 = 600;
    let mut c = TestCluster::start().await?;
    with_gateway(&mut c, |g| {
        g.gateway_id = "gw-ahead".into();
        g.clock_skew_ms = 3_600_000;
        g.job_lease_ms = LEASE;
        g.job_scan_ms = 50;
    })
    .await?;
    let vol = volume_record(&c, VolumeState::Available).await?;
    let snapshot = Snapshot {
        description: "held by a live gateway".into(),
        ..records::pending_snapshot(vol.id.clone(), &vol.owner)
    };
    let id = snapshot.id.clone();
    let cmd = Command::CreateSnapshot {
        snapshot,
        client_token: None,
        job_owner: "gw-live".into(),
        lease_expires_ms: now_ms() + LEASE,
    };
    c.client.write(&cmd).await??;

    // gw-live renews every third of a lease, by its own (true) clock, for
    // eight leases; by the skewed clock its lease lapsed an hour ago.
    let until = Instant::now() + Duration::from_millis(8 * LEASE);
    let mut tick = tokio::time::interval(Duration::from_millis(LEASE / 3));
    while Instant::now() < until {
        tick.tick().await;
        let renew = Command::CopyJob {
            id: id.clone(),
            owner: "gw-live".into(),
            now_ms: now_ms(),
            op: JobOp::Renew { lease_ms: LEASE },
        };
        c.client.write(&renew).await??;
        let (owner, epoch) = copy_job_owner(&c, &id).await?;
        assert_eq!((owner.as_deref(), epoch), (Some("gw-live"), 1), "taken while renewed");
    }

    // Once gw-live stops renewing, the gateway ahead takes the job over.
    wait_for("the gateway ahead takes the lapsed job", WAIT, || async {
        matches!(copy_job_owner(&c, &id).await, Ok((Some(o), 2)) if o == "gw-ahead")
            || matches!(c.client.read(&Query::Snapshot(id.clone())).await,
                Ok(QueryOutput::Snapshot(Some(s))) if s.state != SnapshotState::Pending)
    })
    .await?;
    c.shutdown().await;
    Ok(())
}

/// DescribeVolumes' status of `id`, or `None` once it does not exist.
async fn volume_status(c: &TestCluster, id: &VolumeId) -> Option<String> {
    let (status, body) = c.ec2("DescribeVolumes", &[("VolumeId.1", id.as_str())]).await.ok()?;
    match status {
        200 => xml_text(&body, "status"),
        _ if body.contains("InvalidVolume.NotFound") => None,
        _ => Some(format!("HTTP {status}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_left_creating_or_deleting_are_finished_without_a_request() -> anyhow::Result<()> {
    let mut c = TestCluster::start().await?;
    with_gateway(&mut c, |g| {
        g.volume_stall_ms = 300;
        g.job_scan_ms = 50;
    })
    .await?;
    let host = c.chunks.iter().position(|n| n.info().node_id == "chunk-1a").unwrap_or(0);

    // A CreateVolume whose gateway died after recording the volume.
    let creating = volume_record(&c, VolumeState::Creating).await?;
    wait_for("the volume left creating is available", WAIT, || async {
        volume_status(&c, &creating.id).await.as_deref() == Some("available")
    })
    .await?;
    assert!(c.chunks[host].volumes().get(creating.id.as_str()).is_some(), "not on its host");

    // A DeleteVolume whose gateway died after marking the volume deleting.
    let set = Command::SetVolumeState { id: creating.id.clone(), state: VolumeState::Deleting };
    c.client.write(&set).await??;
    wait_for("the volume left deleting is gone", WAIT, || async {
        volume_status(&c, &creating.id).await.is_none()
    })
    .await?;
    assert!(c.chunks[host].volumes().get(creating.id.as_str()).is_none(), "still on its host");
    c.shutdown().await;
    Ok(())
}
