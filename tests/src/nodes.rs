//! Chunk nodes that leave, as tests drive them: the gateway's node list,
//! drain and remove, and re-replication followed until a pass ends with
//! nothing below RF.

use crate::{http, wait_for};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `GET /_cairn/nodes`: the nodes and the last re-replication pass.
pub async fn list(addr: SocketAddr) -> anyhow::Result<Value> {
    let (status, body) = http::get(addr, "/_cairn/nodes").await?;
    anyhow::ensure!(status == 200, "GET /_cairn/nodes: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The state `node` has in the list (`up`, `draining`, `removed`, `down`).
pub async fn state(addr: SocketAddr, node: &str) -> Option<String> {
    let v = list(addr).await.ok()?;
    let row = v["nodes"].as_array()?.iter().find(|n| n["node_id"] == node)?.clone();
    row["state"].as_str().map(str::to_string)
}

/// `POST /_cairn/nodes/{node}/{verb}`: the status and the JSON answer.
pub async fn change(addr: SocketAddr, node: &str, verb: &str) -> anyhow::Result<(u16, Value)> {
    let (status, body) = http::post(addr, &format!("/_cairn/nodes/{node}/{verb}")).await?;
    Ok((status, serde_json::from_str(&body)?))
}

/// Follows re-replication from request `n` on (asking again while a pass
/// ends with a backlog) until a pass ends clean; returns its report.
pub async fn repaired(addr: SocketAddr, n: u64) -> anyhow::Result<Value> {
    let asked = Arc::new(Mutex::new(n));
    let last = Arc::new(Mutex::new(Value::Null));
    wait_for("a re-replication pass ends with no backlog", Duration::from_secs(180), || {
        let (asked, last) = (asked.clone(), last.clone());
        async move {
            let Ok((200, b)) = http::get(addr, "/_cairn/repair").await else { return false };
            let Ok(s) = serde_json::from_str::<Value>(&b) else { return false };
            let n = *asked.lock().unwrap_or_else(|e| e.into_inner());
            if s["finished"].as_u64().unwrap_or(0) < n || s["running"] == true {
                return false;
            }
            let clean = s["last_error"].is_null() && s["last"]["backlog"] == 0;
            *last.lock().unwrap_or_else(|e| e.into_inner()) = s["last"].clone();
            if !clean {
                if let Ok((202, b)) = http::post(addr, "/_cairn/repair").await {
                    let again = serde_json::from_str::<Value>(&b).ok();
                    let m = again.and_then(|v| v["requested"].as_u64()).unwrap_or(n);
                    *asked.lock().unwrap_or_else(|e| e.into_inner()) = m;
                }
            }
            clean
        }
    })
    .await?;
    let report = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(report)
}
