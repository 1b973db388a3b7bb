//! A minimal HTTP/1.1 client for the gateway's operator endpoints
//! (`/_cairn/...`, plain JSON on loopback or a private network) and its
//! signed EC2 calls ([`crate::ec2`]), so the CLI
//! needs no HTTP client crate: one request per connection, `Connection:
//! close`, the whole answer read.

use anyhow::{bail, Context};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `method path` (no body) to `addr` (`host:port`) within `timeout`.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    send(addr, method, path, &[], &[], timeout).await
}

/// Sends `method path` with `headers` (besides `Host`, `Content-Length`
/// and `Connection`) and `body` to `addr` within `timeout`.
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach {addr}"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(body);
        s.write_all(&raw).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse(&buf)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{addr} did not answer {method} {path} within {timeout:?}"),
    }
}

/// `cairn probe URL`: Ok when `GET URL` (plain `http://host:port/path`)
/// answers 200 within 5 s.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").context("the probe URL must start with http://")?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let a = request(addr, "GET", path, Duration::from_secs(5)).await?;
    if a.status != 200 {
        bail!("{url} answered {}: {}", a.status, a.body.trim());
    }
    Ok(())
}

fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok(Answer { status, body })
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("plain");
        assert_eq!((a.status, a.body.as_str()), (200, "{}"));
        let raw = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let a = parse(raw).expect("chunked");
        assert_eq!((a.status, a.body.as_str()), (404, "abcde"));
        assert!(parse(b"garbage").is_err());
    }
}
