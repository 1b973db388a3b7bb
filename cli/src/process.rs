//! One Cairn process: reads its TOML config, binds its listeners, serves, and
//! writes the bound addresses to a file (so a launcher using port 0 learns
//! them). SIGINT or SIGTERM shuts it down cleanly.

use crate::node_http;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(clap::Args, Debug)]
pub struct ProcessArgs {
    /// The process's TOML configuration. Given several times, the files are
    /// merged in order: a later one adds keys and tables and replaces values
    /// (deploy/ adds a capacity tier to each chunk node's file this way).
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// Address of the main listener (gRPC, or HTTP for a gateway).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address of the NBD listener (chunk node and gateway).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub nbd_listen: String,
    /// Address of the HTTP listener with /metrics, /healthz and /readyz
    /// (metadata and chunk nodes; a gateway serves them on its main one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_listen: String,
    /// Where to write the bound addresses (TOML) once serving.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
}

/// The addresses a process bound, as written to its address file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoundAddrs {
    pub main: String,
    pub nbd: Option<String>,
    pub pid: u32,
    /// The metrics and health listener (metadata and chunk nodes).
    #[serde(default)]
    pub http: Option<String>,
}

fn read_config<T: for<'de> Deserialize<'de>>(paths: &[PathBuf]) -> anyhow::Result<T> {
    let mut merged = toml::Table::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = expand_env(&text, |name| std::env::var(name).ok())
            .with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        merge(&mut merged, table);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    T::deserialize(toml::Value::Table(merged))
        .with_context(|| format!("parsing {}", shown.join(" + ")))
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with the environment's values,
/// as a shell or docker compose would: one env file then names a whole
/// compose cluster (region, zones, account) for every process's config.
fn expand_env(text: &str, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let end = inner.find('}').context("a `${` in the config is not closed by `}`")?;
        let (name, default) = match inner[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&inner[..end], None),
        };
        match (var(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => anyhow::bail!("the config uses ${{{name}}}, which is not set"),
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes `content` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn announce(
    args: &ProcessArgs,
    main: std::net::SocketAddr,
    nbd: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    if let Some(file) = &args.addr_file {
        let a = BoundAddrs {
            main: main.to_string(),
            nbd: nbd.map(|a| a.to_string()),
            pid: std::process::id(),
            http: http.map(|a| a.to_string()),
        };
        write_atomic(file, toml::to_string(&a)?.as_bytes())?;
    }
    Ok(())
}

/// Reads an address file written by [`announce`].
pub fn read_addrs(path: &Path) -> Option<BoundAddrs> {
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without signal handlers the process can only be killed; wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

pub async fn metadata_node(args: ProcessArgs) -> anyhow::Result<()> {
    let config: cairn_metadata_node::MetadataConfig = read_config(&args.config)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let http = bind(&args.http_listen).await?;
    let node = cairn_metadata_node::MetadataNode::start(config, listener).await?;
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http_addr = http.local_addr()?;
    let http_task = node_http::serve(http, Arc::new(node.observer()), http_stopped);
    announce(&args, node.addr(), None, Some(http_addr))?;
    tracing::info!(addr = %node.addr(), http = %http_addr, "metadata node serving");
    stop_signal().await;
    let _ = stop_http.send(true);
    let _ = http_task.await;
    node.shutdown().await;
    Ok(())
}

pub async fn chunk_node(args: ProcessArgs) -> anyhow::Result<()> {
    let config: cairn_chunk_node::ChunkNodeConfig = read_config(&args.config)?;
    let grpc = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let nbd = TcpListener::bind(&args.nbd_listen)
        .await
        .with_context(|| format!("binding {}", args.nbd_listen))?;
    let http = bind(&args.http_listen).await?;
    let node = cairn_chunk_node::ChunkNode::start(config, grpc, nbd).await?;
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http_addr = http.local_addr()?;
    let http_task = node_http::serve(http, Arc::new(node.observer()), http_stopped);
    announce(&args, node.grpc_addr(), Some(node.nbd_addr()), Some(http_addr))?;
    tracing::info!(grpc = %node.grpc_addr(), nbd = %node.nbd_addr(), http = %http_addr, "chunk node serving");
    stop_signal().await;
    let _ = stop_http.send(true);
    let _ = http_task.await;
    node.shutdown().await;
    Ok(())
}

pub async fn gateway(args: ProcessArgs) -> anyhow::Result<()> {
    let config: cairn_gateway::GatewayConfig = read_config(&args.config)?;
    let http = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let nbd = TcpListener::bind(&args.nbd_listen)
        .await
        .with_context(|| format!("binding {}", args.nbd_listen))?;
    let gw = cairn_gateway::Gateway::start(config, http, nbd).await?;
    announce(&args, gw.http_addr(), Some(gw.nbd_addr()), None)?;
    tracing::info!(http = %gw.http_addr(), nbd = %gw.nbd_addr(), "gateway serving");
    stop_signal().await;
    gw.shutdown().await;
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// Where a process writes the addresses it bound, once it serves requests.
pub(crate) fn addr_file(dir: &Path) -> PathBuf {
    dir.join("addr.toml")
}

#[cfg(test)]
mod tests {
    use super::{expand_env, merge};

    #[test]
    fn later_config_files_add_tables_and_replace_values() {
        let mut base: toml::Table =
            toml::from_str("node_id = \"n1\"\npack_bytes = 1\n[t]\na = 1\n").unwrap();
        let over: toml::Table =
            toml::from_str("pack_bytes = 2\n[t]\nb = 2\n[capacity_tier]\ndir = \"/x\"\n").unwrap();
        merge(&mut base, over);
        let want: toml::Table = toml::from_str(
            "node_id = \"n1\"\npack_bytes = 2\n[t]\na = 1\nb = 2\n[capacity_tier]\ndir = \"/x\"\n",
        )
        .unwrap();
        assert_eq!(base, want);
    }

    #[test]
    fn configs_take_names_from_the_environment() {
        let var = |n: &str| (n == "CAIRN_REGION").then(|| "us-east-1".to_string());
        let t = "region = \"${CAIRN_REGION:-cairn-1}\"\naz = \"${CAIRN_ZONE_1:-cairn-1a}\"\n";
        assert_eq!(expand_env(t, var).unwrap(), "region = \"us-east-1\"\naz = \"cairn-1a\"\n");
        assert_eq!(expand_env("x = 1", var).unwrap(), "x = 1");
        assert!(expand_env("a = \"${NOPE}\"", var).is_err());
        assert!(expand_env("a = \"${CAIRN_REGION\"", var).is_err());
    }
}
