//! One handler per handshake option, over the state a client builds up
//! while it haggles (structured replies, the meta context it selected), and
//! the option replies they send.

use super::resolver::{ExportResolver, Negotiated};
use crate::error::NbdError;
use crate::structured::{self, Session};
use crate::wire::{
    Export, INFO_BLOCK_SIZE, INFO_EXPORT, INFO_NAME, MAX_ERROR_TEXT, MAX_PAYLOAD, OPT_GO,
    PREFERRED_BLOCK, REPLY_MAGIC, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP,
    REP_INFO, REP_SERVER,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What answering one option leads to.
pub(super) enum Step<H> {
    /// Go on reading options.
    Continue,
    /// The handshake is over: an export was chosen, or (`None`) the client
    /// left.
    Done(Option<Negotiated<H>>),
}

/// What the client negotiated so far.
pub(super) struct Haggle {
    /// The client asked for the 124 zero bytes after EXPORT_NAME to be left out.
    no_zeroes: bool,
    session: Session,
    /// The export SET_META_CONTEXT named: the selection holds for it only.
    meta_export: Option<String>,
}

impl Haggle {
    pub(super) fn new(no_zeroes: bool) -> Self {
        Haggle { no_zeroes, session: Session::default(), meta_export: None }
    }

    pub(super) fn no_zeroes(&self) -> bool {
        self.no_zeroes
    }

    /// What the client chose for `name`: `base:allocation` holds only if it
    /// was selected for that same export.
    fn session_for(&self, name: &str) -> Session {
        Session {
            structured: self.session.structured,
            base_allocation: self.session.base_allocation
                && self.meta_export.as_deref() == Some(name),
        }
    }

    /// NBD_OPT_EXPORT_NAME: the old way to choose, with no way to refuse but
    /// closing.
    pub(super) async fn export_name<S, R>(
        &self,
        stream: &mut S,
        resolver: &mut R,
        data: Vec<u8>,
    ) -> Result<Step<R::Handle>, NbdError>
    where
        S: AsyncWrite + Unpin + Send,
        R: ExportResolver,
    {
        let name = String::from_utf8(data).map_err(|_| NbdError::NameNotUtf8)?;
        let session = self.session_for(&name);
        let Some((export, handle)) = resolver.resolve(&name, session).await else {
            return Err(NbdError::UnknownExport(name));
        };
        let mut out = Vec::with_capacity(10 + 124);
        out.extend_from_slice(&export.size.to_be_bytes());
        out.extend_from_slice(&export.flags.to_be_bytes());
        if !self.no_zeroes {
            out.extend_from_slice(&[0u8; 124]);
        }
        stream.write_all(&out).await?;
        stream.flush().await?;
        Ok(Step::Done(Some((name, export, handle, session))))
    }

    /// NBD_OPT_LIST: every export's name, or ERR_UNSUP when the resolver
    /// does not list.
    pub(super) async fn list<S, R>(
        &self,
        stream: &mut S,
        resolver: &mut R,
        data: &[u8],
    ) -> Result<Step<R::Handle>, NbdError>
    where
        S: AsyncWrite + Unpin + Send,
        R: ExportResolver,
    {
        let option = crate::wire::OPT_LIST;
        if !data.is_empty() {
            send_error(stream, option, REP_ERR_INVALID, "LIST takes no data").await?;
            return Ok(Step::Continue);
        }
        let Some(names) = resolver.list().await else {
            send_error(stream, option, REP_ERR_UNSUP, "listing exports is not offered").await?;
            return Ok(Step::Continue);
        };
        for name in names {
            let mut d = Vec::with_capacity(4 + name.len());
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
            send_option_reply(stream, option, REP_SERVER, &d).await?;
        }
        send_option_reply(stream, option, REP_ACK, &[]).await?;
        Ok(Step::Continue)
    }

    /// NBD_OPT_INFO and NBD_OPT_GO: describe an export; GO also chooses it.
    pub(super) async fn info_or_go<S, R>(
        &self,
        stream: &mut S,
        resolver: &mut R,
        option: u32,
        data: &[u8],
    ) -> Result<Step<R::Handle>, NbdError>
    where
        S: AsyncWrite + Unpin + Send,
        R: ExportResolver,
    {
        let (name, infos) = match parse_go(data) {
            Ok(v) => v,
            Err(e) => {
                send_error(stream, option, REP_ERR_INVALID, &e.to_string()).await?;
                return Ok(Step::Continue);
            }
        };
        let chosen = self.session_for(&name);
        let Some((export, handle)) = resolver.resolve(&name, chosen).await else {
            let text = format!("no export named {name:?}");
            send_error(stream, option, REP_ERR_UNKNOWN, &text).await?;
            return Ok(Step::Continue);
        };
        send_infos(stream, option, &name, export, &infos).await?;
        send_option_reply(stream, option, REP_ACK, &[]).await?;
        if option == OPT_GO {
            return Ok(Step::Done(Some((name, export, handle, chosen))));
        }
        Ok(Step::Continue)
    }

    /// NBD_OPT_STRUCTURED_REPLY: always granted.
    pub(super) async fn structured_reply<S, H>(
        &mut self,
        stream: &mut S,
        data: &[u8],
    ) -> Result<Step<H>, NbdError>
    where
        S: AsyncWrite + Unpin + Send,
    {
        let option = crate::wire::OPT_STRUCTURED_REPLY;
        if !data.is_empty() {
            send_error(stream, option, REP_ERR_INVALID, "takes no data").await?;
            return Ok(Step::Continue);
        }
        self.session.structured = true;
        send_option_reply(stream, option, REP_ACK, &[]).await?;
        Ok(Step::Continue)
    }

    /// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: only
    /// `base:allocation` exists; a SET replaces the previous selection.
    pub(super) async fn meta_context<S, H>(
        &mut self,
        stream: &mut S,
        option: u32,
        data: &[u8],
    ) -> Result<Step<H>, NbdError>
    where
        S: AsyncWrite + Unpin + Send,
    {
        if !self.session.structured {
            let text = "negotiate structured replies first";
            send_error(stream, option, REP_ERR_INVALID, text).await?;
            return Ok(Step::Continue);
        }
        let (name, queries) = match structured::parse_meta_request(data) {
            Ok(v) => v,
            Err(e) => {
                send_error(stream, option, REP_ERR_INVALID, &e.to_string()).await?;
                return Ok(Step::Continue);
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
            self.session.base_allocation = selected;
            self.meta_export = Some(name);
        }
        send_option_reply(stream, option, REP_ACK, &[]).await?;
        Ok(Step::Continue)
    }
}

/// NBD_OPT_ABORT: acknowledged, and the handshake ends.
pub(super) async fn abort<S, H>(stream: &mut S) -> Step<H>
where
    S: AsyncWrite + Unpin,
{
    // The client may already be gone; its abort stands either way.
    if let Err(e) = send_option_reply(stream, crate::wire::OPT_ABORT, REP_ACK, &[]).await {
        tracing::debug!(error = %e, "client closed before the abort was acknowledged");
    }
    Step::Done(None)
}

/// An option refused with `code` and `text`; haggling goes on.
pub(super) async fn refuse<S, H>(
    stream: &mut S,
    option: u32,
    code: u32,
    text: &str,
) -> Result<Step<H>, NbdError>
where
    S: AsyncWrite + Unpin,
{
    send_error(stream, option, code, text).await?;
    Ok(Step::Continue)
}

/// NBD_OPT_STARTTLS accepted: the TLS handshake starts right after this.
pub(super) async fn ack<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
) -> Result<(), NbdError> {
    send_option_reply(stream, option, REP_ACK, &[]).await
}

/// Any option this server does not offer.
pub(super) async fn unsupported<S, H>(stream: &mut S, option: u32) -> Result<Step<H>, NbdError>
where
    S: AsyncWrite + Unpin,
{
    send_error(stream, option, REP_ERR_UNSUP, "option not supported").await?;
    Ok(Step::Continue)
}

/// The NBD_REP_INFO replies for a GO or INFO: NBD_INFO_EXPORT always, even
/// when not requested; the name and block sizes when asked for.
async fn send_infos<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
    name: &str,
    export: Export,
    infos: &[u16],
) -> Result<(), NbdError> {
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
    Ok(())
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

/// An error reply, its text cut to what clients accept.
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
