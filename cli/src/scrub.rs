//! `cairn admin scrub`: a scrub pass now on every chunk node, through the
//! gateway's operator endpoint; with `--wait`, followed to its end on each
//! node and reported per node (records and bytes checked, corrupt records
//! found, chunks repaired from a replica and those no replica had).

use crate::gc::{json, mib, n, GatewayArgs, CALL};
use crate::http::request;
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Asks every node for a pass at `bytes_per_sec` (0: unthrottled); with
/// `wait`, follows each to its end and prints what it checked, found and
/// fixed. Fails when a node could not be asked or a chunk is unrepairable.
pub async fn scrub(
    args: GatewayArgs,
    wait: bool,
    bytes_per_sec: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let addr = args.addr()?;
    let path = format!("/_cairn/scrub?bytes_per_sec={bytes_per_sec}");
    let asked = request(&addr, "POST", &path, CALL).await?;
    if asked.status != 202 {
        bail!("the gateway refused: HTTP {} {}", asked.status, asked.body);
    }
    let asked = json(&asked.body)?;
    let passes: BTreeMap<String, u64> = asked["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["node_id"].as_str().unwrap_or("?").to_string(), n(v, "pass")))
        .collect();
    let mut unreachable = names(&asked["unreachable"]);
    if passes.is_empty() {
        bail!("no chunk node took the request (unreachable: {})", unreachable.join(", "));
    }
    if !wait {
        for (node, pass) in &passes {
            println!("{node}: scrub pass {pass} started");
        }
        println!("`cairn admin scrub --wait` follows the passes to their end");
        return check_unreachable(&unreachable);
    }
    let started = Instant::now();
    let done = loop {
        let s = json(&request(&addr, "GET", "/_cairn/scrub", CALL).await?.body)?;
        let nodes: Vec<&Value> = s["nodes"].as_array().into_iter().flatten().collect();
        let finished = |node: &str, pass: u64| {
            nodes
                .iter()
                .any(|v| v["node_id"] == node && n(v, "finished") >= pass && v["running"] == false)
        };
        if passes.iter().all(|(node, pass)| finished(node, *pass)) {
            break nodes
                .into_iter()
                .filter(|v| passes.contains_key(node_id(v)))
                .cloned()
                .collect::<Vec<_>>();
        }
        if started.elapsed() > timeout {
            bail!("the passes did not finish within {timeout:?}; they go on in the chunk nodes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print_table(&done);
    unreachable.extend(passes.keys().filter(|k| !done.iter().any(|v| node_id(v) == *k)).cloned());
    let unrepairable: u64 = done.iter().map(|v| n(v, "unrepairable")).sum();
    if unrepairable > 0 {
        bail!("{unrepairable} chunk(s) had no good replica to repair from");
    }
    check_unreachable(&unreachable)
}

fn node_id(v: &Value) -> &str {
    v["node_id"].as_str().unwrap_or("?")
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

fn check_unreachable(unreachable: &[String]) -> anyhow::Result<()> {
    if unreachable.is_empty() {
        return Ok(());
    }
    Err(anyhow::anyhow!("not scrubbed (unreachable): {}", unreachable.join(", ")))
        .context("some chunk nodes did not answer")
}

fn print_table(nodes: &[Value]) {
    println!(
        "  {:<16} {:>5} {:>10} {:>12} {:>6} {:>9} {:>13} {:>7}",
        "node", "pass", "records", "checked", "found", "repaired", "unrepairable", "errors"
    );
    for v in nodes {
        println!(
            "  {:<16} {:>5} {:>10} {:>12} {:>6} {:>9} {:>13} {:>7}",
            node_id(v),
            n(v, "pass"),
            n(v, "records_checked"),
            mib(n(v, "bytes_checked")),
            n(v, "found"),
            n(v, "repaired"),
            n(v, "unrepairable"),
            n(v, "errors"),
        );
    }
    let sum = |k: &str| nodes.iter().map(|v| n(v, k)).sum::<u64>();
    println!(
        "scrubbed {} node(s): checked {} records ({}), found {} corrupt, repaired {}, unrepairable {}",
        nodes.len(),
        sum("records_checked"),
        mib(sum("bytes_checked")),
        sum("found"),
        sum("repaired"),
        sum("unrepairable"),
    );
}
