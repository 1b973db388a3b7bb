//! Fuzzing the parsers that read what strangers (or a damaged disk) hand
//! them, with `cairn_tests::fuzz` (seconds per target here; `scripts/bench
//! fuzz` runs longer). Nothing may panic or hang; where a parser accepts
//! something, what it produced must hold up (a decoded manifest re-encodes
//! to the same bytes, a chunk read from a damaged pack matches its id).

use cairn_core::manifest::{ManifestBuilder, ManifestPage, ManifestRoot};
use cairn_core::ChunkId;
use cairn_gateway::config::GatewayConfig;
use cairn_gateway::ec2::endpoint::request_pairs;
use cairn_gateway::ec2::params::Params;
use cairn_gateway::http::sigv4;
use cairn_nbd::{Export, ExportResolver, Session};
use cairn_tests::fuzz;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Splits `input` at the first `sep`: (before, after).
fn split(input: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == sep) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

#[test]
fn fuzz_ec2_query_parser_and_router() {
    let config = GatewayConfig::for_test(vec!["http://127.0.0.1:1".into()]);
    let seeds: &[&[u8]] = &[
        b"Action=DescribeVolumes&Version=2016-11-15\0Filter.1.Name=tag%3AName&Filter.1.Value.1=a+b&MaxResults=5",
        b"\0Action=CreateVolume&Version=2016-11-15&AvailabilityZone=cairn-1a&Size=8&VolumeType=gp3&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v",
        b"Action=CreateSnapshot&VolumeId=vol-0123456789abcdef0&Description=x&DryRun=true\0",
        b"\0Action=DescribeSnapshots&Owner.1=self&RestorableBy.1=123456789012&SnapshotId.1=snap-01234567&NextToken=abc",
        b"\0Action=ModifyVolume&VolumeId=vol-01234567&Size=20&Iops=3000&Throughput=125",
        b"\0Action=DeleteTags&ResourceId.1=vol-01234567&Tag.1.Key=a&Tag.1.Value=",
    ];
    fuzz::run("ec2-query", seeds, 4096, |input| {
        let (query, body) = split(input, 0);
        let query = String::from_utf8_lossy(query);
        let query = (!query.is_empty()).then_some(query.as_ref());
        if let Ok(pairs) = request_pairs(query, body) {
            if let Ok(params) = Params::from_pairs(pairs) {
                let _ = cairn_gateway::ec2::router::route(&params, &config);
            }
        }
    });
}

fn headers_of(parts: &[&[u8]]) -> HeaderMap {
    let names = ["authorization", "x-amz-date", "host", "x-amz-content-sha256"];
    let mut h = HeaderMap::new();
    for (name, value) in names.iter().zip(parts) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

#[test]
fn fuzz_sigv4_header_and_query_parser() {
    let now = sigv4::parse_amz_date("20261204T101500Z").expect("date");
    let seeds: &[&[u8]] = &[
        b"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261204/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31\n20261204T101500Z\ngw:8773\n\nAction=DescribeVolumes",
        b"\n\ngw\nUNSIGNED-PAYLOAD\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F20261204%2Fus-east-1%2Fec2%2Faws4_request&X-Amz-Date=20261204T101500Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
        b"AWS4-HMAC-SHA256 SignedHeaders=host,Credential=K/20261204/r/ebs/aws4_request,Signature=x\n20261204T101500Z\nh\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
    ];
    fuzz::run("sigv4", seeds, 2048, |input| {
        let parts: Vec<&[u8]> = input.splitn(5, |&b| b == b'\n').collect();
        let headers = headers_of(&parts[..parts.len().min(4)]);
        let query =
            parts.get(4).map(|q| String::from_utf8_lossy(q).into_owned()).unwrap_or_default();
        let uri: Uri = format!("/?{query}").parse().unwrap_or_else(|_| Uri::from_static("/"));
        for method in [Method::POST, Method::GET, Method::PUT] {
            let hash = cairn_core::sigv4::sha256_hex(input);
            for body in [Some(hash.as_str()), None] {
                if let Ok(signed) = sigv4::parse(&method, &uri, &headers, body) {
                    let _ = signed.check_time(now);
                    let _ = signed.verify("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
                }
            }
        }
    });
}

#[test]
fn fuzz_ebs_router_and_json_bodies() {
    let seeds: &[&[u8]] = &[
        b"G/snapshots/snap-0123456789abcdef0/blocks?maxResults=100&startingBlockIndex=3&pageToken=abc",
        b"G/snapshots/snap-0123456789abcdef0/blocks/7?blockToken=AAAA",
        b"G/snapshots/snap-0123456789abcdef0/changedblocks?firstSnapshotId=snap-01234567",
        b"U/snapshots/snap-0123456789abcdef0/blocks/0",
        b"P/snapshots/completion/snap-0123456789abcdef0",
        br#"J{"VolumeSize":8,"ParentSnapshotId":"snap-0123456789abcdef0","Tags":[{"Key":"a","Value":"b"}],"Description":"d","ClientToken":"t","Timeout":60}"#,
        br#"J{"VolumeSize":1,"Encrypted":true,"KmsKeyArn":"arn:aws:kms:x"}"#,
    ];
    fuzz::run("ebs", seeds, 4096, |input| {
        let Some((&kind, rest)) = input.split_first() else { return };
        if kind == b'J' {
            let _ = cairn_gateway::ebs::start::parse(rest);
            return;
        }
        let method = match kind % 4 {
            0 => Method::GET,
            1 => Method::PUT,
            2 => Method::POST,
            _ => Method::DELETE,
        };
        let text = String::from_utf8_lossy(rest);
        let (path, query) = match text.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (text.as_ref(), None),
        };
        let _ = cairn_gateway::ebs::router::route(&method, path, query);
    });
}

/// Exports from a fixed name; the handle is the name.
struct One;

impl ExportResolver for One {
    type Handle = String;
    async fn resolve(&mut self, name: &str, _: Session) -> Option<(Export, String)> {
        (name == "vol-a").then(|| (Export::read_write(1 << 20), name.to_string()))
    }
    async fn list(&mut self) -> Option<Vec<String>> {
        None
    }
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut out = cairn_nbd::IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn fuzz_nbd_handshake_and_requests() {
    let hello = 3u32.to_be_bytes().to_vec(); // fixed newstyle, no zeroes
    let meta = cairn_nbd::structured::encode_meta_request("vol-a");
    let mut go = (5u32).to_be_bytes().to_vec();
    go.extend_from_slice(b"vol-a");
    go.extend_from_slice(&0u16.to_be_bytes());
    let seed_a: Vec<u8> =
        [hello.clone(), option(8, &[]), option(10, &meta), option(7, &go)].concat();
    let seed_b: Vec<u8> = [hello.clone(), option(3, &[]), option(1, b"vol-a")].concat();
    let seed_c: Vec<u8> = [hello, option(6, &go), option(5, &[]), option(2, &[])].concat();
    let mut request = 0x2560_9513u32.to_be_bytes().to_vec();
    request.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0,
    ]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let seeds: &[&[u8]] = &[&seed_a, &seed_b, &seed_c];
    fuzz::run("nbd-handshake", seeds, 4096, |input| {
        rt.block_on(async {
            let (client, mut server) = tokio::io::duplex(1 << 20);
            // The server's end is dropped when negotiation ends, so the
            // client's read sees EOF (a real connection closes or moves on).
            let serve = async move {
                let mut r = One;
                let _ = cairn_nbd::server_negotiate(&mut server, &mut r).await;
            };
            against(client, input, serve).await;
        })
    });
    fuzz::run("nbd-request", &[&request], 256, |input| {
        rt.block_on(async {
            let mut r = std::io::Cursor::new(input.to_vec());
            while let Ok(Some(_)) = cairn_nbd::read_request(&mut r).await {}
        })
    });
}

/// Sends `input` as a client on `client` while `serve` negotiates on the
/// other end, reads whatever comes back; fails if either side hangs.
async fn against(
    mut client: tokio::io::DuplexStream,
    input: &[u8],
    serve: impl Future<Output = ()>,
) {
    let talk = async {
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    };
    let both = async { tokio::join!(serve, talk) };
    assert!(tokio::time::timeout(Duration::from_secs(5), both).await.is_ok(), "the handshake hung");
}

/// A TLS acceptor with a throwaway self-signed certificate.
fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![cairn_proto::tls::SERVER_NAME.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let tls = cairn_proto::tls::ClusterTls::from_pem(cert.pem(), cert.pem(), key.serialize_pem());
    tokio_rustls::TlsAcceptor::from(tls.rustls_server(true).expect("server config"))
}

#[test]
fn fuzz_nbd_starttls() {
    let offer = cairn_nbd::TlsOffer { acceptor: acceptor(), required: true };
    let hello = 3u32.to_be_bytes().to_vec();
    let mut go = (5u32).to_be_bytes().to_vec();
    go.extend_from_slice(b"vol-a");
    go.extend_from_slice(&0u16.to_be_bytes());
    // STARTTLS then a ClientHello's first bytes; options refused for lack of
    // TLS; EXPORT_NAME in clear text (closed); STARTTLS with data (invalid).
    let hello_record = [0x16u8, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c, 0x03, 0x03];
    let seed_a: Vec<u8> = [hello.clone(), option(5, &[]), hello_record.to_vec()].concat();
    let seed_b: Vec<u8> = [hello.clone(), option(7, &go), option(3, &[]), option(2, &[])].concat();
    let seed_c: Vec<u8> = [hello.clone(), option(1, b"vol-a")].concat();
    let seed_d: Vec<u8> = [hello, option(5, b"x"), option(5, &[])].concat();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let seeds: &[&[u8]] = &[&seed_a, &seed_b, &seed_c, &seed_d];
    fuzz::run("nbd-starttls", seeds, 4096, |input| {
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(1 << 20);
            let serve = async {
                let mut r = One;
                let chosen = cairn_nbd::server_negotiate_tls(server, &mut r, Some(&offer)).await;
                // Required TLS: nothing is ever chosen in clear text.
                if let Ok(Some((_, conn))) = &chosen {
                    assert!(conn.is_tls(), "an export was opened in clear text");
                }
            };
            against(client, input, serve).await;
        })
    });
}

#[test]
fn fuzz_manifest_pages_and_roots() {
    let mut b = ManifestBuilder::new(64 << 20);
    for i in [0u64, 3, 77, 127] {
        b.set(i, Some(ChunkId::of(&i.to_le_bytes())));
    }
    let built = b.finish();
    let mut seeds: Vec<Vec<u8>> = vec![built.root.clone()];
    seeds.extend(built.pages.iter().map(|(_, p)| p.clone()));
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    fuzz::run("manifest", &seeds, 1 << 16, |input| {
        if let Ok(p) = ManifestPage::decode(input) {
            assert_eq!(ManifestPage::decode(&p.encode()).ok(), Some(p));
        }
        if let Ok(r) = ManifestRoot::decode(input) {
            let _ = r.blocks();
            assert_eq!(ManifestRoot::decode(&r.encode()).ok(), Some(r));
        }
    });
}

#[test]
fn fuzz_pack_records() {
    use cairn_chunk_node::store::chunk_store::ChunkStore;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 3000 + usize::from(i) * 700]).collect();
    let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::of(c)).collect();
    let pack = rt.block_on(async {
        let store = ChunkStore::open(dir.path()).await.expect("open");
        for c in &chunks {
            store.put(ChunkId::of(c), c.clone()).await.expect("put");
        }
        let (path, _) = store.locate(&ids[0]).expect("stored");
        store.close().expect("close");
        path
    });
    let name = pack.strip_prefix(dir.path()).expect("inside").to_path_buf();
    let original = std::fs::read(&pack).expect("pack");
    let mut n = 0u64;
    fuzz::run("pack-records", &[&original], original.len() + 8192, |input| {
        n += 1;
        let d = dir.path().join(format!("run-{n}"));
        let p = d.join(&name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, input).expect("write");
        rt.block_on(async {
            if let Ok(store) = ChunkStore::open(&d).await {
                for id in &ids {
                    if let Ok(Some(data)) = store.get(*id).await {
                        assert_eq!(ChunkId::of(&data), *id, "a damaged pack served wrong bytes");
                    }
                }
                let _ = store.close();
            }
        });
        let _ = std::fs::remove_dir_all(&d);
    });
}
