//! The server side of the fixed newstyle handshake: greet, then answer
//! options one at a time (each option has its own handler in [`options`])
//! until the client picks an export or leaves.
//!
//! What a server built on [`server_negotiate`] offers: NBD_OPT_GO, INFO,
//! EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY and LIST/SET_META_CONTEXT
//! (`base:allocation` only); extended headers and unknown options are
//! refused with ERR_UNSUP, which every client tested falls back from.
//! STARTTLS is offered by [`server_negotiate_tls`] (and refused with
//! ERR_UNSUP by [`server_negotiate`]); with TLS required, every option but
//! STARTTLS and ABORT is refused with ERR_TLS_REQD until TLS is on.

mod options;
mod resolver;

pub use resolver::{ExportResolver, Negotiated};

use crate::error::NbdError;
use crate::structured::{OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT};
use crate::tls::Conn;
use crate::wire::{
    read_u32, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, MAX_OPTION_LEN, NBD_MAGIC, OPT_ABORT,
    OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_STARTTLS, OPT_STRUCTURED_REPLY,
    REP_ERR_INVALID, REP_ERR_TLS_REQD,
};
use options::{Haggle, Step};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

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
    let mut haggle = greet(stream).await?;
    haggle_options(stream, resolver, &mut haggle, false).await
}

/// TLS a server offers: how it accepts, and whether clear text is refused.
#[derive(Clone)]
pub struct TlsOffer {
    pub acceptor: TlsAcceptor,
    /// Refuse to choose an export before NBD_OPT_STARTTLS.
    pub required: bool,
}

/// [`server_negotiate`] offering NBD_OPT_STARTTLS with `tls`: takes the
/// socket, and hands it back as a [`Conn`], TLS if the client started it.
/// Without `tls` it is [`server_negotiate`] on an owned socket.
pub async fn server_negotiate_tls<S, R>(
    mut stream: S,
    resolver: &mut R,
    tls: Option<&TlsOffer>,
) -> Result<Option<(Negotiated<R::Handle>, Conn<S>)>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: ExportResolver,
{
    let mut haggle = greet(&mut stream).await?;
    let Some(offer) = tls else {
        let chosen = haggle_options(&mut stream, resolver, &mut haggle, false).await?;
        return Ok(chosen.map(|c| (c, Conn::Plain(stream))));
    };
    // Clear text until STARTTLS: options are answered here as usual unless
    // TLS is required.
    loop {
        let Some((option, data)) = read_option(&mut stream).await? else { return Ok(None) };
        if option == OPT_STARTTLS {
            if !data.is_empty() {
                options::refuse::<_, ()>(
                    &mut stream,
                    option,
                    REP_ERR_INVALID,
                    "STARTTLS takes no data",
                )
                .await?;
                continue;
            }
            options::ack(&mut stream, option).await?;
            let tls = offer.acceptor.accept(stream).await.map_err(NbdError::Tls)?;
            let mut conn = Conn::Server(Box::new(tls));
            // What was negotiated in clear text does not carry over.
            let mut haggle = Haggle::new(haggle.no_zeroes());
            let chosen = haggle_options(&mut conn, resolver, &mut haggle, true).await?;
            return Ok(chosen.map(|c| (c, conn)));
        }
        let step = if offer.required && option != OPT_ABORT {
            if option == OPT_EXPORT_NAME {
                // EXPORT_NAME cannot be refused but by closing.
                return Err(NbdError::TlsRequired);
            }
            options::refuse(
                &mut stream,
                option,
                REP_ERR_TLS_REQD,
                "TLS is required: send NBD_OPT_STARTTLS first",
            )
            .await?
        } else {
            answer(&mut stream, resolver, &mut haggle, option, data).await?
        };
        if let Step::Done(chosen) = step {
            return Ok(chosen.map(|c| (c, Conn::Plain(stream))));
        }
    }
}

/// Answers options until the client picks an export or leaves. With
/// `tls_on` (the connection went through STARTTLS) a second STARTTLS is
/// invalid.
async fn haggle_options<S, R>(
    stream: &mut S,
    resolver: &mut R,
    haggle: &mut Haggle,
    tls_on: bool,
) -> Result<Option<Negotiated<R::Handle>>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: ExportResolver,
{
    loop {
        let Some((option, data)) = read_option(stream).await? else { return Ok(None) };
        let step = if tls_on && option == OPT_STARTTLS {
            options::refuse(stream, option, REP_ERR_INVALID, "TLS is already on").await?
        } else {
            answer(stream, resolver, haggle, option, data).await?
        };
        if let Step::Done(chosen) = step {
            return Ok(chosen);
        }
    }
}

/// Answers one option.
async fn answer<S, R>(
    stream: &mut S,
    resolver: &mut R,
    haggle: &mut Haggle,
    option: u32,
    data: Vec<u8>,
) -> Result<Step<R::Handle>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    R: ExportResolver,
{
    Ok(match option {
        OPT_EXPORT_NAME => haggle.export_name(stream, resolver, data).await?,
        OPT_ABORT => options::abort(stream).await,
        OPT_LIST => haggle.list(stream, resolver, &data).await?,
        OPT_INFO | OPT_GO => haggle.info_or_go(stream, resolver, option, &data).await?,
        OPT_STRUCTURED_REPLY => haggle.structured_reply(stream, &data).await?,
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            haggle.meta_context(stream, option, &data).await?
        }
        // STARTTLS here (no TLS offered, or TLS already on), extended
        // headers and anything unknown: the data was consumed by read_option.
        _ => options::unsupported(stream, option).await?,
    })
}

/// Sends the greeting and reads the client's flags.
async fn greet<S>(stream: &mut S) -> Result<Haggle, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
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
    Ok(Haggle::new(client_flags & u32::from(FLAG_NO_ZEROES) != 0))
}

/// Reads the next option: `(option, data)`, or `None` when the client hung
/// up between options (e.g. after a failed GO).
async fn read_option<S>(stream: &mut S) -> Result<Option<(u32, Vec<u8>)>, NbdError>
where
    S: AsyncRead + Unpin,
{
    let magic = match stream.read_u64().await {
        Ok(m) => m,
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
    Ok(Some((option, data)))
}
