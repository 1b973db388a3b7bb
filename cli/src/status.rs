//! `cairn admin status`: the cluster at a glance, in the spirit of `garage
//! status`. A one-line verdict first (healthy, degraded or unavailable, with
//! the reasons), then the metadata members (state, term, leader, log and
//! apply positions, lag behind the leader), the chunk nodes by zone (state,
//! chunks, bytes, free disk, repair backlog) and the gateway's workers.
//! Members are asked directly; nodes and workers through the gateway's
//! operator endpoints. `--output json` prints the same as one object.

use crate::http::request;
use cairn_proto::pb::StatusReply;
use cairn_proto::MetadataClient;
use serde_json::{json, Value};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(10);

/// What was found, before it is printed.
pub struct Overview {
    members: Vec<(String, Result<StatusReply, String>)>,
    /// `/_cairn/nodes`, or why it could not be read.
    nodes: Result<Value, String>,
    /// `/_cairn/health` (its workers), or why it could not be read.
    gateway: Result<Value, String>,
    gateway_addr: Option<String>,
}

pub async fn gather(
    client: &MetadataClient,
    addrs: &[String],
    gateway: Option<String>,
) -> Overview {
    let mut members = Vec::new();
    for a in addrs {
        members.push((a.clone(), client.status(a).await.map_err(|e| e.to_string())));
    }
    let (nodes, health) = match &gateway {
        None => (Err("no gateway address".to_string()), Err("no gateway address".to_string())),
        Some(g) => {
            let get = |path: &'static str| async move {
                match request(g, "GET", path, CALL).await {
                    Ok(a) => serde_json::from_str::<Value>(&a.body)
                        .map_err(|_| format!("{path} answered {}", a.status))
                        .and_then(|v| match a.status {
                            200 => Ok(v),
                            s => Err(v["error"]
                                .as_str()
                                .map_or(format!("{path} answered {s}"), str::to_string)),
                        }),
                    Err(e) => Err(format!("{e:#}")),
                }
            };
            tokio::join!(get("/_cairn/nodes"), get("/_cairn/health"))
        }
    };
    Overview { members, nodes, gateway: health, gateway_addr: gateway }
}

impl Overview {
    fn leader(&self) -> Option<&StatusReply> {
        let answered = self.members.iter().filter_map(|(_, s)| s.as_ref().ok());
        let leader_id = answered.clone().map(|s| s.leader_id).find(|id| *id != 0)?;
        answered.into_iter().find(|s| s.node_id == leader_id)
    }

    /// `healthy`, `degraded` or `unavailable`, and why when not healthy.
    pub fn verdict(&self) -> (&'static str, Vec<String>) {
        let mut why = Vec::new();
        let answering = self.members.iter().filter(|(_, s)| s.is_ok()).count();
        if self.leader().is_none() {
            why.push(format!(
                "no metadata leader ({answering} of {} members answer)",
                self.members.len()
            ));
            return ("unavailable", why);
        }
        for (addr, s) in &self.members {
            if s.is_err() {
                why.push(format!("metadata member {addr} does not answer"));
            }
        }
        match &self.nodes {
            Err(e) => why.push(format!("the gateway does not answer ({e})")),
            Ok(v) => {
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let id = n["node_id"].as_str().unwrap_or("?");
                    match n["state"].as_str().unwrap_or("?") {
                        "down" => why.push(format!("chunk node {id} is declared down")),
                        "removed" => {}
                        _ if n["chunks"].is_null() => {
                            why.push(format!("chunk node {id} does not answer"))
                        }
                        _ => {}
                    }
                }
                let backlog = v["repair"]["last"]["backlog"].as_u64().unwrap_or(0);
                if backlog > 0 {
                    why.push(format!("{backlog} replicas below the replication factor"));
                }
            }
        }
        if let Ok(h) = &self.gateway {
            for w in h["workers"].as_array().into_iter().flatten() {
                if w["state"].as_str() == Some("failing") {
                    why.push(format!(
                        "gateway worker {} is failing: {}",
                        w["name"].as_str().unwrap_or("?"),
                        w["last_error"].as_str().unwrap_or("?")
                    ));
                }
            }
        }
        (if why.is_empty() { "healthy" } else { "degraded" }, why)
    }

    pub fn json(&self) -> Value {
        let (verdict, why) = self.verdict();
        let leader_log = self.leader().map(|l| l.last_log_index).unwrap_or(0);
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(addr, s)| match s {
                Ok(s) => json!({
                    "address": addr, "id": s.node_id, "state": s.state, "term": s.term,
                    "leader": s.leader_id, "last_log": s.last_log_index, "applied": s.last_applied,
                    "lag": leader_log.saturating_sub(s.last_applied),
                }),
                Err(e) => json!({ "address": addr, "state": "down", "error": e }),
            })
            .collect();
        json!({
            "health": verdict,
            "reasons": why,
            "metadata": members,
            "gateway": self.gateway_addr,
            "nodes": self.nodes.as_ref().map(|v| v["nodes"].clone()).unwrap_or(Value::Null),
            "repair": self.nodes.as_ref().map(|v| v["repair"].clone()).unwrap_or(Value::Null),
            "workers": self.gateway.as_ref().map(|v| v["workers"].clone()).unwrap_or(Value::Null),
        })
    }

    pub fn print(&self) {
        let (verdict, why) = self.verdict();
        match why.is_empty() {
            true => println!("cluster: {verdict}"),
            false => println!("cluster: {verdict}: {}", why.join("; ")),
        }
        let leader = self.leader();
        println!();
        match leader {
            Some(l) => println!(
                "metadata group: {} members, leader {} (term {})",
                self.members.len(),
                l.node_id,
                l.term
            ),
            None => println!("metadata group: {} members, no leader", self.members.len()),
        }
        println!(
            "{:<6} {:<28} {:<10} {:>6} {:>7} {:>10} {:>10} {:>6}",
            "id", "address", "state", "term", "leader", "last_log", "applied", "lag"
        );
        let leader_log = leader.map(|l| l.last_log_index).unwrap_or(0);
        for (a, s) in &self.members {
            match s {
                Ok(s) => println!(
                    "{:<6} {:<28} {:<10} {:>6} {:>7} {:>10} {:>10} {:>6}",
                    s.node_id,
                    a,
                    s.state,
                    s.term,
                    s.leader_id,
                    s.last_log_index,
                    s.last_applied,
                    leader_log.saturating_sub(s.last_applied)
                ),
                Err(e) => println!("{:<6} {:<28} {:<10} ({e})", "?", a, "down"),
            }
        }
        println!();
        match &self.nodes {
            Err(e) => println!("chunk nodes: unknown (the gateway does not answer: {e})"),
            Ok(v) => print_nodes(v),
        }
        if let Ok(h) = &self.gateway {
            println!();
            println!("gateway workers ({}):", self.gateway_addr.as_deref().unwrap_or("?"));
            println!("{:<28} {:<9} {:>8} {:>7}  last error", "worker", "state", "steps", "errors");
            for w in h["workers"].as_array().into_iter().flatten() {
                println!(
                    "{:<28} {:<9} {:>8} {:>7}  {}",
                    w["name"].as_str().unwrap_or("?"),
                    w["state"].as_str().unwrap_or("?"),
                    w["steps"].as_u64().unwrap_or(0),
                    w["errors"].as_u64().unwrap_or(0),
                    w["last_error"].as_str().unwrap_or("")
                );
            }
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn print_nodes(v: &Value) {
    let mut nodes: Vec<&Value> = v["nodes"].as_array().into_iter().flatten().collect();
    nodes.sort_by_key(|n| (n["zone"].as_str().unwrap_or(""), n["node_id"].as_str().unwrap_or("")));
    println!("chunk nodes: {}", nodes.len());
    println!(
        "{:<24} {:<14} {:<9} {:>9} {:>12} {:>20} {:>8}",
        "zone", "node", "state", "chunks", "stored", "free disk", "backlog"
    );
    for n in nodes {
        let figure =
            |k: &str, f: fn(u64) -> String| n[k].as_u64().map(f).unwrap_or_else(|| "-".into());
        let disk = match (n["disk_free_bytes"].as_u64(), n["disk_total_bytes"].as_u64()) {
            (Some(free), Some(total)) if total > 0 => format!("{} of {}", gib(free), gib(total)),
            _ => "-".into(),
        };
        println!(
            "{:<24} {:<14} {:<9} {:>9} {:>12} {:>20} {:>8}",
            n["zone"].as_str().unwrap_or("?"),
            n["node_id"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            figure("chunks", |c| c.to_string()),
            figure("bytes", mib),
            disk,
            n["backlog"].as_u64().unwrap_or(0),
        );
    }
}
