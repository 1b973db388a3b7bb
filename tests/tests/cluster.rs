//! Whole-cluster tests on the in-process harness: the EC2 API, real NBD
//! clients (qemu-img) and the metadata group working together.

use cairn_core::command::{Query, QueryOutput};
use cairn_tests::{http, run, wait_for, xml_text, TestCluster};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// A 64 MiB raw image: random data in a few places, zeros elsewhere.
fn make_image(path: &std::path::Path, seed: u8) -> anyhow::Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let mut data = vec![0u8; 64 << 20];
    for range in [0..(3 << 19), (20 << 20)..(21 << 20), ((63 << 20) + 17)..(64 << 20)] {
        rng.fill_bytes(&mut data[range]);
    }
    std::fs::write(path, data)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunk_nodes_register_with_their_zones() -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let QueryOutput::Nodes(nodes) = c.client.read(&Query::Nodes).await? else {
        anyhow::bail!("not nodes")
    };
    let mut zones: Vec<String> = nodes.iter().map(|n| n.zone()).collect();
    zones.sort();
    assert_eq!(zones, vec!["cairn-1a".to_string(), "cairn-1b".to_string(), c.outpost.to_string()]);
    let (status, body) = http::get(c.http_addr(), "/_cairn/health").await?;
    assert_eq!(status, 200, "{body}");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_restores_byte_for_byte_over_nbd() -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let img = c.data_dir().join("disk.img");
    make_image(&img, 1)?;
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    let uri = c.nbd_uri(&vol);
    let (code, out) = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", img.to_str().unwrap_or(""), &uri],
    )
    .await?;
    assert_eq!(code, 0, "{out}");

    let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", &vol)]).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(xml_text(&body, "status").as_deref(), Some("pending"));
    let snap = xml_text(&body, "snapshotId").unwrap_or_default();
    // Overwrite the volume right after the call returned: the snapshot must not see it.
    let other = c.data_dir().join("other.img");
    make_image(&other, 2)?;
    let (code, out) = run(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", other.to_str().unwrap_or(""), &uri],
    )
    .await?;
    assert_eq!(code, 0, "{out}");
    wait_for("the snapshot completes", LONG, || async {
        matches!(c.ec2("DescribeSnapshots", &[("SnapshotId.1", &snap)]).await,
            Ok((200, b)) if xml_text(&b, "status").as_deref() == Some("completed")
                && xml_text(&b, "progress").as_deref() == Some("100%"))
    })
    .await?;

    let restored =
        c.create_volume(&[("AvailabilityZone", "cairn-1b"), ("SnapshotId", &snap)]).await?;
    let (code, out) = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", img.to_str().unwrap_or(""), &c.nbd_uri(&restored)],
    )
    .await?;
    assert_eq!(code, 0, "restored volume differs from the snapshot instant: {out}");
    let (code, out) =
        run("qemu-img", &["compare", "-f", "raw", "-F", "raw", other.to_str().unwrap_or(""), &uri])
            .await?;
    assert_eq!(code, 0, "source volume lost a write: {out}");
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_survives_loss_of_the_metadata_leader() -> anyhow::Result<()> {
    let mut c = TestCluster::start().await?;
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    wait_for("a leader is known", LONG, || async { c.leader().await.is_some() }).await?;
    let i = c.leader().await.ok_or_else(|| anyhow::anyhow!("leader lost"))?;
    if let Some(node) = c.meta[i].take() {
        node.shutdown().await;
    }
    // Acknowledged before the loss, still there after it; new writes go through.
    let (status, body) = c
        .ec2(
            "CreateTags",
            &[("ResourceId.1", &vol), ("Tag.1.Key", "after"), ("Tag.1.Value", "failover")],
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = c.ec2("DescribeVolumes", &[("VolumeId.1", &vol)]).await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<key>after</key>") && body.contains("<value>failover</value>"),
        "{body}"
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_change_nothing() -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("CreateSnapshot", &[], "MissingParameter"),
        ("CreateSnapshot", &[("VolumeId", "vol-0123456789abcdef0")], "InvalidVolume.NotFound"),
        (
            "CreateVolume",
            &[("AvailabilityZone", "nowhere-1z"), ("Size", "1")],
            "InvalidParameterValue",
        ),
        (
            "CreateVolume",
            &[("AvailabilityZone", "cairn-1a"), ("Size", "-3")],
            "InvalidParameterValue",
        ),
        ("Frobnicate", &[], "InvalidAction"),
    ];
    for (action, params, code) in cases {
        let (status, body) = c.ec2(action, params).await?;
        assert_eq!(status, 400, "{action}: {body}");
        assert_eq!(xml_text(&body, "Code").as_deref(), Some(*code), "{action}: {body}");
        assert!(xml_text(&body, "RequestID").is_some_and(|r| !r.is_empty()), "{body}");
    }
    let (_, body) = c.ec2("DescribeVolumes", &[]).await?;
    assert!(!body.contains("<item>"), "a failed call created something: {body}");
    c.shutdown().await;
    Ok(())
}
