//! The volume host over NBD, driven by real clients (qemu-img, qemu-io) and
//! by the protocol codec for the error cases clients never send.

mod common;

use cairn_core::nbd::{self, Request};
use common::{create_volume, ok, run, start, write_test_image};
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
