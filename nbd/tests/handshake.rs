//! The handshake from both sides, over an in-memory duplex: a client and a
//! server built on this crate agree, bad input ends negotiation with the
//! right error, and `base:allocation` holds only for the export it names.

use cairn_nbd::structured::*;
use cairn_nbd::*;
use std::collections::BTreeMap;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Exports from a fixed table; the handle is the export's name.
struct Table(BTreeMap<String, u64>);

impl ExportResolver for Table {
    type Handle = String;
    async fn resolve(&mut self, name: &str, _: Session) -> Option<(Export, String)> {
        self.0.get(name).map(|&size| (Export::read_write(size), name.to_string()))
    }
    async fn list(&mut self) -> Option<Vec<String>> {
        Some(self.0.keys().cloned().collect())
    }
}

fn table() -> Table {
    Table(BTreeMap::from([("vol-a".to_string(), 1 << 20), ("vol-b".to_string(), 4096)]))
}

/// Sends one raw option; replies are read by the caller.
async fn send_option<S: AsyncWrite + Unpin>(s: &mut S, option: u32, data: &[u8]) {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out).await.expect("send option");
}

/// Reads one option reply: (option, type, data).
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> (u32, u32, Vec<u8>) {
    assert_eq!(s.read_u64().await.expect("magic"), REPLY_MAGIC);
    let opt = s.read_u32().await.expect("opt");
    let kind = s.read_u32().await.expect("kind");
    let len = s.read_u32().await.expect("len");
    let mut d = vec![0u8; len as usize];
    s.read_exact(&mut d).await.expect("data");
    (opt, kind, d)
}

async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, flags: u32) {
    assert_eq!(s.read_u64().await.expect("magic"), NBD_MAGIC);
    assert_eq!(s.read_u64().await.expect("ihaveopt"), IHAVEOPT);
    assert_eq!(s.read_u16().await.expect("flags"), 3);
    s.write_u32(flags).await.expect("client flags");
}

#[tokio::test]
async fn client_and_server_agree_then_transmit() {
    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut t = table();
        let got = server_negotiate(&mut s, &mut t).await.expect("negotiate");
        let (name, export, handle, session) = got.expect("export chosen");
        assert_eq!(session, Session::default());
        assert_eq!((name.as_str(), handle.as_str()), ("vol-a", "vol-a"));
        assert_eq!(export.size, 1 << 20);
        // Transmission: echo one request as a reply carrying its length in bytes.
        let req = read_request(&mut s).await.expect("read").expect("request");
        write_simple_reply(&mut s, 0, req.cookie, &vec![7u8; req.length as usize])
            .await
            .expect("reply");
        assert!(read_request(&mut s).await.expect("eof").is_none());
    });
    let export = client_negotiate(&mut c, "vol-a").await.expect("client");
    assert_eq!(export, Export::read_write(1 << 20));
    let req = Request { flags: 0, kind: CMD_READ, cookie: 42, offset: 0, length: 5 };
    write_request(&mut c, &req, &[]).await.expect("request");
    assert_eq!(read_simple_reply(&mut c).await.expect("reply"), (0, 42));
    let mut d = [0u8; 5];
    c.read_exact(&mut d).await.expect("payload");
    assert_eq!(d, [7u8; 5]);
    drop(c);
    server.await.expect("server task");
}

#[tokio::test]
async fn unknown_export_is_refused_to_the_client() {
    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut t = table();
        server_negotiate(&mut s, &mut t).await.expect("negotiate")
    });
    match client_negotiate(&mut c, "vol-nope").await {
        Err(NbdError::OptionRefused { code, .. }) => assert_eq!(code, REP_ERR_UNKNOWN),
        other => panic!("expected refusal, got {other:?}"),
    }
    // The client sent ABORT after the refusal: the server ends with None.
    assert!(server.await.expect("server task").is_none());
}

#[tokio::test]
async fn list_info_unsupported_options_and_export_name() {
    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut t = table();
        server_negotiate(&mut s, &mut t).await
    });
    // Client without NO_ZEROES: EXPORT_NAME must be followed by 124 zeroes.
    greet(&mut c, 1).await;

    // Meta contexts need structured replies first.
    let meta = structured::encode_meta_request("vol-b");
    send_option(&mut c, structured::OPT_SET_META_CONTEXT, &meta).await;
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_INVALID);
    send_option(&mut c, OPT_STRUCTURED_REPLY, &[]).await;
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    // LIST with no query lists base:allocation; SET selects it.
    let mut list = 5u32.to_be_bytes().to_vec();
    list.extend_from_slice(b"vol-b");
    list.extend_from_slice(&0u32.to_be_bytes());
    send_option(&mut c, structured::OPT_LIST_META_CONTEXT, &list).await;
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, d), (structured::REP_META_CONTEXT, structured::meta_context_reply(0)));
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    send_option(&mut c, structured::OPT_SET_META_CONTEXT, &meta).await;
    assert_eq!(read_reply(&mut c).await.1, structured::REP_META_CONTEXT);
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    send_option(&mut c, OPT_STARTTLS, &[]).await;
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_UNSUP);
    send_option(&mut c, 99, b"junk").await;
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_UNSUP);

    send_option(&mut c, OPT_LIST, &[]).await;
    let mut names = Vec::new();
    loop {
        let (opt, kind, d) = read_reply(&mut c).await;
        assert_eq!(opt, OPT_LIST);
        if kind == REP_ACK {
            assert!(d.is_empty());
            break;
        }
        assert_eq!(kind, REP_SERVER);
        names.push(String::from_utf8(d[4..].to_vec()).expect("utf8"));
    }
    assert_eq!(names, vec!["vol-a", "vol-b"]);

    // INFO for vol-b with a BLOCK_SIZE request: EXPORT, BLOCK_SIZE, ACK.
    let mut go = 5u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"vol-b");
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(&mut c, OPT_INFO, &go).await;
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, d.len()), (REP_INFO, 12));
    assert_eq!(u64::from_be_bytes(d[2..10].try_into().expect("8")), 4096);
    let (_, kind, d) = read_reply(&mut c).await;
    assert_eq!((kind, d.len()), (REP_INFO, 14));
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);

    // Malformed GO data is answered, not fatal.
    send_option(&mut c, OPT_GO, &[0, 0, 0, 9, b'x']).await;
    assert_eq!(read_reply(&mut c).await.1, REP_ERR_INVALID);

    send_option(&mut c, OPT_EXPORT_NAME, b"vol-b").await;
    let size = c.read_u64().await.expect("size");
    let flags = c.read_u16().await.expect("flags");
    let mut zeroes = [1u8; 124];
    c.read_exact(&mut zeroes).await.expect("zeroes");
    assert_eq!((size, flags), (4096, Export::read_write(0).flags));
    assert_eq!(zeroes, [0u8; 124]);
    let (name, _, _, session) = server.await.expect("task").expect("ok").expect("chosen");
    assert_eq!(name, "vol-b");
    assert_eq!(session, Session { structured: true, base_allocation: true });
}

#[tokio::test]
async fn abort_and_bad_input_end_negotiation() {
    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move { server_negotiate(&mut s, &mut table()).await });
    greet(&mut c, 3).await;
    send_option(&mut c, OPT_ABORT, &[]).await;
    assert_eq!(read_reply(&mut c).await.1, REP_ACK);
    assert!(server.await.expect("task").expect("ok").is_none());

    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move { server_negotiate(&mut s, &mut table()).await });
    greet(&mut c, 0x80).await;
    assert!(matches!(server.await.expect("task"), Err(NbdError::BadClientFlags(0x80))));

    let (mut c, mut s) = duplex(1 << 16);
    let server = tokio::spawn(async move { server_negotiate(&mut s, &mut table()).await });
    greet(&mut c, 3).await;
    let mut out = IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&OPT_GO.to_be_bytes());
    out.extend_from_slice(&u32::MAX.to_be_bytes());
    c.write_all(&out).await.expect("write");
    assert!(matches!(server.await.expect("task"), Err(NbdError::OptionTooLong { .. })));
}

#[test]
fn request_roundtrip_and_bad_magic() {
    let r = Request { flags: 3, kind: CMD_WRITE, cookie: 9, offset: 1 << 40, length: 512 };
    assert_eq!(Request::decode(&r.encode()).expect("decode"), r);
    let mut b = r.encode();
    b[0] = 0;
    assert!(Request::decode(&b).is_err());
}

struct One;

impl ExportResolver for One {
    type Handle = Session;
    async fn resolve(&mut self, name: &str, s: Session) -> Option<(Export, Session)> {
        (name == "vol-a").then_some((Export::read_write(1 << 20), s))
    }
    async fn list(&mut self) -> Option<Vec<String>> {
        None
    }
}

#[tokio::test]
async fn a_client_asking_for_base_allocation_gets_it_on_its_export_only() {
    for (want, asked_for) in [
        (Session { structured: true, base_allocation: true }, "vol-a"),
        (Session { structured: true, base_allocation: false }, "vol-a"),
        (Session::default(), "vol-a"),
    ] {
        let (mut c, mut s) = duplex(1 << 16);
        let server = tokio::spawn(async move { server_negotiate(&mut s, &mut One).await });
        client_negotiate_with(&mut c, asked_for, want).await.expect("client");
        let (_, _, seen, session) = server.await.expect("task").expect("ok").expect("chosen");
        assert_eq!((seen, session), (want, want));
    }
}
