//! A cluster of real OS processes (the `cairn` binary's `metadata-node`,
//! `chunk-node` and `gateway` subcommands) on loopback, for tests that must
//! SIGKILL, SIGSTOP or restart a process. Every listener starts on port 0; a
//! restarted process binds the same ports again. Dropping the cluster kills
//! every process it started.

use anyhow::{bail, Context};
use cairn_core::command::{Query, QueryOutput};
use cairn_core::OutpostId;
use cairn_proto::pb::metadata_client::MetadataClient as PbMetaClient;
use cairn_proto::pb::{InitRequest, MemberInfo};
use cairn_proto::MetadataClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{wait_for, ACCOUNT, REGION};

/// The `cairn` binary: `$CAIRN_BIN`, or next to the test executable's directory
/// (`target/<profile>/deps/..` holds the binaries of the workspace).
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    profile_dir.join("cairn")
}

/// One process and how to start it again.
pub struct Proc {
    pub name: String,
    kind: &'static str,
    dir: PathBuf,
    listen: String,
    nbd_listen: Option<String>,
    child: Option<Child>,
    /// Addresses it bound: main (gRPC or HTTP) and NBD.
    pub main: SocketAddr,
    pub nbd: Option<SocketAddr>,
}

impl Proc {
    fn spawn(
        kind: &'static str,
        name: &str,
        dir: &Path,
        config: &str,
        listen: &str,
        nbd_listen: Option<&str>,
    ) -> anyhow::Result<Proc> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("config.toml"), config)?;
        let mut p = Proc {
            name: name.to_string(),
            kind,
            dir: dir.to_path_buf(),
            listen: listen.to_string(),
            nbd_listen: nbd_listen.map(str::to_string),
            child: None,
            main: ([127, 0, 0, 1], 0).into(),
            nbd: None,
        };
        p.launch()?;
        Ok(p)
    }

    fn addr_file(&self) -> PathBuf {
        self.dir.join("addr.toml")
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.addr_file());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("log"))?;
        let mut cmd = Command::new(cairn_bin());
        cmd.arg(self.kind)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .arg("--listen")
            .arg(&self.listen)
            .arg("--addr-file")
            .arg(self.addr_file())
            .env("CAIRN_LOG", std::env::var("CAIRN_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(n) = &self.nbd_listen {
            cmd.arg("--nbd-listen").arg(n);
        }
        self.child = Some(
            cmd.spawn().with_context(|| format!("spawning {} ({:?})", self.name, cairn_bin()))?,
        );
        Ok(())
    }

    /// Waits until the process wrote its address file; pins its ports for restarts.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.addr_file()) {
                let v: toml::Value = toml::from_str(&text)?;
                self.main = v.get("main").and_then(|m| m.as_str()).context("main")?.parse()?;
                self.nbd = v.get("nbd").and_then(|m| m.as_str()).map(|s| s.parse()).transpose()?;
                self.listen = self.main.to_string();
                if let Some(n) = self.nbd {
                    self.nbd_listen = Some(n.to_string());
                }
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{} did not start:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process logged, over all its restarts.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, but answers nothing.
    pub fn pause(&self) {
        if let Some(p) = self.pid() {
            let _ = kill(p, Signal::SIGSTOP);
        }
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        if let Some(p) = self.pid() {
            let _ = kill(p, Signal::SIGCONT);
        }
    }

    /// Starts the process again on the same data and ports, and waits until it serves.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.launch()?;
        self.wait_ready().await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

/// What a [`ProcCluster`] runs.
pub struct ProcOptions {
    /// (node id, az, on the outpost?) per chunk node.
    pub chunk_nodes: Vec<(String, String, bool)>,
    pub gateways: usize,
    pub replication_factor: u32,
    /// Extra lines for every gateway's config (e.g. job timeouts).
    pub gateway_extra: String,
    /// Extra lines for every metadata node's config.
    pub metadata_extra: String,
}

impl Default for ProcOptions {
    fn default() -> Self {
        let n = |id: &str, az: &str, op: bool| (id.to_string(), az.to_string(), op);
        ProcOptions {
            chunk_nodes: vec![
                n("chunk-1a", "cairn-1a", false),
                n("chunk-1b", "cairn-1b", false),
                n("chunk-op", "cairn-1a", true),
            ],
            gateways: 1,
            replication_factor: 3,
            gateway_extra: String::new(),
            metadata_extra: String::new(),
        }
    }
}

/// Starts a fresh metadata member `id` in `<root>/meta-<id>` (not initialized).
pub fn spawn_meta(root: &Path, id: u64, extra: &str) -> anyhow::Result<Proc> {
    let d = root.join(format!("meta-{id}"));
    let config = format!(
        "node_id = {id}\ndata_dir = {:?}\nheartbeat_ms = 50\nelection_min_ms = 300\nelection_max_ms = 600\n{extra}",
        d.join("raft").display().to_string(),
    );
    Proc::spawn("metadata-node", &format!("meta-{id}"), &d, &config, "127.0.0.1:0", None)
}

/// Starts `n` metadata members (ids 1..=n) under `root`, initializes them as
/// one group and waits until it has a leader. Returns the members, their
/// addresses and a client.
pub async fn start_meta_group(
    root: &Path,
    n: u64,
    extra: &str,
) -> anyhow::Result<(Vec<Proc>, Vec<String>, MetadataClient)> {
    let mut meta = Vec::new();
    for id in 1..=n {
        meta.push(spawn_meta(root, id, extra)?);
    }
    for m in meta.iter_mut() {
        m.wait_ready().await?;
    }
    let meta_addrs: Vec<String> = meta.iter().map(|m| format!("http://{}", m.main)).collect();
    let mut c = PbMetaClient::connect(meta_addrs[0].clone()).await?;
    let members = meta_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| MemberInfo { node_id: i as u64 + 1, addr: a.clone(), voter: true })
        .collect();
    c.initialize(InitRequest { members }).await?;
    let client = MetadataClient::new(meta_addrs.clone()).with_deadline(Duration::from_secs(5));
    wait_for("a metadata leader", Duration::from_secs(30), || async {
        client.read(&Query::Nodes).await.is_ok()
    })
    .await?;
    Ok((meta, meta_addrs, client))
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub meta: Vec<Proc>,
    pub chunks: Vec<Proc>,
    pub gateways: Vec<Proc>,
    pub meta_addrs: Vec<String>,
    pub outpost: OutpostId,
    pub client: MetadataClient,
    /// The extra config lines of every metadata member, for members added later.
    pub metadata_extra: String,
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl ProcCluster {
    pub async fn start(opts: ProcOptions) -> anyhow::Result<ProcCluster> {
        crate::init_logging();
        let dir = tempfile::tempdir()?;
        let (meta, meta_addrs, client) =
            start_meta_group(dir.path(), 3, &opts.metadata_extra).await?;

        let outpost = OutpostId::generate();
        let list = toml_list(&meta_addrs);
        let mut chunks = Vec::new();
        for (id, az, on_outpost) in &opts.chunk_nodes {
            let d = dir.path().join(id);
            let mut config = format!(
                "node_id = {id:?}\naz = {az:?}\ndata_dir = {:?}\nmetadata = {list}\n",
                d.join("data").display().to_string()
            );
            if *on_outpost {
                config.push_str(&format!("outpost = {:?}\n", outpost.to_string()));
            }
            chunks.push(Proc::spawn(
                "chunk-node",
                id,
                &d,
                &config,
                "127.0.0.1:0",
                Some("127.0.0.1:0"),
            )?);
        }
        for p in chunks.iter_mut() {
            p.wait_ready().await?;
        }
        let want = chunks.len();
        wait_for("chunk nodes register", Duration::from_secs(30), || async {
            matches!(client.read(&Query::Nodes).await, Ok(QueryOutput::Nodes(n)) if n.len() == want)
        })
        .await?;

        let mut gateways = Vec::new();
        for g in 0..opts.gateways {
            let d = dir.path().join(format!("gateway-{g}"));
            let config = format!(
                "region = {REGION:?}\naccount_id = {ACCOUNT:?}\navailability_zones = [\"cairn-1a\", \"cairn-1b\"]\nmetadata = {list}\nreplication_factor = {}\n{}",
                opts.replication_factor, opts.gateway_extra
            );
            gateways.push(Proc::spawn(
                "gateway",
                &format!("gateway-{g}"),
                &d,
                &config,
                "127.0.0.1:0",
                Some("127.0.0.1:0"),
            )?);
        }
        for p in gateways.iter_mut() {
            p.wait_ready().await?;
        }
        let cluster = ProcCluster {
            dir,
            meta,
            chunks,
            gateways,
            meta_addrs,
            outpost,
            client,
            metadata_extra: opts.metadata_extra,
        };
        for g in 0..cluster.gateways.len() {
            let addr = cluster.gateways[g].main;
            wait_for("the gateway answers", Duration::from_secs(30), || async {
                matches!(crate::http::get(addr, "/_cairn/health").await, Ok((200, _)))
            })
            .await?;
        }
        Ok(cluster)
    }

    /// An EC2 Query call through gateway `g`.
    pub async fn ec2(
        &self,
        g: usize,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String)> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", "2016-11-15")];
        form.extend_from_slice(params);
        crate::http::post_form(self.gateways[g].main, &form, REGION).await
    }

    pub fn nbd_uri(&self, g: usize, volume: &str) -> String {
        format!("nbd://{}/{volume}", self.gateways[g].nbd.unwrap_or(self.gateways[g].main))
    }

    /// Starts a fresh metadata member `id` (not yet in the group: add it with
    /// `MetadataClient::add_member`), appends it to `meta` and `meta_addrs`,
    /// and returns its index there.
    pub async fn spawn_meta(&mut self, id: u64) -> anyhow::Result<usize> {
        let mut p = spawn_meta(self.dir.path(), id, &self.metadata_extra)?;
        p.wait_ready().await?;
        self.meta_addrs.push(format!("http://{}", p.main));
        self.meta.push(p);
        Ok(self.meta.len() - 1)
    }

    /// Index into `meta` of the member that says it leads.
    pub async fn leader(&self) -> Option<usize> {
        for (i, addr) in self.meta_addrs.iter().enumerate() {
            if let Ok(s) = self.client.status(addr).await {
                if s.leader_id == s.node_id && s.leader_id != 0 {
                    return Some(i);
                }
            }
        }
        None
    }
}
