//! `ebs_bench`: EBS direct throughput from a client that is not the
//! bottleneck. `--streams` connections (HTTP/1.1 keep-alive, one task each,
//! requests signed with SigV4 as botocore signs them) put `--mib` MiB of
//! random 512 KiB blocks into one snapshot, complete it, list its blocks and
//! read every block back, checking each against what was put. Prints one
//! JSON object (MiB/s of each phase, and the seconds from CompleteSnapshot
//! until the snapshot lists); `tests/bench/ebs_throughput.py` runs it
//! against a `cairn up` cluster beside boto3 and prints the table.
//!
//! Endpoint and credentials come from the environment `cairn up` writes:
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cairn_core::sigv4::{authorization, Scope, SignedParts};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BLOCK: usize = 524_288;

struct Endpoint {
    host: String,
    region: String,
    key: String,
    secret: String,
}

impl Endpoint {
    fn from_env() -> anyhow::Result<Endpoint> {
        let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
        let url = var("AWS_ENDPOINT_URL")?;
        let host = url.strip_prefix("http://").context("an http:// endpoint")?;
        Ok(Endpoint {
            host: host.trim_end_matches('/').to_string(),
            region: var("AWS_REGION")?,
            key: var("AWS_ACCESS_KEY_ID")?,
            secret: var("AWS_SECRET_ACCESS_KEY")?,
        })
    }
}

/// One keep-alive connection to the gateway.
struct Conn {
    stream: BufReader<TcpStream>,
}

/// `YYYYMMDDTHHMMSSZ` now.
fn amz_date() -> String {
    let iso = cairn_core::time::iso8601_ms(cairn_core::time::now_ms());
    let plain: String = iso.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    // 20261205T063000000Z -> drop the milliseconds.
    format!("{}Z", &plain[..15])
}

impl Conn {
    async fn open(ep: &Endpoint) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(&ep.host).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream: BufReader::new(stream) })
    }

    /// Sends one signed request and reads the answer: status and body.
    async fn call(
        &mut self,
        ep: &Endpoint,
        method: &str,
        path: &str,
        query: &[(String, String)],
        extra: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let date = amz_date();
        // As botocore: only PutSnapshotBlock's body goes unsigned (its
        // signed x-amz-checksum header covers it).
        let payload = if method == "PUT" {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            cairn_core::sigv4::sha256_hex(body)
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), ep.host.clone()),
            ("x-amz-date".into(), date.clone()),
            ("x-amz-content-sha256".into(), payload.clone()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let scope =
            Scope { date: date[..8].to_string(), region: ep.region.clone(), service: "ebs".into() };
        let parts = SignedParts { method, path, query, headers: &headers, payload_hash: &payload };
        let auth = authorization(&ep.key, &ep.secret, &date, &scope, &parts);
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    cairn_core::sigv4::uri_encode(k, false),
                    cairn_core::sigv4::uri_encode(v, false)
                )
            })
            .collect();
        let target =
            if qs.is_empty() { path.to_string() } else { format!("{path}?{}", qs.join("&")) };
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nauthorization: {auth}\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        cairn_tests::http::read_answer(&mut self.stream).await
    }
}

fn json_of(status: u16, want: u16, body: &[u8]) -> anyhow::Result<Value> {
    if status != want {
        bail!("answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(400)]));
    }
    Ok(serde_json::from_slice(body)?)
}

/// Runs `op(i)` for every `i` in `0..n` over `streams` connections, each
/// taking the next index; returns the seconds it took.
async fn fan_out<F, Fut>(ep: &Arc<Endpoint>, streams: usize, n: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Conn>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut conns = Vec::new();
    for _ in 0..streams {
        conns.push(Conn::open(ep).await?);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                conn = op(conn, i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Every block of `snap` and its token, once the snapshot lists (its seal
/// after CompleteSnapshot is asynchronous).
async fn list_blocks(
    c: &mut Conn,
    ep: &Endpoint,
    snap: &str,
) -> anyhow::Result<Vec<(usize, String)>> {
    let mut tokens: Vec<(usize, String)> = Vec::new();
    let mut page: Option<String> = None;
    let started = Instant::now();
    loop {
        let mut query = vec![("maxResults".to_string(), "10000".to_string())];
        if let Some(p) = &page {
            query.push(("pageToken".to_string(), p.clone()));
        }
        let path = format!("/snapshots/{snap}/blocks");
        let (status, answer) = c.call(ep, "GET", &path, &query, &[], &[]).await?;
        if status != 200 {
            if started.elapsed().as_secs() > 600 {
                bail!("the snapshot never listed: {status}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        let v: Value = serde_json::from_slice(&answer)?;
        for b in v["Blocks"].as_array().context("Blocks")? {
            let i = b["BlockIndex"].as_u64().context("BlockIndex")? as usize;
            tokens.push((i, b["BlockToken"].as_str().context("BlockToken")?.to_string()));
        }
        match v["NextToken"].as_str() {
            Some(t) => page = Some(t.to_string()),
            None => break,
        }
    }
    Ok(tokens)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context("a flag needs a value")?.parse()?),
            None => Ok(default),
        }
    };
    let (streams, mib) = (flag("--streams", 64)?, flag("--mib", 512)?);
    let ep = Arc::new(Endpoint::from_env()?);
    let n = mib * (1 << 20) / BLOCK;
    let mut rng = rand::thread_rng();
    let blocks: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..n)
            .map(|_| {
                let mut b = vec![0u8; BLOCK];
                rng.fill_bytes(&mut b);
                b
            })
            .collect(),
    );
    let sums: Arc<Vec<String>> =
        Arc::new(blocks.iter().map(|b| B64.encode(Sha256::digest(b))).collect());

    let mut c = Conn::open(&ep).await?;
    let gib = (n * BLOCK).div_ceil(1 << 30).max(1);
    let body = json!({ "VolumeSize": gib }).to_string();
    let (status, answer) = c.call(&ep, "POST", "/snapshots", &[], &[], body.as_bytes()).await?;
    let snap =
        json_of(status, 201, &answer)?["SnapshotId"].as_str().context("a SnapshotId")?.to_string();

    let (e, b, s, id) = (ep.clone(), blocks.clone(), sums.clone(), snap.clone());
    let put_secs = fan_out(&ep, streams, n, move |mut conn, i| {
        let (e, b, s, id) = (e.clone(), b.clone(), s.clone(), id.clone());
        async move {
            let headers = [
                ("x-amz-data-length", BLOCK.to_string()),
                ("x-amz-checksum", s[i].clone()),
                ("x-amz-checksum-algorithm", "SHA256".to_string()),
            ];
            let path = format!("/snapshots/{id}/blocks/{i}");
            let (status, answer) = conn.call(&e, "PUT", &path, &[], &headers, &b[i]).await?;
            if status != 201 {
                bail!(
                    "PutSnapshotBlock {i} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            Ok(conn)
        }
    })
    .await?;

    let count = [("x-amz-changedblockscount", n.to_string())];
    let sealing = Instant::now();
    let (status, answer) =
        c.call(&ep, "POST", &format!("/snapshots/completion/{snap}"), &[], &count, &[]).await?;
    json_of(status, 202, &answer)?;
    let tokens = list_blocks(&mut c, &ep, &snap).await?;
    let complete_secs = sealing.elapsed().as_secs_f64();
    if tokens.len() != n {
        bail!("listed {} blocks, put {n}", tokens.len());
    }
    let tokens = Arc::new(tokens);
    let (e, b, id) = (ep.clone(), blocks.clone(), snap.clone());
    let get_secs = fan_out(&ep, streams, n, move |mut conn, k| {
        let (e, b, t, id) = (e.clone(), b.clone(), tokens.clone(), id.clone());
        async move {
            let (i, token) = &t[k];
            let path = format!("/snapshots/{id}/blocks/{i}");
            let query = [("blockToken".to_string(), token.clone())];
            let (status, data) = conn.call(&e, "GET", &path, &query, &[], &[]).await?;
            if status != 200 || data != b[*i] {
                bail!(
                    "GetSnapshotBlock {i} answered {status} with {} bytes unequal to those put",
                    data.len()
                );
            }
            Ok(conn)
        }
    })
    .await?;
    let total = (n * BLOCK) as f64 / (1 << 20) as f64;
    println!(
        "{}",
        json!({
            "streams": streams,
            "mib": total,
            "put_mib_s": total / put_secs,
            "get_mib_s": total / get_secs,
            "complete_secs": complete_secs,
        })
    );
    Ok(())
}
