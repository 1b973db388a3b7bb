//! The client side of the fixed newstyle handshake: what the gateway's front
//! door speaks to a volume host, and what tests speak to either.

use crate::error::NbdError;
use crate::structured::{self, Session};
use crate::tls::Conn;
use crate::wire::{
    read_u16, read_u32, read_u64, Export, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT,
    INFO_EXPORT, MAX_OPTION_LEN, NBD_MAGIC, OPT_ABORT, OPT_GO, OPT_STARTTLS, OPT_STRUCTURED_REPLY,
    REPLY_MAGIC, REP_ACK, REP_INFO,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Runs the client side of the handshake: fixed newstyle, NBD_OPT_GO for
/// `name`, simple replies only. On success the stream is in the transmission
/// phase of that export.
pub async fn client_negotiate<S>(stream: &mut S, name: &str) -> Result<Export, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    client_negotiate_with(stream, name, Session::default()).await
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
    greet(stream).await?;
    haggle(stream, name, session).await
}

/// [`client_negotiate_with`] over TLS: greets in clear text, sends
/// NBD_OPT_STARTTLS, runs the TLS handshake with `connector` for
/// `server_name`, then haggles inside TLS. Hands the socket back as a
/// [`Conn`] in the transmission phase.
pub async fn client_negotiate_tls<S>(
    mut stream: S,
    name: &str,
    session: Session,
    connector: &TlsConnector,
    server_name: ServerName<'static>,
) -> Result<(Export, Conn<S>), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    greet(&mut stream).await?;
    send_option(&mut stream, OPT_STARTTLS, &[]).await?;
    if read_option_reply(&mut stream, OPT_STARTTLS).await?.0 != REP_ACK {
        return Err(NbdError::Malformed("STARTTLS not acknowledged"));
    }
    let tls = connector.connect(server_name, stream).await.map_err(NbdError::Tls)?;
    let mut conn = Conn::Client(Box::new(tls));
    let export = haggle(&mut conn, name, session).await?;
    Ok((export, conn))
}

/// Everything after the greeting: what `session` asks for, then GO.
async fn haggle<S>(stream: &mut S, name: &str, session: Session) -> Result<Export, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if session.structured {
        send_option(stream, OPT_STRUCTURED_REPLY, &[]).await?;
        if read_option_reply(stream, OPT_STRUCTURED_REPLY).await?.0 != REP_ACK {
            return Err(NbdError::Malformed("structured replies not acknowledged"));
        }
    }
    if session.base_allocation {
        select_base_allocation(stream, name).await?;
    }
    go(stream, name).await
}

/// Reads the server's greeting and answers with the client's flags.
async fn greet<S>(stream: &mut S) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
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
    Ok(())
}

/// NBD_OPT_SET_META_CONTEXT for `base:allocation` on `name`, granted under
/// the id every Cairn server gives it.
async fn select_base_allocation<S>(stream: &mut S, name: &str) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
    Ok(())
}

/// NBD_OPT_GO for `name`: the export's size and flags from NBD_INFO_EXPORT.
/// A refusal is answered with NBD_OPT_ABORT before it is returned.
async fn go<S>(stream: &mut S, name: &str) -> Result<Export, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut data = Vec::with_capacity(4 + name.len() + 2);
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    send_option(stream, OPT_GO, &data).await?;

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
