//! Nodes that leave: a removed node's chunks and a drained node's chunks
//! are re-replicated so that every snapshot still restores byte for byte
//! over NBD after more nodes stop (and are declared down); unknown nodes
//! and the last node of a zone or destination are refused, changing
//! nothing.

use cairn_tests::nbd::NbdConn;
use cairn_tests::nodes::{change, list, repaired, state};
use cairn_tests::{pattern, wait_for, xml_text, TestCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const BS: usize = cairn_core::BLOCK_SIZE;
const LONG: Duration = Duration::from_secs(120);
/// The blocks written: the first 32 MiB of a 1 GiB volume.
const SPAN: u64 = 64;

type Image = BTreeMap<u64, Vec<u8>>;

/// A block's content for `(round, block)`: distinct for each pair.
fn content(round: u64, b: u64) -> Vec<u8> {
    pattern(round << 32 | b)
}

/// A volume with `rounds` snapshots: the first full, each later one
/// rewriting 8 blocks. Each snapshot with the image it must restore to.
async fn chain(c: &TestCluster, rounds: u64) -> anyhow::Result<Vec<(String, Image)>> {
    let vol = c.create_volume(&[("AvailabilityZone", "cairn-1a"), ("Size", "1")]).await?;
    let mut w = NbdConn::connect(c.nbd_addr(), &vol).await?;
    let mut image = Image::new();
    let mut out = Vec::new();
    for round in 0..rounds {
        let blocks: Vec<u64> = if round == 0 {
            (0..SPAN).collect()
        } else {
            (0..8).map(|i| (round * 5 + i * 7) % SPAN).collect()
        };
        for b in blocks {
            let data = content(round, b);
            w.write(b * BS as u64, &data).await?;
            image.insert(b, data);
        }
        w.flush().await?;
        let (status, body) = c.ec2("CreateSnapshot", &[("VolumeId", &vol)]).await?;
        anyhow::ensure!(status == 200, "CreateSnapshot: {body}");
        let snap = xml_text(&body, "snapshotId").unwrap_or_default();
        wait_for("the snapshot completes", LONG, || async {
            c.status_of("DescribeSnapshots", "SnapshotId.1", &snap).await.as_deref()
                == Some("completed")
        })
        .await?;
        out.push((snap, image.clone()));
    }
    Ok(out)
}

/// Restores `snap` into a new volume in cairn-1b and checks every block.
async fn restores_to(c: &TestCluster, snap: &str, want: &Image) -> anyhow::Result<()> {
    let (status, body) =
        c.ec2("CreateVolume", &[("AvailabilityZone", "cairn-1b"), ("SnapshotId", snap)]).await?;
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
    Ok(())
}

/// Stops the chunk nodes `names` and waits until the gateway declares each down.
async fn stop_until_down(c: &mut TestCluster, names: &[&str]) -> anyhow::Result<()> {
    for n in names {
        c.take_chunk_node(n).ok_or_else(|| anyhow::anyhow!("no node {n}"))?.shutdown().await;
    }
    let addr = c.http_addr();
    for n in names {
        wait_for("the stopped node is declared down", LONG, || async {
            state(addr, n).await.as_deref() == Some("down")
        })
        .await?;
    }
    Ok(())
}

fn requested(v: &Value) -> u64 {
    v["requested"].as_u64().unwrap_or(0)
}

fn row<'a>(nodes: &'a Value, id: &str) -> &'a Value {
    nodes["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node_id"] == id))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_is_re_replicated_and_snapshots_survive_two_more_losses(
) -> anyhow::Result<()> {
    let mut c = TestCluster::start_four().await?;
    let addr = c.http_addr();
    let snaps = chain(&c, 3).await?;

    // Its disk is gone.
    c.take_chunk_node("chunk-1a").ok_or_else(|| anyhow::anyhow!("chunk-1a"))?.kill_for_test().await;
    std::fs::remove_dir_all(c.data_dir().join("chunk-1a"))?;
    let (status, v) = change(addr, "chunk-1a", "remove").await?;
    assert_eq!(status, 202, "{v}");
    let report = repaired(addr, requested(&v)).await?;
    eprintln!("re-replication after the remove: {report}");
    assert!(report["copied"].as_u64().unwrap_or(0) > 0, "{report}");
    let nodes = list(addr).await?;
    assert_eq!(row(&nodes, "chunk-1a")["state"], "removed", "{nodes}");
    assert_eq!(row(&nodes, "chunk-1b")["state"], "up", "{nodes}");

    // Every chunk is on all three nodes left: two more may stop.
    stop_until_down(&mut c, &["chunk-1a2", "chunk-1b2"]).await?;
    for (snap, want) in &snaps {
        restores_to(&c, snap, want).await?;
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_ends_holding_nothing_needed_and_can_be_stopped() -> anyhow::Result<()> {
    let mut c = TestCluster::start_four().await?;
    let addr = c.http_addr();
    let snaps = chain(&c, 2).await?;

    let (status, v) = change(addr, "chunk-1b2", "drain").await?;
    assert_eq!(status, 202, "{v}");
    let report = repaired(addr, requested(&v)).await?;
    eprintln!("re-replication after the drain: {report}");
    assert!(report["copied"].as_u64().unwrap_or(0) > 0, "{report}");
    let nodes = list(addr).await?;
    assert_eq!(row(&nodes, "chunk-1b2")["state"], "draining", "{nodes}");
    assert_eq!(row(&nodes, "chunk-1b2")["backlog"], 0, "{nodes}");

    // Only chunk-1b is left: it holds every chunk the drained node held.
    c.take_chunk_node("chunk-1b2").ok_or_else(|| anyhow::anyhow!("chunk-1b2"))?.shutdown().await;
    stop_until_down(&mut c, &["chunk-1a", "chunk-1a2"]).await?;
    assert_eq!(state(addr, "chunk-1b2").await.as_deref(), Some("draining"));
    for (snap, want) in &snaps {
        restores_to(&c, snap, want).await?;
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_nodes_and_the_last_node_of_a_zone_are_refused_and_nothing_changes(
) -> anyhow::Result<()> {
    let c = TestCluster::start().await?;
    let addr = c.http_addr();
    let states = |v: &Value| -> Vec<(String, String)> {
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| (n["node_id"].to_string(), n["state"].to_string()))
            .collect()
    };
    let before = states(&list(addr).await?);
    assert_eq!(before.len(), 3);
    assert!(before.iter().all(|(_, s)| s == "\"up\""), "{before:?}");

    for verb in ["drain", "remove"] {
        let (status, v) = change(addr, "chunk-9z", verb).await?;
        assert_eq!(status, 404, "{v}");
        assert_eq!(v["error"], "The chunk node 'chunk-9z' is not registered.");
    }
    let outpost = c.outpost.to_string();
    let (status, v) = change(addr, "chunk-op", "drain").await?;
    assert_eq!(status, 409, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("last node of zone {outpost}")), "{why}");
    let (status, v) = change(addr, "chunk-1a", "drain").await?;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("zone cairn-1a"), "{v}");
    let (status, v) = change(addr, "chunk-op", "remove").await?;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains(&format!("Outpost {outpost}")), "{v}");

    assert_eq!(states(&list(addr).await?), before, "nothing changed");
    c.shutdown().await;
    Ok(())
}
