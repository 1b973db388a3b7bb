//! `cairn admin gc` and `cairn admin snapshot-usage`: garbage collection on
//! demand, and what deleting a snapshot would free, through the gateway's
//! operator endpoints.

use crate::http::request;
use crate::process::{addr_file, read_addrs};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the gateway is: a `cairn up` data directory, or its address.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Data directory of a `cairn up` cluster (the gateway's address is read from it).
    #[arg(long, default_value = "./cairn-data")]
    data_dir: PathBuf,
    /// The gateway's HTTP address (host:port), instead of --data-dir.
    #[arg(long)]
    gateway: Option<String>,
}

impl GatewayArgs {
    pub(crate) fn addr(&self) -> anyhow::Result<String> {
        if let Some(g) = &self.gateway {
            return Ok(g.trim_start_matches("http://").trim_end_matches('/').to_string());
        }
        let file = addr_file(&self.data_dir.join("gateway"));
        let addrs = read_addrs(&file).with_context(|| {
            format!(
                "no running gateway found in {} (is `cairn up` running?)",
                self.data_dir.display()
            )
        })?;
        Ok(addrs.main)
    }
}

const CALL: Duration = Duration::from_secs(30);

/// Asks for a pass; with `wait`, follows it to its end and prints its report.
pub async fn gc(args: GatewayArgs, wait: bool, timeout: Duration) -> anyhow::Result<()> {
    let addr = args.addr()?;
    let asked = request(&addr, "POST", "/_cairn/gc", CALL).await?;
    if asked.status != 202 {
        bail!("the gateway refused: HTTP {} {}", asked.status, asked.body);
    }
    let n = json(&asked.body)?["requested"].as_u64().context("no request number")?;
    if !wait {
        println!("garbage collection pass requested (request {n}); `cairn admin gc --wait` follows one to its end");
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let s = json(&request(&addr, "GET", "/_cairn/gc", CALL).await?.body)?;
        if s["finished"].as_u64().unwrap_or(0) >= n && !s["running"].as_bool().unwrap_or(false) {
            if let Some(e) = s["last_error"].as_str() {
                bail!("the garbage collection pass failed, nothing more was deleted: {e}");
            }
            print_report(&s["last"]);
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("the pass did not finish within {timeout:?}; it goes on in the gateway");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn json(body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).with_context(|| format!("the gateway answered {body:?}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn print_report(r: &Value) {
    println!(
        "garbage collection pass, generation {} (oldest holder's generation {})",
        n(r, "generation"),
        n(r, "oldest_generation")
    );
    println!(
        "  examined: {} completed snapshots, {} holds ({} released), {} manifests, {} pages, {} entries",
        n(r, "snapshots"),
        n(r, "holds"),
        n(r, "holds_released"),
        n(&r["mark"], "roots"),
        n(&r["mark"], "pages_read"),
        n(&r["mark"], "entries"),
    );
    println!("  live filter: {} partition(s) of {}", n(r, "partitions"), mib(n(r, "filter_bytes")));
    println!(
        "  {:<16} {:>6} {:>10} {:>10} {:>12} {:>10} {:>12}",
        "node", "swept", "examined", "deleted", "deleted", "packs", "freed"
    );
    for node in r["nodes"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:>6} {:>10} {:>10} {:>12} {:>10} {:>12}{}",
            node["node_id"].as_str().unwrap_or("?"),
            if node["swept"].as_bool().unwrap_or(false) { "yes" } else { "no" },
            n(node, "examined"),
            n(node, "deleted"),
            mib(n(node, "deleted_bytes")),
            format!("-{}/~{}", n(node, "packs_removed"), n(node, "packs_rewritten")),
            mib(n(node, "bytes_freed")),
            node["error"].as_str().map(|e| format!("  ({e})")).unwrap_or_default(),
        );
    }
    println!(
        "examined {} chunks, deleted {} ({}); freed {} of pack files in {:.1} s",
        n(r, "examined"),
        n(r, "deleted"),
        mib(n(r, "deleted_bytes")),
        mib(n(r, "bytes_freed")),
        n(r, "duration_ms") as f64 / 1000.0
    );
}

/// Prints what deleting `snapshot` would free now and what it shares.
pub async fn snapshot_usage(args: GatewayArgs, snapshot: &str) -> anyhow::Result<()> {
    if cairn_core::SnapshotId::parse(snapshot).is_none() {
        bail!("'{snapshot}' is not a snapshot id (snap- and 17 hex digits)");
    }
    let addr = args.addr()?;
    let a = request(&addr, "GET", &format!("/_cairn/snapshots/{snapshot}/usage"), CALL).await?;
    let v = json(&a.body)?;
    if a.status != 200 {
        bail!("{}", v["error"].as_str().unwrap_or(&a.body));
    }
    let rf = n(&v, "replication_factor").max(1);
    println!(
        "snapshot {snapshot}: {} blocks in {} manifest pages",
        n(&v, "chunks"),
        n(&v, "pages")
    );
    println!(
        "  unique to it (freed by deleting it now): {} in {} chunks ({} on disk at RF {rf})",
        mib(n(&v, "unique_bytes")),
        n(&v, "unique_chunks"),
        mib(n(&v, "unique_bytes") * rf)
    );
    println!("  shared with other snapshots or holders: {}", mib(n(&v, "shared_bytes")));
    Ok(())
}
