//! The HTTP stack of a real gateway, with no metadata group behind it: what
//! must work without one (auth, parameter errors, DryRun, size limits) and
//! what must fail retryably (503) when it is missing.

use cairn_gateway::{Gateway, GatewayConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/cairn-1/ec2/aws4_request, SignedHeaders=host, Signature=00";

struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request on a fresh connection.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Answer { status, headers: head.to_ascii_lowercase(), body: body.to_string() }
}

fn element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(&body[start..end])
}

async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    // Port 1 refuses connections: the metadata group is unreachable.
    let mut config = GatewayConfig::for_test(vec!["http://127.0.0.1:1".into()]);
    config.metadata_deadline_ms = 1500;
    tweak(&mut config);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nbd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Gateway::start(config, http, nbd).await.unwrap()
}

#[tokio::test]
async fn errors_without_metadata() {
    let gw = start(|_| {}).await;
    let addr = gw.http_addr();

    // No credentials at all.
    let a = send(addr, "POST", "/", None, "Action=DescribeVolumes&Version=2016-11-15").await;
    assert_eq!(a.status, 401);
    assert_eq!(element(&a.body, "Code"), Some("MissingAuthenticationToken"));
    // The envelope's RequestID is the x-amzn-requestid header.
    let rid = element(&a.body, "RequestID").unwrap().to_string();
    assert_eq!(rid.len(), 36, "{}", a.body);
    assert!(a.headers.contains(&format!("x-amzn-requestid: {rid}")), "{}", a.headers);
    assert!(a.body.contains("<Response><Errors><Error><Code>"));

    // Another region.
    let other = AUTH.replace("cairn-1/", "us-east-1/");
    let a = send(addr, "POST", "/", Some(&other), "Action=DescribeVolumes").await;
    assert_eq!((a.status, element(&a.body, "Code")), (401, Some("AuthFailure")));
    assert!(a.body.contains("cairn-1"), "{}", a.body);

    // Parameter errors and DryRun need no metadata.
    let table = [
        ("Version=2016-11-15", 400, "MissingAction"),
        ("Action=RunInstances", 400, "InvalidAction"),
        ("Action=DeleteVolume&VolumeId=vol-nope", 400, "InvalidVolumeID.Malformed"),
        ("Action=CreateVolume&AvailabilityZone=cairn-1z&Size=1", 400, "InvalidParameterValue"),
        ("Action=DeleteTags&Tag.1.Key=a", 400, "MissingParameter"),
        ("Action=DeleteVolume&VolumeId=vol-0123456789abcdef0&DryRun=true", 412, "DryRunOperation"),
        (
            "Action=CreateSnapshot&VolumeId=vol-0123456789abcdef0&DryRun=true",
            412,
            "DryRunOperation",
        ),
        ("Action=DescribeVolumes&DryRun=true", 412, "DryRunOperation"),
    ];
    for (body, status, code) in table {
        let a = send(addr, "POST", "/", Some(AUTH), body).await;
        assert_eq!(
            (a.status, element(&a.body, "Code")),
            (status, Some(code)),
            "{body}: {}",
            a.body
        );
    }
    let a = send(addr, "POST", "/", Some(AUTH), "Action=DescribeVolumes&DryRun=true").await;
    assert_eq!(
        element(&a.body, "Message"),
        Some("Request would have succeeded, but DryRun flag is set.")
    );

    // Parameters in the query string of a GET work too.
    let a = send(addr, "GET", "/?Action=DescribeSnapshots&DryRun=true", Some(AUTH), "").await;
    assert_eq!(a.status, 412);

    // A request that needs the metadata group: retryable 503.
    let a = send(addr, "POST", "/", Some(AUTH), "Action=DescribeVolumes").await;
    assert_eq!((a.status, element(&a.body, "Code")), (503, Some("Unavailable")), "{}", a.body);

    let a = send(addr, "GET", "/_cairn/health", None, "").await;
    assert_eq!(a.status, 503);

    gw.shutdown().await;
}

#[tokio::test]
async fn body_limit() {
    let gw = start(|c| c.max_body_bytes = 64).await;
    let big =
        format!("Action=DescribeVolumes&Filter.1.Name=tag:x&Filter.1.Value.1={}", "a".repeat(100));
    let a = send(gw.http_addr(), "POST", "/", Some(AUTH), &big).await;
    assert_eq!((a.status, element(&a.body, "Code")), (413, Some("RequestEntityTooLarge")));
    gw.shutdown().await;
}

#[tokio::test]
async fn sheds_load_with_request_limit_exceeded() {
    let gw = start(|c| {
        c.max_concurrent_requests = 1;
        c.metadata_deadline_ms = 4000;
    })
    .await;
    let addr = gw.http_addr();
    // This one holds the only slot while the metadata client looks for a leader.
    let slow =
        tokio::spawn(
            async move { send(addr, "POST", "/", Some(AUTH), "Action=DescribeVolumes").await },
        );
    let shed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let a = send(addr, "POST", "/", Some(AUTH), "Action=DescribeVolumes&DryRun=true").await;
            if a.status == 503 {
                return a;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a request was shed while the slot was taken");
    assert_eq!(element(&shed.body, "Code"), Some("RequestLimitExceeded"));
    assert!(element(&shed.body, "RequestID").is_some_and(|r| !r.is_empty()));
    let a = slow.await.unwrap();
    assert_eq!(a.status, 503);
    gw.shutdown().await;
}

#[tokio::test]
async fn refuses_unimplemented_auth_mode() {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nbd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = GatewayConfig::for_test(vec!["http://127.0.0.1:1".into()]);
    config.dev_any_key = false;
    assert!(Gateway::start(config, http, nbd).await.is_err());
}
