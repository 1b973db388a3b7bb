//! Restarts of the metadata group's processes: all members SIGKILLed and
//! started again come back with identical state, and a member that was down
//! while the log was compacted past its position catches up by installing a
//! Raft snapshot.

use anyhow::bail;
use cairn_core::command::{Command, CommandOutput, Query, QueryOutput};
use cairn_core::VolumeId;
use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::{wait_for, xml_text};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Everything a client can read: volumes, snapshots, nodes.
async fn state(c: &ProcCluster) -> anyhow::Result<Vec<QueryOutput>> {
    let mut out = Vec::new();
    for q in [Query::Volumes, Query::Snapshots, Query::Nodes] {
        out.push(c.client.read(&q).await?);
    }
    Ok(out)
}

/// Waits until every running member applied the same index, and returns it.
async fn converged(c: &ProcCluster, members: &[usize]) -> anyhow::Result<u64> {
    let applied = std::sync::atomic::AtomicU64::new(0);
    wait_for("members converge", WAIT, || async {
        let mut seen = Vec::new();
        for &i in members {
            match c.client.status(&c.meta_addrs[i]).await {
                Ok(s) => seen.push(s.last_applied),
                Err(_) => return false,
            }
        }
        applied.store(seen[0], std::sync::atomic::Ordering::Relaxed);
        seen.iter().all(|&a| a == seen[0] && a > 0)
    })
    .await?;
    Ok(applied.load(std::sync::atomic::Ordering::Relaxed))
}

async fn tag(c: &ProcCluster, vol: &str, n: usize) -> anyhow::Result<()> {
    let cmd = Command::CreateTags {
        resources: vec![vol.to_string()],
        tags: vec![(format!("k{}", n % 7), format!("v{n}"))],
    };
    match c.client.write(&cmd).await? {
        Ok(CommandOutput::Done) => Ok(()),
        other => bail!("CreateTags answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_sigkilled_come_back_identical() -> anyhow::Result<()> {
    let mut c = ProcCluster::start(ProcOptions::default()).await?;
    let (status, body) =
        c.ec2(0, "CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    assert_eq!(status, 200, "{body}");
    let vol = xml_text(&body, "volumeId").unwrap_or_default();
    let (status, body) = c.ec2(0, "CreateSnapshot", &[("VolumeId", &vol)]).await?;
    assert_eq!(status, 200, "{body}");
    for n in 0..30 {
        tag(&c, &vol, n).await?;
    }
    let before = state(&c).await?;
    let applied = converged(&c, &[0, 1, 2]).await?;

    for m in c.meta.iter_mut() {
        m.kill9();
    }
    for m in c.meta.iter_mut() {
        m.restart().await?;
    }
    wait_for("a leader after the restart", WAIT, || async { c.leader().await.is_some() }).await?;
    let after_applied = converged(&c, &[0, 1, 2]).await?;
    assert!(after_applied >= applied, "applied went back from {applied} to {after_applied}");
    // Chunk nodes may re-register or copy jobs progress meanwhile; compare the
    // records no process rewrote: the volume and its tags, and the snapshot ids.
    let after = state(&c).await?;
    assert_eq!(after[0], before[0], "volumes differ after a restart of all members");
    let ids = |s: &QueryOutput| match s {
        QueryOutput::Snapshots(v) => v.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert_eq!(ids(&after[1]), ids(&before[1]));
    // And the group still takes writes.
    tag(&c, &vol, 99).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_a_compacted_log_installs_a_snapshot() -> anyhow::Result<()> {
    let opts = ProcOptions {
        // Snapshot every 20 entries and keep no log below the snapshot.
        metadata_extra: "snapshot_logs = 20\nkeep_logs_after_snapshot = 0\n".into(),
        ..ProcOptions::default()
    };
    let mut c = ProcCluster::start(opts).await?;
    let (status, body) =
        c.ec2(0, "CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    assert_eq!(status, 200, "{body}");
    let vol = xml_text(&body, "volumeId").unwrap_or_default();
    wait_for("a leader", WAIT, || async { c.leader().await.is_some() }).await?;
    let leader = c.leader().await.unwrap_or(0);
    let down = (leader + 1) % 3;
    let behind = c.client.status(&c.meta_addrs[down]).await?.last_applied;
    c.meta[down].kill9();

    // Far more entries than the snapshot threshold: the leader's log no
    // longer starts where the stopped member stopped.
    for n in 0..300 {
        tag(&c, &vol, n).await?;
    }
    let logged_before = c.meta[down].log_text().len();
    c.meta[down].restart().await?;
    let applied = converged(&c, &[0, 1, 2]).await?;
    assert!(applied >= behind + 300, "applied {applied}, behind {behind}");
    let since_restart = c.meta[down].log_text()[logged_before..].to_string();
    assert!(
        since_restart.contains("installed snapshot"),
        "the member caught up without a snapshot:\n{since_restart}"
    );

    // Its state is the group's: with the member that never stopped paused,
    // the restarted one is needed for every quorum, reads included.
    let other = (0..3).find(|&i| i != leader && i != down).unwrap_or(0);
    c.meta[other].pause();
    let id = VolumeId::parse(&vol).ok_or_else(|| anyhow::anyhow!("bad volume id"))?;
    let QueryOutput::Volume(Some(v)) = c.client.read(&Query::Volume(id)).await? else {
        bail!("volume lost");
    };
    assert_eq!(v.tags.len(), 7);
    assert_eq!(v.tags.get("k3").map(String::as_str), Some("v297"));
    tag(&c, &vol, 500).await?;
    c.meta[other].resume();
    Ok(())
}
