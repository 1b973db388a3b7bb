//! Garbage collection as tests drive it: a pass through the gateway's
//! operator endpoint, followed to its end.

use crate::{http, wait_for};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Asks the gateway at `addr` for a pass, waits for it to end and returns
/// its report; an error if the pass failed.
pub async fn run_pass(addr: SocketAddr) -> anyhow::Result<Value> {
    run_pass_within(addr, Duration::from_secs(180)).await
}

/// [`run_pass`], for a pass that may take up to `within`.
pub async fn run_pass_within(addr: SocketAddr, within: Duration) -> anyhow::Result<Value> {
    let (status, body) = http::post(addr, "/_cairn/gc").await?;
    anyhow::ensure!(status == 202, "POST /_cairn/gc: {status} {body}");
    let n = serde_json::from_str::<Value>(&body)?["requested"].as_u64().unwrap_or(0);
    let last = Arc::new(Mutex::new(Value::Null));
    wait_for("the gc pass ends", within, || {
        let last = last.clone();
        async move {
            let Ok((200, b)) = http::get(addr, "/_cairn/gc").await else { return false };
            let Ok(s) = serde_json::from_str::<Value>(&b) else { return false };
            let done = s["finished"].as_u64().unwrap_or(0) >= n && s["running"] == false;
            *last.lock().unwrap_or_else(|e| e.into_inner()) = s;
            done
        }
    })
    .await?;
    let status = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    anyhow::ensure!(status["last_error"].is_null(), "gc failed: {}", status["last_error"]);
    Ok(status["last"].clone())
}

/// Bytes the chunk stores hold, over every node, as the gateway reports them.
pub async fn stored_bytes(addr: SocketAddr) -> anyhow::Result<u64> {
    let (_, body) = http::get(addr, "/_cairn/chunks").await?;
    Ok(serde_json::from_str::<Value>(&body)?["bytes"].as_u64().unwrap_or(0))
}
