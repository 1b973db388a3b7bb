//! `cairn up`: a whole local cluster as separate OS processes.
//!
//! Layout under the data directory:
//! - `cluster.toml`: what must stay the same across runs (outpost id, the
//!   metadata members' ports, whether the group was initialized).
//! - `meta-N/`, `chunk-*/`, `gateway/`: one directory per process, with its
//!   `config.toml`, `addr.toml` (written by the process once it serves) and `log`.
//! - `env`: a shell file to `source`, written only once the cluster answers.
//! - `tls/`: the cluster CA (`ca.pem`, `ca.key`) and one directory of TLS
//!   files per process (`tls/meta-1`, ..., `tls/gateway`, `tls/admin` for
//!   `cairn admin`): every call between the processes is mutual TLS.

pub(crate) mod credentials;
mod members;
mod names;
mod preflight;
mod tiers;

use crate::process::{write_atomic, BoundAddrs};
use anyhow::Context;
use cairn_core::accounts::ClusterKey;
use cairn_core::command::{Query, QueryOutput};
use cairn_core::OutpostId;
use cairn_proto::pb::metadata_client::MetadataClient as PbMetaClient;
use cairn_proto::pb::{InitRequest, MemberInfo};
use cairn_proto::tls::{self, ClusterTls};
use cairn_proto::MetadataClient;
use credentials::Credentials;
use members::{stop_all, supervise, wait_until, Member};
use names::{AskedNames, ClusterFile, Names};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The region's name, as AWS clients sign for it (e.g. us-east-1). Chosen
    /// when the cluster is created; default cairn-1.
    #[arg(long)]
    pub region: Option<String>,
    /// The region's availability zones, comma-separated (default: the region
    /// name plus a and b).
    #[arg(long, value_delimiter = ',')]
    pub zones: Option<Vec<String>>,
    /// The 12-digit id of the account that owns the cluster's resources
    /// (default 123456789012).
    #[arg(long)]
    pub account_id: Option<String>,
    /// Development mode: accept any access key and any signature (only with
    /// --host on loopback). By default every request's signature is checked
    /// against the key pair written to the env file.
    #[arg(long)]
    pub open: bool,
    /// The NBD door opens volumes only for clients that start TLS (qemu:
    /// `--object tls-creds-x509,dir=$CAIRN_NBD_TLS_DIR,endpoint=client`).
    /// Without it TLS is offered and clear text accepted.
    #[arg(long)]
    pub nbd_tls_required: bool,
    /// MiB of block data and encoding buffers each chunk node's snapshot
    /// copies may hold together (`copy_memory_bytes`; the smallest cut is 18).
    #[arg(long, default_value_t = 480, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub copy_memory_mib: u64,
    #[command(flatten)]
    pub tiers: tiers::TierArgs,
}

impl UpArgs {
    fn asked_names(&self) -> AskedNames {
        AskedNames {
            region: self.region.clone(),
            zones: self.zones.clone(),
            account_id: self.account_id.clone(),
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let cluster_path = data_dir.join("cluster.toml");
    if !cluster_path.exists() {
        preflight::check_new_dir(&data_dir)?;
    }
    let _lock = preflight::lock_data_dir(&data_dir)?;
    let cluster_key = if args.open {
        credentials::check_open(&args.host)?;
        None
    } else {
        Some(credentials::cluster_key(&data_dir)?)
    };
    let env_path = data_dir.join("env");
    let _ = std::fs::remove_file(&env_path);
    let asked = args.asked_names();
    let mut cluster = ClusterFile::load_or_new(&cluster_path, &asked)?;
    let names = cluster.names();
    asked.check_against(&names, &data_dir)?;
    let mut ports = vec![
        preflight::Port {
            port: args.http_port,
            what: "the gateway's HTTP port",
            flag: Some("--http-port"),
        },
        preflight::Port {
            port: args.nbd_port,
            what: "the gateway's NBD port",
            flag: Some("--nbd-port"),
        },
    ];
    for &port in &cluster.metadata_ports {
        ports.push(preflight::Port { port, what: "a metadata member's port", flag: None });
    }
    preflight::check_ports(&args.host, &ports)?;
    let outpost = OutpostId::parse(&cluster.outpost_id).context("cluster.toml: bad outpost_id")?;
    let ca = crate::tls::Ca::ensure(&data_dir.join("tls")).context("the cluster CA")?;
    let admin_tls = ClusterTls::load(&ca.member(crate::tls::ADMIN)?)?;
    let mut members: Vec<Member> = Vec::new();
    let cx = Start {
        ca: &ca,
        admin_tls: &admin_tls,
        args: &args,
        data_dir: &data_dir,
        names: &names,
        outpost: &outpost,
        cluster_key: cluster_key.as_ref(),
    };
    let result = start_all(&cx, &cluster_path, &mut cluster, &mut members).await;
    match result {
        Ok(()) => {
            supervise(&mut members).await;
            let _ = std::fs::remove_file(&env_path);
            stop_all(&mut members).await;
            eprintln!("cairn: stopped");
            Ok(())
        }
        Err(e) => {
            stop_all(&mut members).await;
            Err(e)
        }
    }
}

/// What every step of starting the cluster reads.
struct Start<'a> {
    args: &'a UpArgs,
    data_dir: &'a Path,
    names: &'a Names,
    outpost: &'a OutpostId,
    /// `None` under `--open`.
    cluster_key: Option<&'a ClusterKey>,
    /// The cluster CA, which issues each process its certificate.
    ca: &'a crate::tls::Ca,
    /// What `cairn up` itself presents to the metadata group.
    admin_tls: &'a ClusterTls,
}

impl Start<'_> {
    /// The `tls_dir = ...` line of process `name`'s configuration.
    fn tls_line(&self, name: &str) -> anyhow::Result<String> {
        let dir = self.ca.member(name)?;
        Ok(format!("tls_dir = {:?}\n", dir.display().to_string()))
    }
}

async fn start_all(
    cx: &Start<'_>,
    cluster_path: &Path,
    cluster: &mut ClusterFile,
    members: &mut Vec<Member>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let (meta_addrs, meta) = start_metadata(cx, &exe, cluster_path, cluster, members).await?;
    let creds = match cx.cluster_key {
        Some(key) => credentials::first_key(&meta, cx.data_dir, &cx.names.account_id, key).await?,
        None => Credentials::open(),
    };
    let metadata_list = toml_list(&meta_addrs);
    start_chunk_nodes(cx, &exe, &metadata_list, &meta, members).await?;
    let gw_addrs = start_gateway(cx, &exe, &metadata_list, members).await?;
    write_env(cx, &gw_addrs, &creds)
}

/// Starts the three metadata members (on the ports they had before, if any)
/// and initializes the group on the first start; returns their URLs and a
/// client once a leader is elected.
async fn start_metadata(
    cx: &Start<'_>,
    exe: &Path,
    cluster_path: &Path,
    cluster: &mut ClusterFile,
    members: &mut Vec<Member>,
) -> anyhow::Result<(Vec<String>, MetadataClient)> {
    let host = &cx.args.host;
    for id in 1..=3u64 {
        let dir = cx.data_dir.join(format!("meta-{id}"));
        std::fs::create_dir_all(&dir)?;
        let name = format!("meta-{id}");
        let config = format!(
            "node_id = {id}\ndata_dir = {:?}\n{}",
            dir.join("raft").display().to_string(),
            cx.tls_line(&name)?
        );
        let port = cluster.metadata_ports.get(id as usize - 1).copied().unwrap_or(0);
        let listen = format!("{host}:{port}");
        members.push(Member::start(exe, "metadata-node", &name, &dir, &config, &listen, None)?);
    }
    let mut meta_addrs = Vec::new();
    for m in members.iter_mut() {
        let a = m.wait_addrs().await?;
        meta_addrs.push(format!("http://{}", a.main));
    }
    cluster.metadata_ports = meta_addrs
        .iter()
        .map(|a| a.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0))
        .collect();
    write_atomic(cluster_path, toml::to_string(&cluster)?.as_bytes())?;

    if !cluster.initialized {
        let channel = tls::endpoint(&meta_addrs[0], Some(cx.admin_tls))?.connect().await?;
        let mut c = PbMetaClient::new(channel);
        let members = meta_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| MemberInfo { node_id: i as u64 + 1, addr: a.clone(), voter: true })
            .collect();
        c.initialize(InitRequest { members }).await.context("initializing the metadata group")?;
        cluster.initialized = true;
        write_atomic(cluster_path, toml::to_string(&cluster)?.as_bytes())?;
    }
    let meta = MetadataClient::new(meta_addrs.clone())
        .with_deadline(Duration::from_secs(5))
        .with_tls(Some(cx.admin_tls.clone()));
    wait_until("the metadata group elects a leader", members, || async {
        matches!(meta.read(&Query::Nodes).await, Ok(QueryOutput::Nodes(_)))
    })
    .await?;
    eprintln!("cairn: metadata group up ({} members)", meta_addrs.len());

    Ok((meta_addrs, meta))
}

/// Chunk nodes as [`names::chunk_layout`] places them over the zones.
/// Returns once every one is registered.
async fn start_chunk_nodes(
    cx: &Start<'_>,
    exe: &Path,
    metadata_list: &str,
    meta: &MetadataClient,
    members: &mut Vec<Member>,
) -> anyhow::Result<()> {
    let host = &cx.args.host;
    let first_chunk = members.len();
    for (name, az, on_outpost) in names::chunk_layout(&cx.names.zones) {
        let dir = cx.data_dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let mut config = format!(
            "node_id = {name:?}\naz = {az:?}\ndata_dir = {:?}\nmetadata = {metadata_list}\nadvertise_host = {host:?}\n",
            dir.join("data").display().to_string()
        );
        if on_outpost {
            config.push_str(&format!("outpost = {:?}\n", cx.outpost.to_string()));
        }
        config.push_str(&cx.tls_line(&name)?);
        config.push_str(&format!("copy_memory_bytes = {}\n", cx.args.copy_memory_mib << 20));
        // Last: its tables follow every top-level key.
        config.push_str(&cx.args.tiers.chunk_config());
        let listen = format!("{host}:0");
        members.push(Member::start(
            exe,
            "chunk-node",
            &name,
            &dir,
            &config,
            &listen,
            Some(&listen),
        )?);
    }
    let mut chunk_addrs = Vec::new();
    for m in members[first_chunk..].iter_mut() {
        chunk_addrs.push((m.name.clone(), m.wait_addrs().await?));
    }
    wait_until("every chunk node registers", members, || async {
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
    cx: &Start<'_>,
    exe: &Path,
    metadata_list: &str,
    members: &mut Vec<Member>,
) -> anyhow::Result<BoundAddrs> {
    let host = &cx.args.host;
    let dir = cx.data_dir.join("gateway");
    std::fs::create_dir_all(&dir)?;
    let mut config = format!(
        "region = {:?}\naccount_id = {:?}\navailability_zones = {}\nmetadata = {metadata_list}\nreplication_factor = {}\ngateway_id = \"gateway-1\"\ndev_any_key = {}\n",
        cx.names.region,
        cx.names.account_id,
        toml_list(&cx.names.zones),
        cx.args.replication_factor,
        cx.cluster_key.is_none(),
    );
    let door_names = vec![host.clone(), "localhost".to_string()];
    let gateway_tls = cx.ca.member_also_named("gateway", &door_names)?;
    config.push_str(&format!("tls_dir = {:?}\n", gateway_tls.display().to_string()));
    if cx.args.nbd_tls_required {
        config.push_str("nbd_tls_required = true\n");
    }
    if cx.cluster_key.is_some() {
        let file = cx.data_dir.join(crate::accounts::CLUSTER_KEY_FILE);
        config.push_str(&format!("cluster_key_file = {:?}\n", file.display().to_string()));
    }
    // Last: with S3 it is a table, after every top-level key.
    config.push_str(&cx.args.tiers.archive_config(cx.data_dir));
    let listen = format!("{host}:{}", cx.args.http_port);
    let nbd = format!("{host}:{}", cx.args.nbd_port);
    members.push(Member::start(exe, "gateway", "gateway", &dir, &config, &listen, Some(&nbd))?);
    let last = members.len() - 1;
    let gw_addrs = members[last].wait_addrs().await?;
    let http = gw_addrs.main.clone();
    wait_until("the gateway answers", members, || async {
        crate::http::request(&http, "GET", "/_cairn/health", Duration::from_secs(5))
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await?;

    Ok(gw_addrs)
}

/// Writes `data_dir/env` for AWS clients and NBD tools, and says how to use
/// the cluster.
fn write_env(cx: &Start<'_>, gw_addrs: &BoundAddrs, creds: &Credentials) -> anyhow::Result<()> {
    let Credentials { access_key_id, secret_access_key } = creds;
    let http = gw_addrs.main.clone();
    let nbd = gw_addrs.nbd.clone().unwrap_or_default();
    let Names { region, zones, account_id } = cx.names;
    let outpost = cx.outpost;
    let outpost_arn = outpost.arn(region, account_id);
    let nbd_tls_dir = cx.ca.qemu_client_dir()?.display().to_string();
    let env = format!(
        "# Written by `cairn up`; source it to point AWS clients and NBD tools at the cluster.\n\
         export AWS_ENDPOINT_URL=http://{http}\n\
         export AWS_REGION={region}\n\
         export AWS_DEFAULT_REGION={region}\n\
         export AWS_ACCESS_KEY_ID={access_key_id}\n\
         export AWS_SECRET_ACCESS_KEY={secret_access_key}\n\
         export CAIRN_ACCOUNT_ID={account_id}\n\
         export CAIRN_ZONES={}\n\
         export CAIRN_NBD={nbd}\n\
         export CAIRN_NBD_TLS_DIR={nbd_tls_dir}\n\
         export CAIRN_OUTPOST_ARN={outpost_arn}\n",
        zones.join(",")
    );
    write_atomic(&cx.data_dir.join("env"), env.as_bytes())?;
    println!(
        "Cairn is up (region {region}, zones {}, account {account_id}, outpost {outpost}).",
        zones.join(", ")
    );
    println!("  gateway (EC2 + EBS APIs): http://{http}");
    println!("  console:                  http://{http}/console");
    println!("  NBD:                      {nbd}   e.g. qemu-img info -f raw nbd://{nbd}/vol-...");
    println!("  credentials:              AWS_ACCESS_KEY_ID={access_key_id} AWS_SECRET_ACCESS_KEY={secret_access_key}");
    if cx.cluster_key.is_none() {
        println!("  --open: any access key and signature is accepted");
    }
    println!("  outpost ARN:              {outpost_arn}");
    println!("  source {}   # exports all of the above", cx.data_dir.join("env").display());
    println!("Ctrl-C stops the cluster.");
    Ok(())
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}
