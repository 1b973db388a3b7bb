//! The NBD wire protocol, fixed newstyle: the handshake (server and client
//! sides) and the transmission-phase codec; structured replies and the
//! `base:allocation` meta context are in [`structured`].
//!
//! Shared by the chunk node (which serves its volumes) and the gateway's front
//! door (which negotiates with a client as a server, then with the volume's
//! host as a client, and splices the two). Everything works on any
//! `AsyncRead + AsyncWrite`, so tests run over an in-memory duplex.
//!
//! What a server built on [`server_negotiate`] offers: NBD_OPT_GO, INFO,
//! EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY and LIST/SET_META_CONTEXT
//! (`base:allocation` only); STARTTLS, extended headers and unknown options
//! are refused with ERR_UNSUP, which every client tested falls back from.
//! See `/work/shared/reference/nbd.md`.

pub mod structured;

use std::future::Future;
pub use structured::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `NBDMAGIC`, the first 8 bytes a server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, also the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

/// Info types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TF_HAS_FLAGS: u16 = 0x1;
pub const TF_READ_ONLY: u16 = 0x2;
pub const TF_SEND_FLUSH: u16 = 0x4;
pub const TF_SEND_FUA: u16 = 0x8;
pub const TF_SEND_TRIM: u16 = 0x20;
pub const TF_SEND_WRITE_ZEROES: u16 = 0x40;
pub const TF_CAN_MULTI_CONN: u16 = 0x100;

/// Command types.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1;
pub const CMD_FLAG_NO_HOLE: u16 = 2;
pub const CMD_FLAG_DF: u16 = 4;

/// Errors carried in replies (errno values fixed by the protocol).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Largest READ/WRITE payload a Cairn server accepts; advertised as the
/// maximum block size, and qemu's own cap.
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Preferred I/O size advertised in NBD_INFO_BLOCK_SIZE.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Longest option payload accepted during the handshake. Names are at most
/// 4096 bytes, so anything much larger is a broken or hostile client.
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest error text a client accepts in an option reply (libnbd's limit).
const MAX_ERROR_TEXT: usize = 4096;

/// What the handshake tells a client about an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Export {
    pub size: u64,
    /// Transmission flags; always includes [`TF_HAS_FLAGS`].
    pub flags: u16,
}

impl Export {
    /// A writable export with everything a Cairn volume supports: flush, FUA,
    /// trim, write-zeroes, and multi-conn (all connections share one file, and
    /// a flush covers every one of them).
    pub fn read_write(size: u64) -> Self {
        Export {
            size,
            flags: TF_HAS_FLAGS
                | TF_SEND_FLUSH
                | TF_SEND_FUA
                | TF_SEND_TRIM
                | TF_SEND_WRITE_ZEROES
                | TF_CAN_MULTI_CONN,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("nbd i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad {what} magic {found:#x}")]
    BadMagic { what: &'static str, found: u64 },
    #[error("client sent unsupported handshake flags {0:#x}")]
    BadClientFlags(u32),
    #[error("server does not speak fixed newstyle (flags {0:#x})")]
    NotFixedNewstyle(u16),
    #[error("option {option} carries {len} bytes, more than allowed")]
    OptionTooLong { option: u32, len: u32 },
    #[error("option data is malformed: {0}")]
    Malformed(&'static str),
    #[error("export name is not UTF-8")]
    NameNotUtf8,
    #[error("client asked for unknown export {0:?} with NBD_OPT_EXPORT_NAME")]
    UnknownExport(String),
    #[error("server refused option {option} with {code:#x}: {message}")]
    OptionRefused { option: u32, code: u32, message: String },
    #[error("server reply echoes option {found}, expected {expected}")]
    WrongOptionEcho { expected: u32, found: u32 },
    #[error("server acknowledged NBD_OPT_GO without sending NBD_INFO_EXPORT")]
    MissingExportInfo,
}

/// Maps export names to exports during server negotiation.
///
/// `Handle` is whatever the caller needs to serve the export once chosen (an
/// open volume, or an already negotiated upstream connection).
pub trait ExportResolver: Send {
    type Handle: Send;

    /// The export called `name`, or `None` when there is no such export.
    /// `session` is what the client negotiated so far (a proxy negotiates
    /// the same upstream).
    fn resolve(
        &mut self,
        name: &str,
        session: Session,
    ) -> impl Future<Output = Option<(Export, Self::Handle)>> + Send;

    /// Names for NBD_OPT_LIST, or `None` to refuse listing with ERR_UNSUP.
    fn list(&mut self) -> impl Future<Output = Option<Vec<String>>> + Send;
}

/// A chosen export: its name, what was advertised, the resolver's handle and
/// the reply style negotiated.
pub type Negotiated<H> = (String, Export, H, Session);

async fn read_u16<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16, NbdError> {
    Ok(s.read_u16().await?)
}

async fn read_u32<S: AsyncRead + Unpin>(s: &mut S) -> Result<u32, NbdError> {
    Ok(s.read_u32().await?)
}

async fn read_u64<S: AsyncRead + Unpin>(s: &mut S) -> Result<u64, NbdError> {
    Ok(s.read_u64().await?)
}

/// One option reply: magic, echoed option, type, length, data.
async fn send_option_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    kind: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

async fn send_error<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    code: u32,
    text: &str,
) -> Result<(), NbdError> {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    send_option_reply(s, option, code, &text.as_bytes()[..end]).await
}

/// Parses NBD_OPT_GO / NBD_OPT_INFO data: u32 name length, name, u16 count,
/// count x u16 info requests.
fn parse_go(data: &[u8]) -> Result<(String, Vec<u16>), NbdError> {
    let len_bytes: [u8; 4] =
        data.get(..4).and_then(|b| b.try_into().ok()).ok_or(NbdError::Malformed("short GO"))?;
    let name_len = u32::from_be_bytes(len_bytes) as usize;
    let name_end = 4usize.checked_add(name_len).ok_or(NbdError::Malformed("name length"))?;
    let name = data.get(4..name_end).ok_or(NbdError::Malformed("name past end"))?;
    let count_bytes: [u8; 2] = data
        .get(name_end..name_end + 2)
        .and_then(|b| b.try_into().ok())
        .ok_or(NbdError::Malformed("missing info count"))?;
    let count = u16::from_be_bytes(count_bytes) as usize;
    let reqs = &data[name_end + 2..];
    if reqs.len() != count * 2 {
        return Err(NbdError::Malformed("info request count does not match length"));
    }
    let name = String::from_utf8(name.to_vec()).map_err(|_| NbdError::NameNotUtf8)?;
    let infos = reqs.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    Ok((name, infos))
}

/// Runs the server side of the fixed newstyle handshake.
///
/// Returns the chosen export once the client sent NBD_OPT_GO (or
/// NBD_OPT_EXPORT_NAME) for a name the resolver knows; the stream is then in
/// the transmission phase. Returns `None` when the client aborted or closed
/// the connection during option haggling. An EXPORT_NAME for an unknown name
/// is an error: the protocol offers no way to refuse it but closing.
pub async fn server_negotiate<S, R>(
    stream: &mut S,
    resolver: &mut R,
) -> Result<Option<Negotiated<R::Handle>>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: ExportResolver,
{
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBD_MAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let client_flags = read_u32(stream).await?;
    if client_flags & !u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
        return Err(NbdError::BadClientFlags(client_flags));
    }
    let no_zeroes = client_flags & u32::from(FLAG_NO_ZEROES) != 0;
    let mut session = Session::default();
    // The export SET_META_CONTEXT named: the selection holds for it only.
    let mut meta_export: Option<String> = None;

    loop {
        let magic = match stream.read_u64().await {
            Ok(m) => m,
            // A client may simply hang up between options (e.g. after a failed GO).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if magic != IHAVEOPT {
            return Err(NbdError::BadMagic { what: "option", found: magic });
        }
        let option = read_u32(stream).await?;
        let len = read_u32(stream).await?;
        if len > MAX_OPTION_LEN {
            return Err(NbdError::OptionTooLong { option, len });
        }
        let mut data = vec![0u8; len as usize];
        stream.read_exact(&mut data).await?;

        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8(data).map_err(|_| NbdError::NameNotUtf8)?;
                let session = session_for(session, &meta_export, &name);
                let Some((export, handle)) = resolver.resolve(&name, session).await else {
                    return Err(NbdError::UnknownExport(name));
                };
                let mut out = Vec::with_capacity(10 + 124);
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&export.flags.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                stream.write_all(&out).await?;
                stream.flush().await?;
                return Ok(Some((name, export, handle, session)));
            }
            OPT_ABORT => {
                // The client may already be gone; its abort stands either way.
                if let Err(e) = send_option_reply(stream, option, REP_ACK, &[]).await {
                    tracing::debug!(error = %e, "client closed before the abort was acknowledged");
                }
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    send_error(stream, option, REP_ERR_INVALID, "LIST takes no data").await?;
                    continue;
                }
                match resolver.list().await {
                    Some(names) => {
                        for name in names {
                            let mut d = Vec::with_capacity(4 + name.len());
                            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                            d.extend_from_slice(name.as_bytes());
                            send_option_reply(stream, option, REP_SERVER, &d).await?;
                        }
                        send_option_reply(stream, option, REP_ACK, &[]).await?;
                    }
                    None => {
                        send_error(stream, option, REP_ERR_UNSUP, "listing exports is not offered")
                            .await?
                    }
                }
            }
            OPT_INFO | OPT_GO => {
                let (name, infos) = match parse_go(&data) {
                    Ok(v) => v,
                    Err(e) => {
                        send_error(stream, option, REP_ERR_INVALID, &e.to_string()).await?;
                        continue;
                    }
                };
                let chosen = session_for(session, &meta_export, &name);
                let Some((export, handle)) = resolver.resolve(&name, chosen).await else {
                    let text = format!("no export named {name:?}");
                    send_error(stream, option, REP_ERR_UNKNOWN, &text).await?;
                    continue;
                };
                // NBD_INFO_EXPORT always, even when not requested.
                let mut d = Vec::with_capacity(12);
                d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                d.extend_from_slice(&export.size.to_be_bytes());
                d.extend_from_slice(&export.flags.to_be_bytes());
                send_option_reply(stream, option, REP_INFO, &d).await?;
                if infos.contains(&INFO_NAME) {
                    let mut d = Vec::with_capacity(2 + name.len());
                    d.extend_from_slice(&INFO_NAME.to_be_bytes());
                    d.extend_from_slice(name.as_bytes());
                    send_option_reply(stream, option, REP_INFO, &d).await?;
                }
                if infos.contains(&INFO_BLOCK_SIZE) {
                    let mut d = Vec::with_capacity(14);
                    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                    d.extend_from_slice(&1u32.to_be_bytes());
                    d.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                    d.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                    send_option_reply(stream, option, REP_INFO, &d).await?;
                }
                send_option_reply(stream, option, REP_ACK, &[]).await?;
                if option == OPT_GO {
                    return Ok(Some((name, export, handle, chosen)));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    send_error(stream, option, REP_ERR_INVALID, "takes no data").await?;
                    continue;
                }
                session.structured = true;
                send_option_reply(stream, option, REP_ACK, &[]).await?;
            }
            structured::OPT_LIST_META_CONTEXT | structured::OPT_SET_META_CONTEXT => {
                if !session.structured {
                    let text = "negotiate structured replies first";
                    send_error(stream, option, REP_ERR_INVALID, text).await?;
                    continue;
                }
                let (name, queries) = match structured::parse_meta_request(&data) {
                    Ok(v) => v,
                    Err(e) => {
                        send_error(stream, option, REP_ERR_INVALID, &e.to_string()).await?;
                        continue;
                    }
                };
                let listing = option == structured::OPT_LIST_META_CONTEXT;
                let selected = (listing && queries.is_empty())
                    || queries.iter().any(|q| structured::query_matches(q, listing));
                if selected {
                    let id = if listing { 0 } else { structured::BASE_ALLOCATION_ID };
                    let d = structured::meta_context_reply(id);
                    send_option_reply(stream, option, structured::REP_META_CONTEXT, &d).await?;
                }
                if !listing {
                    // A SET replaces the previous selection.
                    session.base_allocation = selected;
                    meta_export = Some(name);
                }
                send_option_reply(stream, option, REP_ACK, &[]).await?;
            }
            _ => {
                // STARTTLS, extended headers and anything unknown: the data
                // was consumed above.
                send_error(stream, option, REP_ERR_UNSUP, "option not supported").await?;
            }
        }
    }
}

/// What the client chose for `name`: `base:allocation` holds only if it was
/// selected for that same export.
fn session_for(session: Session, meta_export: &Option<String>, name: &str) -> Session {
    Session {
        structured: session.structured,
        base_allocation: session.base_allocation && meta_export.as_deref() == Some(name),
    }
}

/// Runs the client side of the handshake: fixed newstyle, NBD_OPT_GO for
/// `name`, simple replies only. On success the stream is in the transmission
/// phase of that export.
pub async fn client_negotiate<S>(stream: &mut S, name: &str) -> Result<Export, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    client_negotiate_with(stream, name, Session::default()).await
}

/// Sends one option (no reply read).
async fn send_option<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

/// Reads one option reply to `option`: (type, data). An error type is
/// returned as [`NbdError::OptionRefused`].
async fn read_option_reply<S: AsyncRead + Unpin>(
    s: &mut S,
    option: u32,
) -> Result<(u32, Vec<u8>), NbdError> {
    let magic = read_u64(s).await?;
    if magic != REPLY_MAGIC {
        return Err(NbdError::BadMagic { what: "option reply", found: magic });
    }
    let echoed = read_u32(s).await?;
    if echoed != option {
        return Err(NbdError::WrongOptionEcho { expected: option, found: echoed });
    }
    let kind = read_u32(s).await?;
    let len = read_u32(s).await?;
    if len > MAX_OPTION_LEN {
        return Err(NbdError::OptionTooLong { option, len });
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).await?;
    if kind & 0x8000_0000 != 0 {
        let message = String::from_utf8_lossy(&data).into_owned();
        return Err(NbdError::OptionRefused { option, code: kind, message });
    }
    Ok((kind, data))
}

/// [`client_negotiate`], asking first for what `session` says: structured
/// replies, and `base:allocation` with the id Cairn servers give it. Fails
/// if the server does not grant exactly that.
pub async fn client_negotiate_with<S>(
    stream: &mut S,
    name: &str,
    session: Session,
) -> Result<Export, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let magic = read_u64(stream).await?;
    if magic != NBD_MAGIC {
        return Err(NbdError::BadMagic { what: "server", found: magic });
    }
    let magic = read_u64(stream).await?;
    if magic != IHAVEOPT {
        return Err(NbdError::BadMagic { what: "newstyle", found: magic });
    }
    let server_flags = read_u16(stream).await?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::NotFixedNewstyle(server_flags));
    }
    let client_flags = u32::from(FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES));
    stream.write_all(&client_flags.to_be_bytes()).await?;
    if session.structured {
        send_option(stream, OPT_STRUCTURED_REPLY, &[]).await?;
        if read_option_reply(stream, OPT_STRUCTURED_REPLY).await?.0 != REP_ACK {
            return Err(NbdError::Malformed("structured replies not acknowledged"));
        }
    }
    if session.base_allocation {
        let option = structured::OPT_SET_META_CONTEXT;
        send_option(stream, option, &structured::encode_meta_request(name)).await?;
        let (kind, data) = read_option_reply(stream, option).await?;
        let granted = structured::meta_context_reply(structured::BASE_ALLOCATION_ID);
        if kind != structured::REP_META_CONTEXT || data != granted {
            return Err(NbdError::Malformed("base:allocation not granted as expected"));
        }
        if read_option_reply(stream, option).await?.0 != REP_ACK {
            return Err(NbdError::Malformed("meta context selection not acknowledged"));
        }
    }

    let mut go = Vec::with_capacity(4 + name.len() + 2);
    go.extend_from_slice(&(name.len() as u32).to_be_bytes());
    go.extend_from_slice(name.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    send_option(stream, OPT_GO, &go).await?;

    let mut export = None;
    loop {
        let (kind, data) = match read_option_reply(stream, OPT_GO).await {
            Ok(reply) => reply,
            Err(e @ NbdError::OptionRefused { .. }) => {
                // Tell the server we are done; it may already have closed.
                if let Err(abort) = send_option(stream, OPT_ABORT, &[]).await {
                    tracing::debug!(error = %abort, "server closed before abort");
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match kind {
            REP_ACK => {
                if !data.is_empty() {
                    return Err(NbdError::Malformed("ACK with data"));
                }
                return export.ok_or(NbdError::MissingExportInfo);
            }
            REP_INFO => {
                if data.len() >= 2 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT {
                    if data.len() != 12 {
                        return Err(NbdError::Malformed("NBD_INFO_EXPORT length"));
                    }
                    let mut size = [0u8; 8];
                    size.copy_from_slice(&data[2..10]);
                    let flags = u16::from_be_bytes([data[10], data[11]]);
                    export = Some(Export { size: u64::from_be_bytes(size), flags });
                }
                // Other info types are optional and ignored.
            }
            _ => return Err(NbdError::Malformed("unexpected option reply type")),
        }
    }
}

/// A transmission-phase request header (the WRITE payload follows it on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    pub const LEN: usize = 28;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; Self::LEN]) -> Result<Self, NbdError> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != REQUEST_MAGIC {
            return Err(NbdError::BadMagic { what: "request", found: u64::from(magic) });
        }
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[8..16]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&b[16..24]);
        Ok(Request {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64::from_be_bytes(cookie),
            offset: u64::from_be_bytes(offset),
            length: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
        })
    }
}

/// Reads the next request header. `None` when the client closed the
/// connection cleanly between requests.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<Request>, NbdError> {
    let mut b = [0u8; Request::LEN];
    let mut filled = 0;
    while filled < b.len() {
        let n = s.read(&mut b[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        filled += n;
    }
    Request::decode(&b).map(Some)
}

/// Writes a request header and, for WRITE, its payload.
pub async fn write_request<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
    payload: &[u8],
) -> Result<(), NbdError> {
    s.write_all(&req.encode()).await?;
    if !payload.is_empty() {
        s.write_all(payload).await?;
    }
    s.flush().await?;
    Ok(())
}

/// The 16-byte simple reply header.
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Writes one whole simple reply and flushes: header, then `data` (only for
/// a successful READ).
pub async fn write_simple_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    error: u32,
    cookie: u64,
    data: &[u8],
) -> Result<(), NbdError> {
    send_simple_reply(s, error, cookie, data).await?;
    s.flush().await?;
    Ok(())
}

/// Writes one whole simple reply without flushing (a server answering a
/// queue of requests flushes once the queue drains). Header and payload go
/// out in vectored writes, without being copied into one buffer.
pub async fn send_simple_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    error: u32,
    cookie: u64,
    data: &[u8],
) -> Result<(), NbdError> {
    let header = encode_simple_reply(error, cookie);
    let data: &[u8] = if error == 0 { data } else { &[] };
    write_all_slices(s, &[&header, data]).await
}

/// Writes `parts` back to back in vectored writes (a reply's header and
/// payload leave together, without being copied into one buffer). No flush.
pub async fn write_all_slices<S: AsyncWrite + Unpin>(
    s: &mut S,
    parts: &[&[u8]],
) -> Result<(), NbdError> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = s.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Reads a simple reply header: `(error, cookie)`. The caller reads the READ
/// payload, whose length it knows from its request.
pub async fn read_simple_reply<S: AsyncRead + Unpin>(s: &mut S) -> Result<(u32, u64), NbdError> {
    let magic = read_u32(s).await?;
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(NbdError::BadMagic { what: "reply", found: u64::from(magic) });
    }
    let error = read_u32(s).await?;
    let cookie = read_u64(s).await?;
    Ok((error, cookie))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tokio::io::duplex;

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
        super::send_option(s, option, data).await.expect("send option");
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
}

#[cfg(test)]
mod structured_tests {
    use super::*;
    use tokio::io::duplex;

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
}
