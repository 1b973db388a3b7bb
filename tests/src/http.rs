//! A minimal HTTP/1.1 client for talking to the gateway like an AWS SDK does
//! (form-encoded POST with a SigV4-shaped Authorization header).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs `form` to `/`; returns (status, body).
pub async fn post_form(
    addr: SocketAddr,
    form: &[(&str, &str)],
    region: &str,
) -> anyhow::Result<(u16, String)> {
    let body: Vec<String> =
        form.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect();
    let body = body.join("&");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         X-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=cairn/20260101/{region}/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, req.as_bytes()).await
}

/// GET `path`; returns (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    request(addr, req.as_bytes()).await
}

/// POST `path` with no body; returns (status, body).
pub async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    request(addr, req.as_bytes()).await
}

async fn request(addr: SocketAddr, raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(raw).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Reads one HTTP/1.1 answer from a keep-alive connection: the status and
/// the body of `Content-Length` bytes (chunked answers are not expected
/// from the servers the benchmarks talk to, and are an error).
pub async fn read_answer<R>(stream: &mut R) -> anyhow::Result<(u16, Vec<u8>)>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use anyhow::Context as _;
    use tokio::io::AsyncBufReadExt as _;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 =
        line.split_whitespace().nth(1).context("a status line")?.parse().context("a status")?;
    let mut length = None;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.trim().parse::<usize>()?);
            }
        }
    }
    let mut body = vec![0u8; length.context("no content-length (chunked answers are not read)")?];
    stream.read_exact(&mut body).await?;
    Ok((status, body))
}
