//! The test harness of the workspace. Here: the in-process cluster (3
//! metadata nodes, 3 chunk nodes in two AZs and an Outpost, or
//! [`TestCluster::start_four`]'s four regional ones, and a gateway,
//! each on port-0 listeners in one temp dir) with helpers that talk to the
//! gateway as an AWS client would, the one way to wait on a predicate (never
//! on sleeps) and the one way to run a command (qemu-img, qemu-io). Single
//! chunk nodes are in [`node`], clusters of OS processes in [`procs`].

pub mod fuzz;
pub mod gc;
pub mod http;
pub mod nbd;
pub mod node;
pub mod nodes;
pub mod procs;
pub mod records;
pub mod scrub;
pub mod shape;
pub mod snapshots;
pub mod workload;

use anyhow::{bail, Context};
use cairn_chunk_node::{ChunkNode, ChunkNodeConfig};
use cairn_core::command::{Query, QueryOutput};
use cairn_core::OutpostId;
use cairn_gateway::{Gateway, GatewayConfig};
use cairn_metadata_node::{MetadataConfig, MetadataNode};
use cairn_proto::MetadataClient;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const REGION: &str = "cairn-1";
pub const ACCOUNT: &str = "123456789012";

/// Installs one tracing subscriber for the test binary (idempotent).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `pred` every 20 ms until it holds; fails after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut pred: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !pred().await {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A listener on a free loopback port.
async fn bind() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    /// `None` for a member a test stopped.
    pub meta: Vec<Option<MetadataNode>>,
    pub meta_addrs: Vec<String>,
    pub chunks: Vec<ChunkNode>,
    pub gateway: Option<Gateway>,
    pub outpost: OutpostId,
    pub client: MetadataClient,
}

/// The regional chunk nodes of [`TestCluster::start`]: one per AZ.
const TWO_REGIONAL: &[(&str, &str)] = &[("chunk-1a", "cairn-1a"), ("chunk-1b", "cairn-1b")];
/// Those of [`TestCluster::start_four`]: two per AZ.
pub const FOUR_REGIONAL: &[(&str, &str)] = &[
    ("chunk-1a", "cairn-1a"),
    ("chunk-1a2", "cairn-1a"),
    ("chunk-1b", "cairn-1b"),
    ("chunk-1b2", "cairn-1b"),
];

impl TestCluster {
    pub async fn start() -> anyhow::Result<TestCluster> {
        Self::start_with(TWO_REGIONAL, "").await
    }

    /// Four regional nodes (two per AZ) and the Outpost node; the gateway
    /// declares a node down after 2 s unanswered and re-replicates only
    /// when asked (or when a node leaves).
    pub async fn start_four() -> anyhow::Result<TestCluster> {
        Self::start_with(FOUR_REGIONAL, "node_down_secs = 2\nrepair_interval_secs = 0\n").await
    }

    /// The regional nodes `regional` (name, AZ) and one Outpost node, with
    /// `gateway_extra` appended to the gateway's TOML configuration.
    pub async fn start_with(
        regional: &[(&str, &str)],
        gateway_extra: &str,
    ) -> anyhow::Result<TestCluster> {
        init_logging();
        let dir = tempfile::tempdir()?;
        let mut meta = Vec::new();
        for id in 1..=3u64 {
            let config = MetadataConfig::for_test(id, dir.path().join(format!("meta-{id}")));
            meta.push(Some(MetadataNode::start(config, bind().await?).await?));
        }
        let meta_addrs: Vec<String> =
            meta.iter().flatten().map(|m| format!("http://{}", m.addr())).collect();
        let members =
            meta_addrs.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.clone())).collect();
        meta[0].as_ref().context("member 1")?.initialize(members).await?;
        let client = MetadataClient::new(meta_addrs.clone());
        wait_for("a leader", Duration::from_secs(30), || async {
            client.read(&Query::Nodes).await.is_ok()
        })
        .await?;

        let outpost = OutpostId::generate();
        let metadata_list = toml_list(&meta_addrs);
        let mut specs: Vec<(&str, &str, Option<String>)> =
            regional.iter().map(|(n, az)| (*n, *az, None)).collect();
        specs.push(("chunk-op", "cairn-1a", Some(outpost.to_string())));
        let want = specs.len();
        let mut chunks = Vec::new();
        for (name, az, op) in specs {
            let data = dir.path().join(name);
            let mut text = format!(
                "node_id = {name:?}\naz = {az:?}\ndata_dir = {:?}\nmetadata = {metadata_list}\n",
                data.display().to_string()
            );
            if let Some(op) = op {
                text.push_str(&format!("outpost = {op:?}\n"));
            }
            let config: ChunkNodeConfig = toml::from_str(&text)?;
            chunks.push(ChunkNode::start(config, bind().await?, bind().await?).await?);
        }
        wait_for("every chunk node registers", Duration::from_secs(30), || async {
            matches!(client.read(&Query::Nodes).await, Ok(QueryOutput::Nodes(n)) if n.len() == want)
        })
        .await?;

        let config: GatewayConfig = toml::from_str(&format!(
            "region = {REGION:?}\naccount_id = {ACCOUNT:?}\navailability_zones = [\"cairn-1a\", \"cairn-1b\"]\nmetadata = {metadata_list}\nreplication_factor = 3\n{gateway_extra}"
        ))?;
        let gateway = Gateway::start(config, bind().await?, bind().await?).await?;
        Ok(TestCluster { dir, meta, meta_addrs, chunks, gateway: Some(gateway), outpost, client })
    }

    /// Takes chunk node `node_id` out of the cluster (to stop or kill it).
    pub fn take_chunk_node(&mut self, node_id: &str) -> Option<ChunkNode> {
        let at = self.chunks.iter().position(|c| c.info().node_id == node_id)?;
        Some(self.chunks.remove(at))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.gateway.as_ref().map(|g| g.http_addr()).unwrap_or_else(|| ([127, 0, 0, 1], 0).into())
    }

    pub fn nbd_uri(&self, volume: &str) -> String {
        let nbd = self
            .gateway
            .as_ref()
            .map(|g| g.nbd_addr())
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        format!("nbd://{nbd}/{volume}")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// An EC2 Query call, as botocore would send it: `(HTTP status, body)`.
    pub async fn ec2(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", "2016-11-15")];
        form.extend_from_slice(params);
        http::post_form(self.http_addr(), &form, REGION).await
    }

    /// CreateVolume through the EC2 API, then waits until it is `available`.
    pub async fn create_volume(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let (status, body) = self.ec2("CreateVolume", params).await?;
        anyhow::ensure!(status == 200, "CreateVolume: {status} {body}");
        let id =
            xml_text(&body, "volumeId").ok_or_else(|| anyhow::anyhow!("no volumeId: {body}"))?;
        wait_for("the volume is available", Duration::from_secs(120), || async {
            matches!(self.ec2("DescribeVolumes", &[("VolumeId.1", &id)]).await,
                Ok((200, b)) if xml_text(&b, "status").as_deref() == Some("available"))
        })
        .await?;
        Ok(id)
    }

    /// Index of the current metadata leader among `self.meta`.
    pub async fn leader(&self) -> Option<usize> {
        for (i, addr) in self.meta_addrs.iter().enumerate() {
            if self.meta[i].is_none() {
                continue;
            }
            if let Ok(s) = self.client.status(addr).await {
                if s.leader_id == s.node_id && s.leader_id != 0 {
                    return Some(i);
                }
            }
        }
        None
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        for c in self.chunks.drain(..) {
            c.shutdown().await;
        }
        for m in self.meta.drain(..).flatten() {
            m.shutdown().await;
        }
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// 512 KiB of pseudo-random bytes determined by `seed`: distinct seeds give
/// distinct blocks (what tests write and expect back).
pub fn pattern(seed: u64) -> Vec<u8> {
    let size = cairn_core::BLOCK_SIZE;
    let mut out = Vec::with_capacity(size);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend(x.to_le_bytes());
    }
    out
}

impl TestCluster {
    /// The `status` a Describe call reports for one resource (e.g.
    /// `("DescribeSnapshots", "SnapshotId.1", id)`), or `None`.
    pub async fn status_of(&self, action: &str, key: &str, id: &str) -> Option<String> {
        match self.ec2(action, &[(key, id)]).await {
            Ok((200, b)) => xml_text(&b, "status"),
            _ => None,
        }
    }
}

/// The text of the first `<tag>` element in `xml`, if any.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// Runs a command to completion; its exit code and combined output.
pub async fn run(cmd: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {cmd}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Runs a command that must succeed; its combined output.
pub async fn ok(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let (code, text) = run(cmd, args).await?;
    anyhow::ensure!(code == 0, "{cmd} {args:?} exited {code}: {text}");
    Ok(text)
}
