//! Faults on real processes: SIGKILL of the metadata leader loses no
//! acknowledged write, and the killed member comes back with identical state.

use cairn_core::command::{Query, QueryOutput};
use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::{wait_for, xml_text};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_metadata_leader_loses_nothing() -> anyhow::Result<()> {
    let mut c = ProcCluster::start(ProcOptions::default()).await?;
    let (status, body) =
        c.ec2(0, "CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    assert_eq!(status, 200, "{body}");
    let vol = xml_text(&body, "volumeId").unwrap_or_default();

    wait_for("a leader", Duration::from_secs(30), || async { c.leader().await.is_some() }).await?;
    let leader = c.leader().await.unwrap_or(0);
    c.meta[leader].kill9();

    // Writes keep working (the gateway finds the new leader), reads see the old ones.
    for i in 0..5 {
        let v = i.to_string();
        let (status, body) = c
            .ec2(
                0,
                "CreateTags",
                &[("ResourceId.1", &vol), ("Tag.1.Key", &format!("k{i}")), ("Tag.1.Value", &v)],
            )
            .await?;
        assert_eq!(status, 200, "{body}");
    }
    c.meta[leader].restart().await?;
    let addr = c.meta_addrs[leader].clone();
    let want = {
        let QueryOutput::Volume(Some(v)) =
            c.client.read(&Query::Volume(cairn_core::VolumeId::parse(&vol).expect("id"))).await?
        else {
            anyhow::bail!("volume lost")
        };
        v
    };
    assert_eq!(want.tags.len(), 5);
    // The restarted member catches up: its applied index reaches the leader's.
    wait_for("the restarted member catches up", Duration::from_secs(30), || async {
        let Ok(me) = c.client.status(&addr).await else { return false };
        let mut best = 0;
        for a in &c.meta_addrs {
            if let Ok(s) = c.client.status(a).await {
                best = best.max(s.last_applied);
            }
        }
        me.last_applied >= best && best > 0
    })
    .await?;
    Ok(())
}
