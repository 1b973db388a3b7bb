//! The transmission phase on the wire: request headers read and written,
//! simple replies, and the vectored writer that sends a reply's header and
//! payload together without copying them into one buffer.

use crate::error::NbdError;
use crate::wire::{read_u32, read_u64, Request, SIMPLE_REPLY_MAGIC};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
