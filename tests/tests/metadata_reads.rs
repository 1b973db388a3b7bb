//! Reads are linearizable: what one gateway wrote is visible at once through
//! another (each Describe is a read-index read on the leader).

use cairn_tests::procs::{ProcCluster, ProcOptions};
use cairn_tests::xml_text;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_gateway_is_read_at_once_through_another() -> anyhow::Result<()> {
    let c = ProcCluster::start(ProcOptions { gateways: 2, ..ProcOptions::default() }).await?;
    // Snapshots rotate over several volumes, under the pending-snapshot limit.
    let mut vols = Vec::new();
    for _ in 0..5 {
        let (status, body) =
            c.ec2(0, "CreateVolume", &[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
        assert_eq!(status, 200, "{body}");
        vols.push(xml_text(&body, "volumeId").unwrap_or_default());
    }
    for i in 0..20 {
        let vol = &vols[i % vols.len()];
        let (writer, reader) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        if i % 4 < 2 {
            let (status, body) = c.ec2(writer, "CreateSnapshot", &[("VolumeId", vol)]).await?;
            assert_eq!(status, 200, "{body}");
            let snap = xml_text(&body, "snapshotId").unwrap_or_default();
            let (status, body) =
                c.ec2(reader, "DescribeSnapshots", &[("SnapshotId.1", &snap)]).await?;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(&snap), "snapshot {snap} not visible through gateway {reader}");
        } else {
            let value = format!("v{i}");
            let (status, body) = c
                .ec2(
                    writer,
                    "CreateTags",
                    &[("ResourceId.1", vol), ("Tag.1.Key", "k"), ("Tag.1.Value", &value)],
                )
                .await?;
            assert_eq!(status, 200, "{body}");
            let (status, body) = c.ec2(reader, "DescribeVolumes", &[("VolumeId.1", vol)]).await?;
            assert_eq!(status, 200, "{body}");
            assert!(
                body.contains(&format!("<value>{value}</value>")),
                "tag {value} not visible: {body}"
            );
        }
    }
    Ok(())
}
