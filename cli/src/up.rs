//! `cairn up`: a whole local cluster as separate OS processes.
//!
//! Layout under the data directory:
//! - `cluster.toml`: what must stay the same across runs (outpost id, the
//!   metadata members' ports, whether the group was initialized).
//! - `meta-N/`, `chunk-*/`, `gateway/`: one directory per process, with its
//!   `config.toml`, `addr.toml` (written by the process once it serves) and `log`.
//! - `env`: a shell file to `source`, written only once the cluster answers.

use crate::process::{addr_file, read_addrs, stop_signal, write_atomic, BoundAddrs};
use anyhow::{bail, Context};
use cairn_core::command::{Query, QueryOutput};
use cairn_core::OutpostId;
use cairn_proto::pb::metadata_client::MetadataClient as PbMetaClient;
use cairn_proto::pb::{InitRequest, MemberInfo};
use cairn_proto::MetadataClient;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where every process keeps its data.
    #[arg(long, default_value = "./cairn-data")]
    pub data_dir: PathBuf,
    /// Host every listener binds to and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Gateway HTTP port (EC2 and EBS APIs); 0 picks a free one.
    #[arg(long, default_value_t = 8773)]
    pub http_port: u16,
    /// Gateway NBD port; 0 picks a free one.
    #[arg(long, default_value_t = 10809)]
    pub nbd_port: u16,
    /// Replicas per chunk (capped by the number of nodes in the destination).
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
}

const REGION: &str = "cairn-1";
const ACCOUNT: &str = "123456789012";
const AZS: [&str; 2] = ["cairn-1a", "cairn-1b"];
const ACCESS_KEY: &str = "cairn";
const SECRET_KEY: &str = "cairn-dev-secret";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What stays fixed across runs of `cairn up` on one data directory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    version: u16,
    outpost_id: String,
    /// Metadata members' ports, by node id order (1, 2, 3). Raft membership
    /// stores addresses, so a restart must reuse them.
    metadata_ports: Vec<u16>,
    initialized: bool,
}

struct Proc {
    name: String,
    dir: PathBuf,
    child: Child,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let env_path = data_dir.join("env");
    let _ = std::fs::remove_file(&env_path);
    let cluster_path = data_dir.join("cluster.toml");
    let mut cluster = match std::fs::read_to_string(&cluster_path) {
        Ok(text) => toml::from_str::<ClusterFile>(&text)
            .with_context(|| format!("{} is corrupt", cluster_path.display()))?,
        Err(_) => ClusterFile {
            version: 1,
            outpost_id: OutpostId::generate().to_string(),
            metadata_ports: Vec::new(),
            initialized: false,
        },
    };
    let outpost = OutpostId::parse(&cluster.outpost_id).context("cluster.toml: bad outpost_id")?;
    let mut procs: Vec<Proc> = Vec::new();
    let result =
        start_all(&args, &data_dir, &cluster_path, &mut cluster, &outpost, &mut procs).await;
    match result {
        Ok(()) => {
            let ok = supervise(&mut procs).await;
            let _ = std::fs::remove_file(&env_path);
            stop_all(&mut procs).await;
            eprintln!("cairn: stopped");
            ok
        }
        Err(e) => {
            stop_all(&mut procs).await;
            Err(e)
        }
    }
}

async fn start_all(
    args: &UpArgs,
    data_dir: &Path,
    cluster_path: &Path,
    cluster: &mut ClusterFile,
    outpost: &OutpostId,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let (meta_addrs, meta) =
        start_metadata(&exe, &args.host, data_dir, cluster_path, cluster, procs).await?;
    let metadata_list = toml_list(&meta_addrs);
    start_chunk_nodes(&exe, &args.host, data_dir, &metadata_list, &meta, outpost, procs).await?;
    let gw_addrs = start_gateway(&exe, args, data_dir, &metadata_list, procs).await?;
    write_env(data_dir, &gw_addrs, outpost)
}

/// Starts the three metadata members (on the ports they had before, if any)
/// and initializes the group on the first start; returns their URLs and a
/// client once a leader is elected.
async fn start_metadata(
    exe: &Path,
    host: &str,
    data_dir: &Path,
    cluster_path: &Path,
    cluster: &mut ClusterFile,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<(Vec<String>, MetadataClient)> {
    let mut meta_addrs = Vec::new();
    for id in 1..=3u64 {
        let dir = data_dir.join(format!("meta-{id}"));
        std::fs::create_dir_all(&dir)?;
        let config =
            format!("node_id = {id}\ndata_dir = {:?}\n", dir.join("raft").display().to_string());
        let port = cluster.metadata_ports.get(id as usize - 1).copied().unwrap_or(0);
        let p = spawn(
            exe,
            "metadata-node",
            &format!("meta-{id}"),
            &dir,
            &config,
            &format!("{host}:{port}"),
            None,
        )?;
        procs.push(p);
    }
    for p in procs.iter_mut() {
        let a = wait_addrs(p).await?;
        meta_addrs.push(format!("http://{}", a.main));
    }
    cluster.metadata_ports = meta_addrs
        .iter()
        .map(|a| a.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0))
        .collect();
    write_atomic(cluster_path, toml::to_string(&cluster)?.as_bytes())?;

    if !cluster.initialized {
        let mut c = PbMetaClient::connect(meta_addrs[0].clone()).await?;
        let members = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| MemberInfo { node_id: i as u64 + 1, addr: a.clone(), voter: true })
            .collect();
        c.initialize(InitRequest { members }).await.context("initializing the metadata group")?;
        cluster.initialized = true;
        write_atomic(cluster_path, toml::to_string(&cluster)?.as_bytes())?;
    }
    let meta = MetadataClient::new(meta_addrs.clone()).with_deadline(Duration::from_secs(5));
    wait_until("the metadata group elects a leader", procs, || async {
        matches!(meta.read(&Query::Nodes).await, Ok(QueryOutput::Nodes(_)))
    })
    .await?;
    eprintln!("cairn: metadata group up ({} members)", meta_addrs.len());

    Ok((meta_addrs, meta))
}

/// Chunk nodes: enough for RF 3 in the region, spread over both AZs (two per
/// AZ), and two on the Outpost anchored to the first AZ. The first node of
/// each zone keeps the name earlier versions used, so their data directories
/// are found again. Returns once every one is registered.
async fn start_chunk_nodes(
    exe: &Path,
    host: &str,
    data_dir: &Path,
    metadata_list: &str,
    meta: &MetadataClient,
    outpost: &OutpostId,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    let chunk_specs: Vec<(String, &str, Option<&OutpostId>)> = vec![
        ("chunk-1a".to_string(), AZS[0], None),
        ("chunk-1a-2".to_string(), AZS[0], None),
        ("chunk-1b".to_string(), AZS[1], None),
        ("chunk-1b-2".to_string(), AZS[1], None),
        ("chunk-op".to_string(), AZS[0], Some(outpost)),
        ("chunk-op-2".to_string(), AZS[0], Some(outpost)),
    ];
    let first_chunk = procs.len();
    for (name, az, op) in &chunk_specs {
        let dir = data_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut config = format!(
            "node_id = {name:?}\naz = {az:?}\ndata_dir = {:?}\nmetadata = {metadata_list}\nadvertise_host = {host:?}\n",
            dir.join("data").display().to_string()
        );
        if let Some(op) = op {
            config.push_str(&format!("outpost = {:?}\n", op.to_string()));
        }
        procs.push(spawn(
            exe,
            "chunk-node",
            name,
            &dir,
            &config,
            &format!("{host}:0"),
            Some(&format!("{host}:0")),
        )?);
    }
    let mut chunk_addrs = Vec::new();
    for p in procs[first_chunk..].iter_mut() {
        chunk_addrs.push((p.name.clone(), wait_addrs(p).await?));
    }
    wait_until("every chunk node registers", procs, || async {
        match meta.read(&Query::Nodes).await {
            Ok(QueryOutput::Nodes(nodes)) => chunk_addrs.iter().all(|(name, a)| {
                nodes
                    .iter()
                    .any(|n| &n.node_id == name && n.grpc_addr == format!("http://{}", a.main))
            }),
            _ => false,
        }
    })
    .await?;
    eprintln!("cairn: {} chunk nodes up", chunk_addrs.len());

    Ok(())
}

/// The gateway, under a fixed name, so that after a restart it resumes its
/// own copy jobs at once instead of waiting for their leases to lapse.
/// Returns its addresses once it answers.
async fn start_gateway(
    exe: &Path,
    args: &UpArgs,
    data_dir: &Path,
    metadata_list: &str,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<BoundAddrs> {
    let host = &args.host;
    let dir = data_dir.join("gateway");
    std::fs::create_dir_all(&dir)?;
    let config = format!(
        "region = {REGION:?}\naccount_id = {ACCOUNT:?}\navailability_zones = {}\nmetadata = {metadata_list}\nreplication_factor = {}\ngateway_id = \"gateway-1\"\n",
        toml_list(&AZS.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        args.replication_factor
    );
    let gw = spawn(
        exe,
        "gateway",
        "gateway",
        &dir,
        &config,
        &format!("{host}:{}", args.http_port),
        Some(&format!("{host}:{}", args.nbd_port)),
    )?;
    procs.push(gw);
    let last = procs.len() - 1;
    let gw_addrs = wait_addrs(&mut procs[last]).await?;
    let http = gw_addrs.main.clone();
    wait_until("the gateway answers", procs, || async {
        crate::http::request(&http, "GET", "/_cairn/health", Duration::from_secs(5))
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await?;

    Ok(gw_addrs)
}

/// Writes `data_dir/env` for AWS clients and NBD tools, and says how to use
/// the cluster.
fn write_env(data_dir: &Path, gw_addrs: &BoundAddrs, outpost: &OutpostId) -> anyhow::Result<()> {
    let http = gw_addrs.main.clone();
    let nbd = gw_addrs.nbd.clone().unwrap_or_default();
    let outpost_arn = outpost.arn(REGION, ACCOUNT);
    let env = format!(
        "# Written by `cairn up`; source it to point AWS clients and NBD tools at the cluster.\n\
         export AWS_ENDPOINT_URL=http://{http}\n\
         export AWS_REGION={REGION}\n\
         export AWS_DEFAULT_REGION={REGION}\n\
         export AWS_ACCESS_KEY_ID={ACCESS_KEY}\n\
         export AWS_SECRET_ACCESS_KEY={SECRET_KEY}\n\
         export CAIRN_NBD={nbd}\n\
         export CAIRN_OUTPOST_ARN={outpost_arn}\n"
    );
    write_atomic(&data_dir.join("env"), env.as_bytes())?;
    println!("Cairn is up (region {REGION}, zones {}, {}, outpost {outpost}).", AZS[0], AZS[1]);
    println!("  gateway (EC2 + EBS APIs): http://{http}");
    println!("  NBD:                      {nbd}   e.g. qemu-img info -f raw nbd://{nbd}/vol-...");
    println!("  credentials:              AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY}");
    println!("  outpost ARN:              {outpost_arn}");
    println!("  source {}   # exports all of the above", data_dir.join("env").display());
    println!("Ctrl-C stops the cluster.");
    Ok(())
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn spawn(
    exe: &Path,
    kind: &str,
    name: &str,
    dir: &Path,
    config: &str,
    listen: &str,
    nbd_listen: Option<&str>,
) -> anyhow::Result<Proc> {
    let config_path = dir.join("config.toml");
    write_atomic(&config_path, config.as_bytes())?;
    let addr = addr_file(dir);
    let _ = std::fs::remove_file(&addr);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg(kind)
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(listen)
        .arg("--addr-file")
        .arg(&addr)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(n) = nbd_listen {
        cmd.arg("--nbd-listen").arg(n);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Proc { name: name.to_string(), dir: dir.to_path_buf(), child })
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn check_alive(procs: &mut [Proc]) -> anyhow::Result<()> {
    for p in procs.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited ({status}); its log ends with:\n{}", p.name, log_tail(&p.dir));
        }
    }
    Ok(())
}

async fn wait_addrs(p: &mut Proc) -> anyhow::Result<BoundAddrs> {
    let start = Instant::now();
    loop {
        if let Some(a) = read_addrs(&addr_file(&p.dir)) {
            return Ok(a);
        }
        check_alive(std::slice::from_mut(p))?;
        if start.elapsed() > READY_TIMEOUT {
            bail!("{} did not start within {READY_TIMEOUT:?}; log:\n{}", p.name, log_tail(&p.dir));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until<F, Fut>(what: &str, procs: &mut [Proc], mut pred: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if pred().await {
            return Ok(());
        }
        check_alive(procs)?;
        if start.elapsed() > READY_TIMEOUT {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for Ctrl-C (or SIGTERM), or for a process to die on its own.
async fn supervise(procs: &mut [Proc]) -> anyhow::Result<()> {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Err(e) = check_alive(procs) {
                    eprintln!("cairn: {e}\ncairn: stopping the cluster");
                    return Err(e);
                }
            }
        }
    }
}

/// Stops processes in reverse start order: gateway, chunk nodes, metadata.
async fn stop_all(procs: &mut Vec<Proc>) {
    while let Some(mut p) = procs.pop() {
        if let Some(pid) = p.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(Duration::from_secs(20), p.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("cairn: {} did not stop in 20s; killing it", p.name);
                let _ = p.child.kill().await;
            }
        }
    }
}
