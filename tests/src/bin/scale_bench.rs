//! `scale_bench`: DescribeSnapshots and DescribeVolumes with 1,000 and then
//! 100,000 volumes and as many snapshots in the metadata group, on real
//! processes (3 metadata members, 3 chunk nodes, a gateway on loopback).
//! Prints one Markdown table: the seconds of each query at both sizes (the
//! median of 5) and their ratio (EC2 caps DescribeVolumes pages at 500),
//! and the peak resident memory of every process.
//!
//! The records are written straight into the metadata group (CreateVolume,
//! then CreateSnapshot and its copy job's Finish on a made-up manifest root;
//! garbage collection and repair are off, so nothing reads the manifests),
//! 256 writes in flight. Each volume and its snapshot carry the tag
//! `group` = `g0`..`g99`, so a tag filter selects 1%. The queries are EC2
//! Query calls as boto3 sends them, timed from the request to the last byte
//! of the answer.

use anyhow::{bail, Context};
use cairn_core::command::{Command, CommandOutput, CopyOutcome, JobOp};
use cairn_core::records::{Snapshot, Volume};
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, SnapshotId, VolumeId};
use cairn_tests::procs::{Proc, ProcCluster, ProcOptions};
use cairn_tests::records::{pending_snapshot, volume};
use cairn_tests::ACCOUNT;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

const IN_FLIGHT: usize = 256;
const GROUPS: usize = 100;
const JOB_OWNER: &str = "scale-bench";

fn group_tags(i: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("group".to_string(), format!("g{}", i % GROUPS))])
}

/// Volume `i` and its completed snapshot.
async fn pair(c: &ProcCluster, i: usize) -> anyhow::Result<(VolumeId, SnapshotId)> {
    let volume = Volume { size_gib: 8, tags: group_tags(i), ..volume(ACCOUNT) };
    let vid = volume.id.clone();
    c.client.write(&Command::CreateVolume { volume, client_token: None }).await??;
    let snapshot = Snapshot {
        description: format!("scale bench {i}"),
        volume_size_gib: 8,
        tags: group_tags(i),
        ..pending_snapshot(vid.clone(), ACCOUNT)
    };
    let sid = snapshot.id.clone();
    let create = Command::CreateSnapshot {
        snapshot,
        client_token: None,
        job_owner: JOB_OWNER.into(),
        lease_expires_ms: now_ms() + 3_600_000,
    };
    let CommandOutput::Snapshot(_) = c.client.write(&create).await?? else {
        bail!("CreateSnapshot answered no snapshot")
    };
    let outcome = CopyOutcome::Completed {
        manifest_root: ChunkId::of(format!("scale bench {i}").as_bytes()),
        full_size_bytes: 1 << 30,
    };
    let finish = Command::CopyJob {
        id: sid.clone(),
        owner: JOB_OWNER.into(),
        now_ms: now_ms(),
        op: JobOp::Finish { outcome },
    };
    c.client.write(&finish).await??;
    Ok((vid, sid))
}

/// Writes pairs `from..to`, [`IN_FLIGHT`] at once; returns the first one.
async fn load(
    c: &Arc<ProcCluster>,
    from: usize,
    to: usize,
) -> anyhow::Result<(VolumeId, SnapshotId)> {
    let mut set: JoinSet<anyhow::Result<(usize, VolumeId, SnapshotId)>> = JoinSet::new();
    let mut first = None;
    let mut take = |r: (usize, VolumeId, SnapshotId)| {
        if r.0 == from {
            first = Some((r.1, r.2));
        }
    };
    for i in from..to {
        while set.len() >= IN_FLIGHT {
            take(set.join_next().await.context("a loader task")???);
        }
        let c = c.clone();
        set.spawn(async move { pair(&c, i).await.map(|(v, s)| (i, v, s)) });
    }
    while let Some(r) = set.join_next().await {
        take(r??);
    }
    first.context("nothing loaded")
}

/// One query: seconds (median of 5), items in the answer, and whether it
/// had a next token.
async fn time_query(
    c: &ProcCluster,
    action: &str,
    params: &[(&str, &str)],
    item_tag: &str,
) -> anyhow::Result<(f64, usize, bool)> {
    let mut secs = Vec::new();
    let mut answer = (0, false);
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = c.ec2(0, action, params).await?;
        secs.push(t.elapsed().as_secs_f64());
        if status != 200 {
            bail!("{action} answered {status}: {}", &body[..body.len().min(500)]);
        }
        answer = (body.matches(item_tag).count(), body.contains("<nextToken>"));
    }
    secs.sort_by(f64::total_cmp);
    Ok((secs[2], answer.0, answer.1))
}

/// Every page of DescribeSnapshots at `MaxResults` 1000: seconds, pages, items.
async fn walk_all(c: &ProcCluster) -> anyhow::Result<(f64, usize, usize)> {
    let t = Instant::now();
    let (mut pages, mut items) = (0, 0);
    let mut token: Option<String> = None;
    loop {
        let mut params = vec![("MaxResults", "1000".to_string()), ("Owner.1", "self".to_string())];
        if let Some(t) = &token {
            params.push(("NextToken", t.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = c.ec2(0, "DescribeSnapshots", &params).await?;
        if status != 200 {
            bail!("DescribeSnapshots page {pages} answered {status}");
        }
        pages += 1;
        items += body.matches("<snapshotId>").count();
        token = body
            .split_once("<nextToken>")
            .and_then(|(_, rest)| rest.split_once("</nextToken>"))
            .map(|(t, _)| t.to_string());
        if token.is_none() {
            return Ok((t.elapsed().as_secs_f64(), pages, items));
        }
    }
}

/// Peak resident memory of a process so far (the kernel's high-water mark).
fn peak_rss(p: &Proc) -> u64 {
    let Some(pid) = p.pid() else { return 0 };
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// A query: its name in the table, the action, its parameters, and the
/// element that counts one item of the answer.
type Query<'a> = (&'static str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

struct Row {
    name: &'static str,
    secs: Vec<f64>,
    items: Vec<usize>,
}

/// Runs every query once the table holds `n` pairs, into `rows`.
async fn measure(
    c: &ProcCluster,
    (vol, snap): &(VolumeId, SnapshotId),
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let (vol, snap) = (vol.to_string(), snap.to_string());
    let queries: Vec<Query> = vec![
        (
            "DescribeSnapshots, first page of 1000",
            "DescribeSnapshots",
            vec![("MaxResults", "1000"), ("Owner.1", "self")],
            "<snapshotId>",
        ),
        (
            "DescribeSnapshots, volume-id filter",
            "DescribeSnapshots",
            vec![("Filter.1.Name", "volume-id"), ("Filter.1.Value.1", &vol)],
            "<snapshotId>",
        ),
        (
            "DescribeSnapshots, tag filter (1%), page of 1000",
            "DescribeSnapshots",
            vec![
                ("MaxResults", "1000"),
                ("Filter.1.Name", "tag:group"),
                ("Filter.1.Value.1", "g7"),
            ],
            "<snapshotId>",
        ),
        (
            "DescribeSnapshots, one SnapshotId",
            "DescribeSnapshots",
            vec![("SnapshotId.1", &snap)],
            "<snapshotId>",
        ),
        (
            "DescribeVolumes, first page of 500",
            "DescribeVolumes",
            vec![("MaxResults", "500")],
            "<volumeId>",
        ),
        (
            "DescribeVolumes, tag filter (1%), page of 500",
            "DescribeVolumes",
            vec![("MaxResults", "500"), ("Filter.1.Name", "tag:group"), ("Filter.1.Value.1", "g7")],
            "<volumeId>",
        ),
        (
            "DescribeVolumes, one VolumeId",
            "DescribeVolumes",
            vec![("VolumeId.1", &vol)],
            "<volumeId>",
        ),
    ];
    for (i, (name, action, params, tag)) in queries.iter().enumerate() {
        let (secs, items, _) = time_query(c, action, params, tag).await?;
        if rows.len() <= i {
            rows.push(Row { name, secs: Vec::new(), items: Vec::new() });
        }
        rows[i].secs.push(secs);
        rows[i].items.push(items);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let big: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    let small = 1_000.min(big);
    let opts = ProcOptions {
        gateways: 1,
        gateway_extra: "gc_interval_secs = 0\nrepair_interval_secs = 0\n".into(),
        ..ProcOptions::default()
    };
    let c = Arc::new(ProcCluster::start(opts).await?);
    let mut rows = Vec::new();
    let t = Instant::now();
    let first = load(&c, 0, small).await?;
    eprintln!(
        "scale_bench: {small} volumes and snapshots written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    measure(&c, &first, &mut rows).await?;
    let t = Instant::now();
    load(&c, small, big).await?;
    let load_secs = t.elapsed().as_secs_f64();
    eprintln!("scale_bench: {} more written in {load_secs:.1}s", big - small);
    measure(&c, &first, &mut rows).await?;
    let (walk_secs, pages, walked) = walk_all(&c).await?;

    println!("\n{big} volumes and {big} snapshots in the metadata group (written at {:.0} records/s, 3 writes per pair):\n", (big - small) as f64 * 3.0 / load_secs);
    println!("| query | {small} records: s | items | {big} records: s | items | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {} | {:.4} | {} | {:.1}x |",
            r.name,
            r.secs[0],
            r.items[0],
            r.secs[1],
            r.items[1],
            r.secs[1] / r.secs[0]
        );
    }
    println!("| DescribeSnapshots, every page of 1000 | | | {walk_secs:.2} | {walked} in {pages} pages | |");
    println!("\nPeak resident memory (VmHWM) per process:\n");
    println!("| process | MiB |");
    println!("|---|---:|");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (name, procs) in
        [("metadata member", &c.meta), ("chunk node", &c.chunks), ("gateway", &c.gateways)]
    {
        for (i, p) in procs.iter().enumerate() {
            println!("| {name} {} | {:.0} |", i + 1, mib(peak_rss(p)));
        }
    }
    if walked != big {
        bail!("walking every page gave {walked} snapshots, not {big}");
    }
    Ok(())
}
