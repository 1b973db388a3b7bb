//! The server side of the fixed newstyle handshake: greet, then answer
//! options one at a time (each option has its own handler in [`options`])
//! until the client picks an export or leaves.
//!
//! What a server built on [`server_negotiate`] offers: NBD_OPT_GO, INFO,
//! EXPORT_NAME, LIST, ABORT, STRUCTURED_REPLY and LIST/SET_META_CONTEXT
//! (`base:allocation` only); STARTTLS, extended headers and unknown options
//! are refused with ERR_UNSUP, which every client tested falls back from.

mod options;
mod resolver;

pub use resolver::{ExportResolver, Negotiated};

use crate::error::NbdError;
use crate::structured::{OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT};
use crate::wire::{
    read_u32, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, MAX_OPTION_LEN, NBD_MAGIC, OPT_ABORT,
    OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_STRUCTURED_REPLY,
};
use options::{Haggle, Step};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    loop {
        let Some((option, data)) = read_option(stream).await? else { return Ok(None) };
        let step = match option {
            OPT_EXPORT_NAME => haggle.export_name(stream, resolver, data).await?,
            OPT_ABORT => options::abort(stream).await,
            OPT_LIST => haggle.list(stream, resolver, &data).await?,
            OPT_INFO | OPT_GO => haggle.info_or_go(stream, resolver, option, &data).await?,
            OPT_STRUCTURED_REPLY => haggle.structured_reply(stream, &data).await?,
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                haggle.meta_context(stream, option, &data).await?
            }
            // STARTTLS, extended headers and anything unknown: the data was
            // consumed by read_option.
            _ => options::unsupported(stream, option).await?,
        };
        if let Step::Done(chosen) = step {
            return Ok(chosen);
        }
    }
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
