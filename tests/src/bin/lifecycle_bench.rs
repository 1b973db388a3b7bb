//! `lifecycle_bench`: what keeping data for years costs, on real processes
//! (`cairn` metadata, chunk node and gateway on loopback). Prints one JSON
//! object; `tests/bench/lifecycle.py` puts it beside restic in a table.
//!
//! - `lifecycle_bench gc`: one chunk node (RF 1) holding about a million
//!   chunks under 10,000 completed snapshots (100 volumes x 100 snapshots:
//!   a first one of 5,000 blocks, then 99 incrementals of 50 changed blocks
//!   each). The chunks, pages and roots are put straight into the chunk
//!   store and the records straight into the metadata group (taking 10,000
//!   real snapshots would take hours), but the collector is the real one:
//!   the snapshots of 10 volumes are deleted and a pass is asked for through
//!   `/_cairn/gc`, then a second pass with nothing left to collect. Chunks
//!   are 4,000 bytes so that a million fit on the disk (a record takes one
//!   4 KiB slot); the mark and sweep cost per chunk, not per byte. Reports
//!   each pass's time, what it examined and freed, and the peak resident
//!   memory of the gateway (which marks) and the chunk node (which sweeps)
//!   sampled during the pass.
//! - `lifecycle_bench repair`: four region nodes (two per AZ), RF 3, one
//!   snapshot of `--blocks` random 512 KiB blocks. Scrub throughput of one
//!   node (unthrottled) beside a direct sequential read of its pack files;
//!   then that node is killed, its disk deleted and the node removed, and
//!   re-replication is timed until a pass ends clean.

use anyhow::{bail, Context};
use cairn_core::command::{Command, CommandOutput, DIRECT_VOLUME_ID};
use cairn_core::manifest::{BuiltManifest, IncrementalBuilder, ManifestBuilder, ManifestPage};
use cairn_core::placement::{place, Candidate};
use cairn_core::records::Snapshot;
use cairn_core::time::now_ms;
use cairn_core::{ChunkId, SnapshotId, VolumeId, BLOCK_SIZE};
use cairn_proto::pb;
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_tests::http;
use cairn_tests::procs::{Proc, ProcCluster, ProcOptions};
use cairn_tests::records::pending_snapshot;
use rand::RngCore;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::transport::Channel;

const OWNER: &str = "123456789012";
/// Puts and metadata writes in flight at once.
const IN_FLIGHT: usize = 64;
const LONG: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context("a flag needs a value")?.parse()?),
            None => Ok(default),
        }
    };
    let out = match args.first().map(String::as_str) {
        Some("gc") => {
            let shape = Shape {
                volumes: flag("--volumes", 100)?,
                snapshots: flag("--snapshots-per-volume", 100)?,
                first_blocks: flag("--first-blocks", 5000)?,
                changed: flag("--changed-blocks", 50)?,
                deleted_volumes: flag("--deleted-volumes", 10)?,
            };
            gc_bench(shape).await?
        }
        Some("repair") => repair_bench(flag("--blocks", 2048)?).await?,
        _ => bail!("usage: lifecycle_bench gc [--volumes N ...] | repair [--blocks N]"),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

struct Shape {
    volumes: u64,
    snapshots: u64,
    first_blocks: u64,
    changed: u64,
    deleted_volumes: u64,
}

async fn store_client(addr: SocketAddr) -> anyhow::Result<ChunkStoreClient<Channel>> {
    let ch = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    Ok(ChunkStoreClient::new(ch)
        .max_decoding_message_size(cairn_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(cairn_proto::MAX_MESSAGE_BYTES))
}

/// Puts chunks with [`IN_FLIGHT`] calls at once.
struct Putter {
    set: JoinSet<anyhow::Result<()>>,
    bytes: u64,
    chunks: u64,
}

impl Putter {
    fn new() -> Putter {
        Putter { set: JoinSet::new(), bytes: 0, chunks: 0 }
    }

    async fn put(&mut self, c: &ChunkStoreClient<Channel>, data: Vec<u8>) -> anyhow::Result<()> {
        while self.set.len() >= IN_FLIGHT {
            self.set.join_next().await.context("a put task")???;
        }
        self.bytes += data.len() as u64;
        self.chunks += 1;
        let mut c = c.clone();
        self.set.spawn(async move {
            let id = ChunkId::of(&data).0.to_vec();
            c.put_chunk(pb::PutChunkRequest { id, data: data.into() }).await?;
            Ok(())
        });
        Ok(())
    }

    async fn manifest(
        &mut self,
        c: &ChunkStoreClient<Channel>,
        m: &BuiltManifest,
    ) -> anyhow::Result<()> {
        for (_, page) in &m.pages {
            self.put(c, page.clone()).await?;
        }
        self.put(c, m.root.clone()).await
    }

    async fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        while let Some(r) = self.set.join_next().await {
            r??;
        }
        Ok((self.chunks, self.bytes))
    }
}

/// A 4,000-byte chunk unique to `(volume, generation, block)`.
fn small_chunk(volume: u64, generation: u64, block: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4000];
    b[..8].copy_from_slice(&volume.to_le_bytes());
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..24].copy_from_slice(&block.to_le_bytes());
    b
}

/// A completed snapshot record of `root` (as an EBS direct snapshot: no
/// volume backs it), written with StartSnapshot and CompleteSnapshot.
async fn record(c: &ProcCluster, root: ChunkId, size_gib: u64) -> anyhow::Result<SnapshotId> {
    let direct = VolumeId::parse(DIRECT_VOLUME_ID).context("the direct volume id")?;
    let snapshot = Snapshot {
        description: "lifecycle bench".into(),
        volume_size_gib: size_gib,
        ..pending_snapshot(direct, OWNER)
    };
    let id = snapshot.id.clone();
    let start = Command::StartSnapshot { snapshot, client_token: None, fingerprint: String::new() };
    let CommandOutput::Snapshot(_) = c.client.write(&start).await?? else {
        bail!("StartSnapshot answered no snapshot")
    };
    let done = Command::CompleteSnapshot {
        id: id.clone(),
        manifest_root: root,
        full_size_bytes: size_gib << 30,
        at_ms: now_ms(),
    };
    c.client.write(&done).await??;
    Ok(id)
}

/// Writes a record per root, [`IN_FLIGHT`] at once; the ids in root order.
async fn records(
    c: &Arc<ProcCluster>,
    roots: Vec<ChunkId>,
    gib: u64,
) -> anyhow::Result<Vec<SnapshotId>> {
    let mut set: JoinSet<anyhow::Result<(usize, SnapshotId)>> = JoinSet::new();
    let mut out = vec![None; roots.len()];
    for (i, root) in roots.into_iter().enumerate() {
        while set.len() >= IN_FLIGHT {
            let (j, id) = set.join_next().await.context("a record task")???;
            out[j] = Some(id);
        }
        let c = c.clone();
        set.spawn(async move { record(&c, root, gib).await.map(|id| (i, id)) });
    }
    while let Some(r) = set.join_next().await {
        let (j, id): (usize, SnapshotId) = r??;
        out[j] = Some(id);
    }
    out.into_iter().map(|id| id.context("a record was not written")).collect()
}

/// Bytes under `dir`, as `du` counts them (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Resident memory of process `pid` now, in bytes (0 once it is gone).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Samples the peak resident memory of processes while something runs.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peaks: Vec<Arc<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn watch(procs: Vec<Option<u32>>) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Vec<Arc<AtomicU64>> = procs.iter().map(|_| Arc::default()).collect();
        let (s, p) = (stop.clone(), peaks.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                for (pid, peak) in procs.iter().zip(&p) {
                    if let Some(pid) = pid {
                        peak.fetch_max(rss(*pid), Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        PeakRss { stop, peaks, task }
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect()
    }
}

fn pid_of(p: &Proc) -> Option<u32> {
    p.pid().map(|p| p.as_raw() as u32)
}

/// Asks the gateway for a GC pass and waits for its report.
async fn gc_pass(addr: SocketAddr) -> anyhow::Result<(Value, f64)> {
    let t = Instant::now();
    let report = cairn_tests::gc::run_pass_within(addr, LONG).await?;
    Ok((report, t.elapsed().as_secs_f64()))
}

async fn gc_bench(s: Shape) -> anyhow::Result<Value> {
    let opts = ProcOptions {
        chunk_nodes: vec![("chunk-1a".into(), "cairn-1a".into(), false)],
        gateways: 1,
        replication_factor: 1,
        gateway_extra: "gc_interval_secs = 0\nrepair_interval_secs = 0\n".into(),
        ..ProcOptions::default()
    };
    let c = Arc::new(ProcCluster::start(opts).await?);
    let store = store_client(c.chunks[0].main).await?;
    let gib = (s.first_blocks * BLOCK_SIZE as u64).div_ceil(1 << 30);
    let size = gib << 30;

    // The chunks and manifests, volume by volume; roots in snapshot order.
    let t = Instant::now();
    let mut put = Putter::new();
    let mut data_chunks = 0u64;
    let mut roots: Vec<ChunkId> = Vec::new();
    for v in 0..s.volumes {
        let mut full = ManifestBuilder::new(size);
        for b in 0..s.first_blocks {
            let data = small_chunk(v, 0, b);
            full.set(b, Some(ChunkId::of(&data)));
            put.put(&store, data).await?;
            data_chunks += 1;
        }
        let mut m = full.finish();
        put.manifest(&store, &m).await?;
        let mut pages: BTreeMap<u64, ManifestPage> = m
            .pages
            .iter()
            .map(|(_, b)| ManifestPage::decode(b).map(|p| (p.page, p)))
            .collect::<Result<_, _>>()?;
        roots.push(m.root_id);
        for g in 1..s.snapshots {
            let parent = cairn_core::manifest::ManifestRoot::decode(&m.root)?;
            let mut inc = IncrementalBuilder::new(m.root_id, parent, size)?;
            for i in 0..s.changed {
                let b = (g * s.changed + i) % s.first_blocks.min(cairn_core::manifest::PAGE_BLOCKS);
                let data = small_chunk(v, g, b);
                inc.set(b, Some(ChunkId::of(&data)));
                put.put(&store, data).await?;
                data_chunks += 1;
            }
            m = inc.finish(&pages)?;
            put.manifest(&store, &m).await?;
            for (_, b) in &m.pages {
                let p = ManifestPage::decode(b)?;
                pages.insert(p.page, p);
            }
            roots.push(m.root_id);
        }
    }
    let (chunks, bytes) = put.finish().await?;
    let ingest_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ids = records(&c, roots, gib).await?;
    let records_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "stored {chunks} chunks ({} MiB) in {ingest_secs:.0} s, {} records in {records_secs:.0} s",
        bytes >> 20,
        ids.len()
    );

    let data_dir = c.dir.path().join("chunk-1a").join("data");
    let du_before = disk_usage(&data_dir);
    let deleted = (s.deleted_volumes * s.snapshots) as usize;
    for id in &ids[..deleted.min(ids.len())] {
        c.client.write(&Command::DeleteSnapshot { id: id.clone() }).await??;
    }
    let watch = PeakRss::watch(vec![pid_of(&c.gateways[0]), pid_of(&c.chunks[0])]);
    let (first, first_secs) = gc_pass(c.gateways[0].main).await?;
    let peaks = watch.finish().await;
    let du_after = disk_usage(&data_dir);
    let watch = PeakRss::watch(vec![pid_of(&c.gateways[0]), pid_of(&c.chunks[0])]);
    let (second, second_secs) = gc_pass(c.gateways[0].main).await?;
    let steady = watch.finish().await;
    Ok(json!({
        "snapshots": ids.len(), "deleted_snapshots": deleted, "chunks": chunks,
        "data_chunks": data_chunks,
        "stored_bytes": bytes, "ingest_secs": ingest_secs, "records_secs": records_secs,
        "du_before": du_before, "du_after": du_after,
        "pass": first, "pass_secs": first_secs,
        "gateway_peak_rss": peaks[0], "chunk_node_peak_rss": peaks[1],
        "steady_pass": second, "steady_pass_secs": second_secs,
        "steady_gateway_peak_rss": steady[0], "steady_chunk_node_peak_rss": steady[1],
        "gateway_rss_after": pid_of(&c.gateways[0]).map_or(0, rss),
    }))
}

/// Four region nodes, two per AZ.
fn region_nodes() -> Vec<(String, String, bool)> {
    ["chunk-1a", "chunk-1a-2", "chunk-1b", "chunk-1b-2"]
        .iter()
        .map(|n| (n.to_string(), format!("cairn-{}", &n[6..8]), false))
        .collect()
}

async fn repair_bench(blocks: u64) -> anyhow::Result<Value> {
    let opts = ProcOptions {
        chunk_nodes: region_nodes(),
        gateways: 1,
        replication_factor: 3,
        gateway_extra: "gc_interval_secs = 0\nrepair_interval_secs = 0\n".into(),
        ..ProcOptions::default()
    };
    let mut c = ProcCluster::start(opts).await?;
    let cands: Vec<Candidate> =
        region_nodes().into_iter().map(|(node_id, az, _)| Candidate { node_id, az }).collect();
    let mut stores = Vec::new();
    for p in &c.chunks {
        stores.push(store_client(p.main).await?);
    }
    // Random blocks, each put on the three nodes placement picks.
    let mut puts: Vec<Putter> = (0..stores.len()).map(|_| Putter::new()).collect();
    let mut full = ManifestBuilder::new(blocks * BLOCK_SIZE as u64);
    let mut rng = rand::thread_rng();
    for b in 0..blocks {
        let mut data = vec![0u8; BLOCK_SIZE];
        rng.fill_bytes(&mut data);
        let id = ChunkId::of(&data);
        full.set(b, Some(id));
        for n in place(&id, &cands, 3) {
            puts[n].put(&stores[n], data.clone()).await?;
        }
    }
    let m = full.finish();
    for (n, s) in stores.iter().enumerate() {
        puts[n].manifest(s, &m).await?;
    }
    let mut per_node = Vec::new();
    for p in puts {
        per_node.push(p.finish().await?);
    }
    let gib = (blocks * BLOCK_SIZE as u64).div_ceil(1 << 30);
    record(&c, m.root_id, gib).await?;

    // Scrub of node 0, unthrottled, beside a direct read of its packs.
    let packs = c.dir.path().join(&c.chunks[0].name).join("data").join("packs");
    let read = direct_read_mib_s(&packs)?;
    let mut s0 = stores[0].clone();
    let t = Instant::now();
    let pass = s0.scrub(pb::ScrubRequest { bytes_per_sec: 0 }).await?.into_inner().pass;
    let mut status = pb::ScrubStatusReply::default();
    while status.finished < pass || status.running {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = s0.scrub_status(pb::ScrubStatusRequest {}).await?.into_inner();
    }
    let scrub_secs = t.elapsed().as_secs_f64();
    let scrub_mib_s = status.bytes_checked as f64 / (1 << 20) as f64 / scrub_secs;

    // Node 0 dies with its disk and is removed; re-replication is timed.
    let lost = c.chunks[0].name.clone();
    let lost_bytes = per_node[0].1;
    c.chunks[0].kill9();
    std::fs::remove_dir_all(c.dir.path().join(&lost).join("data"))?;
    let addr = c.gateways[0].main;
    let t = Instant::now();
    let (status_code, body) = http::post(addr, &format!("/_cairn/nodes/{lost}/remove")).await?;
    anyhow::ensure!(status_code == 202, "remove {lost}: {status_code} {body}");
    let n = serde_json::from_str::<Value>(&body)?["requested"].as_u64().unwrap_or(0);
    let report = cairn_tests::nodes::repaired(addr, n).await?;
    let repair_secs = t.elapsed().as_secs_f64();
    c.chunks.remove(0);
    Ok(json!({
        "blocks": blocks, "node_bytes": lost_bytes,
        "scrub_bytes": status.bytes_checked, "scrub_records": status.records_checked,
        "scrub_secs": scrub_secs, "scrub_mib_s": scrub_mib_s, "direct_read_mib_s": read,
        "repair_secs": repair_secs, "repair": report,
        "repair_mib_s": lost_bytes as f64 / (1 << 20) as f64 / repair_secs,
    }))
}

/// MiB/s of one sequential `O_DIRECT` read of every file under `dir`.
fn direct_read_mib_s(dir: &Path) -> anyhow::Result<f64> {
    let mut bytes = 0u64;
    let t = Instant::now();
    for e in std::fs::read_dir(dir)?.flatten() {
        let out = std::process::Command::new("dd")
            .arg(format!("if={}", e.path().display()))
            .args(["of=/dev/null", "bs=4M", "iflag=direct"])
            .output()?;
        anyhow::ensure!(out.status.success(), "dd: {}", String::from_utf8_lossy(&out.stderr));
        bytes += e.metadata()?.len();
    }
    Ok(bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64())
}
