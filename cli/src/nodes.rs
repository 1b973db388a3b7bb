//! `cairn admin node list|drain|remove`: chunk nodes that leave, through
//! the gateway's operator endpoints (`/_cairn/nodes`, `/_cairn/repair`).
//! Drain and remove change the node's state in the metadata group and start
//! re-replication; with `--wait` they follow the passes until one ends
//! with no replica below RF.

use crate::gc::GatewayArgs;
use crate::http::request;
use anyhow::{bail, Context};
use serde_json::Value;
use std::time::{Duration, Instant};

const CALL: Duration = Duration::from_secs(30);

#[derive(clap::Subcommand, Debug)]
pub enum NodeCmd {
    /// Every chunk node: zone, state (up, down, draining, removed), chunks,
    /// bytes and repair backlog.
    List {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Drain a node: placement stops picking it and its chunks are copied
    /// to the nodes placement picks now; then it can be stopped.
    Drain {
        /// The node id (as `cairn admin node list` shows it).
        node: String,
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Wait until re-replication has copied everything it held.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Remove a node whose disk is gone: its chunks are re-replicated from
    /// the surviving copies. A removed node id never comes back.
    Remove {
        node: String,
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Wait until every chunk is back at RF.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
}

pub async fn run(cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::List { gateway } => list(&gateway.addr()?).await,
        NodeCmd::Drain { node, gateway, wait, timeout_secs } => {
            leave(&gateway.addr()?, &node, "drain", wait, Duration::from_secs(timeout_secs)).await
        }
        NodeCmd::Remove { node, gateway, wait, timeout_secs } => {
            leave(&gateway.addr()?, &node, "remove", wait, Duration::from_secs(timeout_secs)).await
        }
    }
}

fn json(body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).with_context(|| format!("the gateway answered {body:?}"))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

async fn list(addr: &str) -> anyhow::Result<()> {
    let a = request(addr, "GET", "/_cairn/nodes", CALL).await?;
    let v = json(&a.body)?;
    if a.status != 200 {
        bail!("{}", v["error"].as_str().unwrap_or(&a.body));
    }
    println!(
        "{:<16} {:<24} {:<9} {:>10} {:>12} {:>8}",
        "node", "zone", "state", "chunks", "bytes", "backlog"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let figure =
            |k: &str, f: fn(u64) -> String| n[k].as_u64().map(f).unwrap_or_else(|| "-".to_string());
        println!(
            "{:<16} {:<24} {:<9} {:>10} {:>12} {:>8}",
            n["node_id"].as_str().unwrap_or("?"),
            n["zone"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            figure("chunks", |c| c.to_string()),
            figure("bytes", mib),
            n["backlog"].as_u64().unwrap_or(0),
        );
    }
    print_repair(&v["repair"]);
    Ok(())
}

fn print_repair(r: &Value) {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    match &r["last"] {
        Value::Null => println!("re-replication: no pass yet"),
        last => println!(
            "re-replication: last pass checked {} chunks of {} manifests, {} replicas below RF, {} copied, backlog {}{}",
            n(last, "checked"),
            n(last, "roots"),
            n(last, "missing"),
            n(last, "copied"),
            n(last, "backlog"),
            if r["running"].as_bool().unwrap_or(false) { " (a pass is running)" } else { "" },
        ),
    }
    if let Some(e) = r["last_error"].as_str() {
        println!("re-replication: the last pass failed: {e}");
    }
}

/// Drains or removes `node`; with `wait`, follows re-replication until a
/// pass asked for after the change ends with no backlog.
async fn leave(
    addr: &str,
    node: &str,
    verb: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let a = request(addr, "POST", &format!("/_cairn/nodes/{node}/{verb}"), CALL).await?;
    let v = json(&a.body)?;
    if a.status != 202 {
        bail!("{}", v["error"].as_str().unwrap_or(&a.body));
    }
    let mut n = v["requested"].as_u64().context("no request number")?;
    let done = if verb == "drain" { "draining" } else { "removed" };
    if !wait {
        println!(
            "{node} is {done}; re-replication started (`cairn admin node list` shows the backlog)"
        );
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let s = json(&request(addr, "GET", "/_cairn/repair", CALL).await?.body)?;
        if s["finished"].as_u64().unwrap_or(0) >= n && !s["running"].as_bool().unwrap_or(false) {
            let backlog = s["last"]["backlog"].as_u64();
            if s["last_error"].is_null() && backlog == Some(0) {
                print_repair(&s);
                match verb {
                    "drain" => println!("{node} is drained: nothing it holds is needed only there; it can be stopped"),
                    _ => println!("{node} is removed: every referenced chunk is back at RF"),
                }
                return Ok(());
            }
            // Not there yet (a node did not answer, a copy failed): again.
            let again = json(&request(addr, "POST", "/_cairn/repair", CALL).await?.body)?;
            n = again["requested"].as_u64().context("no request number")?;
        }
        if started.elapsed() > timeout {
            print_repair(&s);
            bail!("re-replication did not finish within {timeout:?}; it goes on in the gateway");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
