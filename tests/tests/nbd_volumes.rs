//! The volume host over NBD, driven by real clients (qemu-img, qemu-io) and
//! by the protocol codec for the error cases clients never send and for
//! structured replies and `base:allocation`.

use cairn_nbd::structured::{
    BASE_ALLOCATION_ID, CMD_BLOCK_STATUS, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS,
    REPLY_TYPE_ERROR, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE, STRUCTURED_REPLY_MAGIC,
};
use cairn_nbd::{self as nbd, Request, Session};
use cairn_tests::node::{create_volume, start, write_test_image};
use cairn_tests::{ok, run};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const VOL: &str = "vol-0123456789abcdef0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_convert_and_compare() -> anyhow::Result<()> {
    let n = start("chunk-a", "cairn-1a").await?;
    let size = 8usize << 20;
    create_volume(&n, VOL, size as u64).await?;
    let src = n.dir.path().join("src.raw");
    write_test_image(&src, size, 1)?;
    let src = src.to_str().expect("utf8 path");
    let url = n.nbd_url(VOL);
    ok("qemu-img", &["convert", "-n", "-W", "-f", "raw", "-O", "raw", src, &url]).await?;
    ok("qemu-img", &["compare", "-f", "raw", "-F", "raw", src, &url]).await?;

    // One changed byte makes them differ (exit 1).
    ok("qemu-io", &["-f", "raw", &url, "-c", "write -P 0x5a 100 1"]).await?;
    let (code, text) = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", src, &url]).await?;
    assert_eq!(code, 1, "{text}");

    let info = ok("qemu-img", &["info", "-f", "raw", &url]).await?;
    assert!(info.contains("8 MiB"), "{info}");
    n.node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_patterns_write_zeroes_and_discard() -> anyhow::Result<()> {
    let n = start("chunk-a", "cairn-1a").await?;
    create_volume(&n, VOL, 16 << 20).await?;
    let url = n.nbd_url(VOL);
    let cmds = [
        "write -P 0xab 0 1M",
        "read -P 0xab 0 1M",
        "write -P 0xcd 3M 2M",
        "write -z 1M 64k",
        "read -P 0 1M 64k",
        "read -P 0xab 960k 64k",
        "discard 3M 512k",
        "read -P 0 3M 512k",
        "read -P 0xcd 3584k 1536k",
        "flush",
        "read -P 0 15M 1M",
    ];
    let mut args = vec!["-f", "raw", url.as_str()];
    for c in &cmds {
        args.extend(["-c", c]);
    }
    let text = ok("qemu-io", &args).await?;
    assert!(!text.contains("Pattern verification failed"), "{text}");
    // A wrong pattern is caught: the checks above are real.
    let (code, text) = run("qemu-io", &["-f", "raw", &url, "-c", "read -P 0xab 3M 4k"]).await?;
    assert!(code != 0 || text.contains("Pattern verification failed"), "{text}");

    // Data survives reconnects and is in the volume file.
    ok("qemu-io", &["-f", "raw", &url, "-c", "read -P 0xcd 4M 1M"]).await?;
    let vol = n.node.volumes().get(VOL).expect("volume");
    assert_eq!(vol.read(0, 4).await?, vec![0xab; 4]);
    n.node.shutdown().await;
    Ok(())
}

async fn request(
    s: &mut TcpStream,
    kind: u16,
    flags: u16,
    offset: u64,
    length: u32,
    payload: &[u8],
) -> anyhow::Result<u32> {
    let req = Request { flags, kind, cookie: u64::from(kind) << 32 | offset, offset, length };
    nbd::write_request(s, &req, payload).await?;
    let (err, cookie) = nbd::read_simple_reply(s).await?;
    assert_eq!(cookie, req.cookie);
    Ok(err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_and_unknown_export() -> anyhow::Result<()> {
    let n = start("chunk-a", "cairn-1a").await?;
    let size = 1u64 << 20;
    create_volume(&n, VOL, size).await?;
    let addr = n.node.nbd_addr();

    let mut s = TcpStream::connect(addr).await?;
    match nbd::client_negotiate(&mut s, "vol-fffffffffffffffff").await {
        Err(nbd::NbdError::OptionRefused { code, .. }) => assert_eq!(code, nbd::REP_ERR_UNKNOWN),
        other => anyhow::bail!("expected ERR_UNKNOWN, got {other:?}"),
    }

    let mut s = TcpStream::connect(addr).await?;
    let export = nbd::client_negotiate(&mut s, VOL).await?;
    assert_eq!(export, nbd::Export::read_write(size));

    // Write past the end: ENOSPC, and its payload is consumed.
    assert_eq!(request(&mut s, nbd::CMD_WRITE, 0, size - 2, 4, &[1; 4]).await?, nbd::ENOSPC);
    // Read past the end, unknown command, unknown flag: EINVAL.
    assert_eq!(request(&mut s, nbd::CMD_READ, 0, size, 1, &[]).await?, nbd::EINVAL);
    assert_eq!(request(&mut s, 42, 0, 0, 0, &[]).await?, nbd::EINVAL);
    assert_eq!(request(&mut s, nbd::CMD_WRITE, 0x40, 0, 2, &[7, 7]).await?, nbd::EINVAL);
    assert_eq!(request(&mut s, nbd::CMD_READ, 0, u64::MAX, 2, &[]).await?, nbd::EINVAL);
    // The stream is still in sync: a FUA write and a read back.
    assert_eq!(request(&mut s, nbd::CMD_WRITE, nbd::CMD_FLAG_FUA, 10, 3, &[1, 2, 3]).await?, 0);
    assert_eq!(request(&mut s, nbd::CMD_READ, 0, 9, 5, &[]).await?, 0);
    let mut buf = [9u8; 5];
    s.read_exact(&mut buf).await?;
    assert_eq!(buf, [0, 1, 2, 3, 0]);
    assert_eq!(request(&mut s, nbd::CMD_FLUSH, 0, 0, 0, &[]).await?, 0);

    // Pipelined: several requests before reading any reply.
    for i in 0..8u64 {
        let req = Request {
            flags: 0,
            kind: nbd::CMD_WRITE,
            cookie: 100 + i,
            offset: i * 4096,
            length: 4096,
        };
        nbd::write_request(&mut s, &req, &vec![i as u8; 4096]).await?;
    }
    let mut cookies = Vec::new();
    for _ in 0..8 {
        let (err, cookie) = nbd::read_simple_reply(&mut s).await?;
        assert_eq!(err, 0);
        cookies.push(cookie);
    }
    cookies.sort();
    assert_eq!(cookies, (100..108).collect::<Vec<_>>());
    let disc = Request { flags: 0, kind: nbd::CMD_DISC, cookie: 0, offset: 0, length: 0 };
    nbd::write_request(&mut s, &disc, &[]).await?;
    assert_eq!(s.read(&mut buf).await?, 0, "server closes after DISC");

    // Garbage instead of a request closes that connection only.
    let mut bad = TcpStream::connect(addr).await?;
    nbd::client_negotiate(&mut bad, VOL).await?;
    tokio::io::AsyncWriteExt::write_all(&mut bad, &[0xff; 28]).await?;
    assert_eq!(bad.read(&mut buf).await?, 0);
    let mut again = TcpStream::connect(addr).await?;
    nbd::client_negotiate(&mut again, VOL).await?;
    n.node.shutdown().await;
    Ok(())
}

/// Reads one structured reply chunk: (flags, type, cookie, payload).
async fn read_chunk(s: &mut TcpStream) -> anyhow::Result<(u16, u16, u64, Vec<u8>)> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).await?;
    anyhow::ensure!(u32::from_be_bytes(h[0..4].try_into()?) == STRUCTURED_REPLY_MAGIC);
    let len = u32::from_be_bytes(h[16..20].try_into()?) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    let flags = u16::from_be_bytes([h[4], h[5]]);
    let kind = u16::from_be_bytes([h[6], h[7]]);
    Ok((flags, kind, u64::from_be_bytes(h[8..16].try_into()?), payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_allocation_and_structured_reads_leave_holes_out() -> anyhow::Result<()> {
    const K: u64 = 1024;
    let n = start("chunk-a", "cairn-1a").await?;
    create_volume(&n, VOL, 4 << 20).await?;
    let url = n.nbd_url(VOL);
    ok("qemu-io", &["-f", "raw", &url, "-c", "write -P 0xab 512k 512k"]).await?;

    // A real client's view: qemu-img map asks BLOCK_STATUS.
    let map = ok("qemu-img", &["map", "--output=json", "-f", "raw", &url]).await?;
    let extents: Vec<serde_json::Value> = serde_json::from_str(&map)?;
    let seen: Vec<(u64, u64, bool)> = extents
        .iter()
        .map(|e| {
            (e["start"].as_u64().unwrap_or(0), e["length"].as_u64().unwrap_or(0), e["data"] == true)
        })
        .collect();
    assert_eq!(
        seen,
        vec![(0, 512 * K, false), (512 * K, 512 * K, true), (K * K, 3 * K * K, false)]
    );

    // The codec's view: extents, then a read whose holes come as hole chunks.
    let mut s = TcpStream::connect(n.node.nbd_addr()).await?;
    let session = Session { structured: true, base_allocation: true };
    nbd::client_negotiate_with(&mut s, VOL, session).await?;
    let req = Request { flags: 0, kind: CMD_BLOCK_STATUS, cookie: 1, offset: 0, length: 3 << 20 };
    nbd::write_request(&mut s, &req, &[]).await?;
    let (flags, kind, cookie, p) = read_chunk(&mut s).await?;
    assert_eq!((flags, kind, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 1));
    let words: Vec<u32> =
        p.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap_or_default())).collect();
    assert_eq!(words, vec![BASE_ALLOCATION_ID, 512 * 1024, 3, 512 * 1024, 0, 2 << 20, 3]);

    let req = Request { flags: 0, kind: nbd::CMD_READ, cookie: 2, offset: 0, length: 1536 << 10 };
    nbd::write_request(&mut s, &req, &[]).await?;
    let (flags, kind, _, p) = read_chunk(&mut s).await?;
    assert_eq!(
        (flags, kind, &p[..]),
        (0, REPLY_TYPE_OFFSET_HOLE, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0][..])
    );
    let (flags, kind, _, p) = read_chunk(&mut s).await?;
    assert_eq!((flags, kind), (0, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(u64::from_be_bytes(p[..8].try_into()?), 512 * K);
    assert!(p.len() == 8 + 512 * 1024 && p[8..].iter().all(|b| *b == 0xab));
    let (flags, kind, _, _) = read_chunk(&mut s).await?;
    assert_eq!((flags, kind), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE));

    // Without base:allocation, BLOCK_STATUS is refused.
    let mut plain = TcpStream::connect(n.node.nbd_addr()).await?;
    let structured_only = Session { structured: true, base_allocation: false };
    nbd::client_negotiate_with(&mut plain, VOL, structured_only).await?;
    let req = Request { flags: 0, kind: CMD_BLOCK_STATUS, cookie: 3, offset: 0, length: 4096 };
    nbd::write_request(&mut plain, &req, &[]).await?;
    let (_, kind, _, p) = read_chunk(&mut plain).await?;
    assert_eq!((kind, u32::from_be_bytes(p[..4].try_into()?)), (REPLY_TYPE_ERROR, nbd::EINVAL));
    n.node.shutdown().await;
    Ok(())
}
