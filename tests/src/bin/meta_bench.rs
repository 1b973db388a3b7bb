//! `meta_bench`: committed CreateSnapshot records per second, and p50/p99
//! latency, of a 3-member Cairn metadata group (real `cairn metadata-node`
//! processes on loopback, fsync on), at 1, 16 and 256 concurrent clients; and
//! the same workload against a 3-member etcd cluster (same value size,
//! fsync on), when `--etcd` names an etcd binary. Prints one Markdown table.
//!
//! Cairn: every client task writes `Command::CreateSnapshot` through one
//! shared `MetadataClient` (as a gateway does), each on volumes created
//! beforehand (untimed) so the 5-pending-snapshots limit never refuses one.
//! etcd: every client task PUTs a key with a value as long as the encoded
//! Cairn write request, through etcd's JSON gateway (`/v3/kv/put`) on its own
//! keep-alive connection, spread over the three members as etcd's client does.
//! Both answer only after the write is committed by a quorum and fsynced.

use anyhow::{bail, Context};
use base64::Engine as _;
use cairn_core::command::{Command, CommandOutput};
use cairn_core::records::Snapshot;
use cairn_core::{SnapshotId, VolumeId};
use cairn_proto::meta_client::{RequestId, WriteRequest};
use cairn_proto::MetadataClient;
use cairn_tests::procs::start_meta_group;
use cairn_tests::records::{pending_snapshot, volume};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const OWNER: &str = "123456789012";
/// A volume takes this many pending snapshots at most.
const PER_VOLUME: usize = 5;

struct Args {
    clients: Vec<usize>,
    /// Writes per level: `max(min_ops, clients * ops_per_client)`.
    min_ops: usize,
    ops_per_client: usize,
    etcd: Option<PathBuf>,
    /// Where the data directories are (default: a temporary directory).
    data_dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        clients: vec![1, 16, 256],
        min_ops: 1000,
        ops_per_client: 24,
        etcd: None,
        data_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => {
                a.clients = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--min-ops" => a.min_ops = value()?.parse()?,
            "--ops-per-client" => a.ops_per_client = value()?.parse()?,
            "--etcd" => a.etcd = Some(PathBuf::from(value()?)),
            "--data-dir" => a.data_dir = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown flag {other}; usage: meta_bench [--clients 1,16,256] [--min-ops N] [--ops-per-client N] [--etcd /usr/bin/etcd] [--data-dir DIR]"
            ),
        }
    }
    Ok(a)
}

/// One measured level.
struct Row {
    system: &'static str,
    clients: usize,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).saturating_sub(1).min(l.len() - 1);
        l[i].as_secs_f64() * 1000.0
    }
}

/// The command a gateway writes for CreateSnapshot.
fn create_snapshot(volume_id: &VolumeId) -> Command {
    let now = cairn_core::time::now_ms();
    Command::CreateSnapshot {
        snapshot: Snapshot {
            description: "meta_bench".into(),
            start_time_ms: now,
            ..pending_snapshot(volume_id.clone(), OWNER)
        },
        client_token: None,
        job_owner: "gateway-bench".into(),
        lease_expires_ms: now + 60_000,
    }
}

/// Bytes one CreateSnapshot write request takes on the wire and in the log.
fn record_size() -> anyhow::Result<usize> {
    let req = WriteRequest {
        request_id: RequestId { client: 1, seq: 1 },
        command: create_snapshot(&VolumeId::generate()),
    };
    Ok(bincode::serialize(&req)?.len())
}

async fn cairn_level(
    client: &Arc<MetadataClient>,
    clients: usize,
    ops: usize,
) -> anyhow::Result<Row> {
    let per_client = ops.div_ceil(clients);
    // Volumes first, untimed: each client snapshots its own, 5 per volume.
    let mut setup = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        setup.push(tokio::spawn(async move {
            let mut vols = Vec::new();
            for _ in 0..per_client.div_ceil(PER_VOLUME) {
                let v = volume(OWNER);
                match client
                    .write(&Command::CreateVolume { volume: v.clone(), client_token: None })
                    .await?
                {
                    Ok(CommandOutput::Volume(_)) => vols.push(v.id),
                    other => bail!("CreateVolume answered {other:?}"),
                }
            }
            Ok(vols)
        }));
    }
    let mut volumes = Vec::new();
    for t in setup {
        volumes.push(t.await??);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for vols in volumes {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let cmd = create_snapshot(&vols[i / PER_VOLUME]);
                let t = Instant::now();
                match client.write(&cmd).await? {
                    Ok(CommandOutput::Snapshot(_)) => lat.push(t.elapsed()),
                    other => bail!("CreateSnapshot answered {other:?}"),
                }
            }
            Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Row { system: "cairn", clients, ops: latencies.len(), elapsed: start.elapsed(), latencies })
}

/// A 3-member etcd cluster on loopback, fsync on (etcd's default).
struct Etcd {
    children: Vec<Child>,
    clients: Vec<SocketAddr>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port free right now (etcd cannot listen on port 0).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_etcd(bin: &Path, root: &Path) -> anyhow::Result<Etcd> {
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(free_port()?);
        clients.push(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    }
    let cluster: Vec<String> =
        peers.iter().enumerate().map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}")).collect();
    let mut children = Vec::new();
    for i in 0..3 {
        let dir = root.join(format!("etcd-{i}"));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("log"))?;
        let peer = format!("http://127.0.0.1:{}", peers[i]);
        let client = format!("http://{}", clients[i]);
        children.push(
            std::process::Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--initial-cluster", &cluster.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", "meta-bench"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    let etcd = Etcd { children, clients };
    let deadline = Instant::now() + Duration::from_secs(60);
    for addr in &etcd.clients {
        loop {
            let mut conn = HttpConn::connect(*addr).await.ok();
            let healthy = match conn.as_mut() {
                Some(c) => {
                    matches!(c.request("GET", "/health", "").await, Ok((200, b)) if b.contains("true"))
                }
                None => false,
            };
            if healthy {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd at {addr} did not become healthy");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(etcd)
}

/// A keep-alive HTTP/1.1 connection (etcd's JSON gateway needs nothing more).
struct HttpConn {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(HttpConn { addr, stream: BufReader::new(s) })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let (status, body) = cairn_tests::http::read_answer(&mut self.stream).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn etcd_level(
    etcd: &Etcd,
    clients: usize,
    ops: usize,
    value_len: usize,
) -> anyhow::Result<Row> {
    let per_client = ops.div_ceil(clients);
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; value_len]);
    let mut conns = Vec::new();
    for c in 0..clients {
        conns.push(HttpConn::connect(etcd.clients[c % etcd.clients.len()]).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let key = base64::engine::general_purpose::STANDARD
                    .encode(format!("snap/{clients}/{c}/{i}/{}", SnapshotId::generate()));
                let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
                let t = Instant::now();
                let (status, reply) = conn.request("POST", "/v3/kv/put", &body).await?;
                if status != 200 {
                    bail!("etcd put answered {status}: {reply}");
                }
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Row { system: "etcd", clients, ops: latencies.len(), elapsed: start.elapsed(), latencies })
}

fn print_table(rows: &[Row], value_len: usize, data: &Path) {
    println!(
        "\nCreateSnapshot-sized writes ({value_len} bytes), 3 members on loopback, fsync on, data in {} (where a sync costs nothing if it is a tmpfs):\n",
        data.display()
    );
    println!("| system | clients | writes | records/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            r.system,
            r.clients,
            r.ops,
            r.ops as f64 / r.elapsed.as_secs_f64(),
            r.percentile(0.50),
            r.percentile(0.99)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = match &args.data_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let value_len = record_size()?;
    let mut rows = Vec::new();
    // A fresh group (and a fresh etcd cluster) per level: each level starts
    // from empty state, so no level pays for the records of the one before.
    for (level, &c) in args.clients.iter().enumerate() {
        let ops = args.min_ops.max(c * args.ops_per_client);
        let root = dir.path().join(format!("cairn-{level}"));
        let (_members, _addrs, client) = start_meta_group(&root, 3, "").await?;
        let client = Arc::new(client.with_deadline(Duration::from_secs(30)));
        let row = cairn_level(&client, c, ops).await?;
        eprintln!("cairn, {c} clients: {} writes in {:?}", row.ops, row.elapsed);
        rows.push(row);
        // The member processes stop when `_members` drops here.
    }
    if let Some(bin) = &args.etcd {
        for (level, &c) in args.clients.iter().enumerate() {
            let ops = args.min_ops.max(c * args.ops_per_client);
            let etcd = start_etcd(bin, &dir.path().join(format!("etcd-{level}"))).await?;
            let row = etcd_level(&etcd, c, ops, value_len).await?;
            eprintln!("etcd, {c} clients: {} writes in {:?}", row.ops, row.elapsed);
            rows.push(row);
        }
    }
    print_table(&rows, value_len, dir.path().parent().unwrap_or(dir.path()));
    Ok(())
}
