//! Scrub as tests drive it: a pass on every chunk node through the
//! gateway's operator endpoint, followed to its end.

use crate::{http, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Asks every node for a pass, waits until each has finished it and
/// returns each node's status, by node id.
pub async fn run_scrub(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, Value>> {
    let (status, body) = http::post(addr, "/_cairn/scrub").await?;
    anyhow::ensure!(status == 202, "POST /_cairn/scrub: {status} {body}");
    let asked: Value = serde_json::from_str(&body)?;
    let passes: BTreeMap<String, u64> = asked["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["node_id"].as_str().unwrap_or("").to_string(), v["pass"].as_u64().unwrap_or(0)))
        .collect();
    anyhow::ensure!(!passes.is_empty(), "no node took the scrub request: {body}");
    let last = Arc::new(Mutex::new(BTreeMap::new()));
    wait_for("the scrub passes end", Duration::from_secs(180), || {
        let (last, passes) = (last.clone(), passes.clone());
        async move {
            let Ok((200, b)) = http::get(addr, "/_cairn/scrub").await else { return false };
            let Ok(s) = serde_json::from_str::<Value>(&b) else { return false };
            let nodes: BTreeMap<String, Value> = s["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| (v["node_id"].as_str().unwrap_or("").to_string(), v.clone()))
                .collect();
            let done = passes.iter().all(|(id, pass)| {
                nodes.get(id).is_some_and(|v| {
                    v["finished"].as_u64().unwrap_or(0) >= *pass && v["running"] == false
                })
            });
            *last.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
            done
        }
    })
    .await?;
    let nodes = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(nodes)
}
