//! Structured replies and the `base:allocation` meta context: what lets a
//! client ask which ranges of a volume are holes (NBD_CMD_BLOCK_STATUS) and
//! receive reads with their holes left out (NBD_REPLY_TYPE_OFFSET_HOLE), so
//! that `qemu-img compare` or `convert` skip zeroes instead of carrying them.
//!
//! A client opts in during the handshake: NBD_OPT_STRUCTURED_REPLY, then
//! NBD_OPT_SET_META_CONTEXT naming `base:allocation`. What it chose is a
//! [`Session`]. Clients that do neither keep simple replies.

use crate::error::NbdError;
use crate::wire::EINVAL;

pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Option reply naming a meta context: u32 id, then the name.
pub const REP_META_CONTEXT: u32 = 4;

/// The one meta context served, and the id Cairn servers always give it (the
/// gateway's door relies on the volume host choosing the same id).
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const BASE_ALLOCATION_ID: u32 = 1;

pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_REQ_ONE: u16 = 8;

pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = 0x8001;

/// `base:allocation` states: a hole that reads as zeroes.
pub const STATE_HOLE: u32 = 1;
pub const STATE_ZERO: u32 = 2;

/// What a client negotiated beyond the baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// NBD_OPT_STRUCTURED_REPLY was acknowledged.
    pub structured: bool,
    /// `base:allocation` is selected (only with structured replies).
    pub base_allocation: bool,
}

/// NBD_OPT_LIST/SET_META_CONTEXT data: export name, then the queries.
pub fn parse_meta_request(data: &[u8]) -> Result<(String, Vec<String>), NbdError> {
    fn take<'a>(d: &mut &'a [u8], n: usize) -> Result<&'a [u8], NbdError> {
        if d.len() < n {
            return Err(NbdError::Malformed("meta context request past end"));
        }
        let (head, rest) = d.split_at(n);
        *d = rest;
        Ok(head)
    }
    fn string(d: &mut &[u8]) -> Result<String, NbdError> {
        let len = u32::from_be_bytes(take(d, 4)?.try_into().unwrap_or_default()) as usize;
        String::from_utf8(take(d, len)?.to_vec()).map_err(|_| NbdError::NameNotUtf8)
    }
    let mut d = data;
    let name = string(&mut d)?;
    let count = u32::from_be_bytes(take(&mut d, 4)?.try_into().unwrap_or_default());
    let queries = (0..count).map(|_| string(&mut d)).collect::<Result<Vec<_>, _>>()?;
    if !d.is_empty() {
        return Err(NbdError::Malformed("meta context request has trailing bytes"));
    }
    Ok((name, queries))
}

/// NBD_OPT_SET_META_CONTEXT data selecting `base:allocation` on `name`.
pub fn encode_meta_request(name: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(12 + name.len() + BASE_ALLOCATION.len());
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
    d.extend_from_slice(BASE_ALLOCATION.as_bytes());
    d
}

/// Whether a query names `base:allocation`. A LIST query of the namespace
/// alone (`base:`) matches it too.
pub fn query_matches(query: &str, listing: bool) -> bool {
    query == BASE_ALLOCATION || (listing && query == "base:")
}

/// The REP_META_CONTEXT payload for `base:allocation`: under `id` for a
/// SET, 0 for a LIST (as the protocol asks).
pub fn meta_context_reply(id: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + BASE_ALLOCATION.len());
    d.extend_from_slice(&id.to_be_bytes());
    d.extend_from_slice(BASE_ALLOCATION.as_bytes());
    d
}

/// A structured reply chunk header (20 bytes); `len` counts the payload.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// One piece of a structured READ reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPiece {
    Data { offset: u64, data: Vec<u8> },
    Hole { offset: u64, len: u32 },
}

/// The bytes of a whole structured READ reply: its pieces in order, the last
/// one flagged DONE (an empty read is one NONE chunk).
/// Takes the pieces: their data is moved into the reply, not copied.
pub fn encode_read(cookie: u64, pieces: Vec<ReadPiece>) -> Vec<Vec<u8>> {
    if pieces.is_empty() {
        return vec![chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0).to_vec()];
    }
    let last = pieces.len() - 1;
    let mut out = Vec::with_capacity(pieces.len() * 2);
    for (n, p) in pieces.into_iter().enumerate() {
        let flags = if n == last { REPLY_FLAG_DONE } else { 0 };
        match p {
            ReadPiece::Data { offset, data } => {
                let mut h =
                    chunk_header(flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + data.len() as u32)
                        .to_vec();
                h.extend_from_slice(&offset.to_be_bytes());
                out.push(h);
                out.push(data);
            }
            ReadPiece::Hole { offset, len } => {
                let mut h = chunk_header(flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12).to_vec();
                h.extend_from_slice(&offset.to_be_bytes());
                h.extend_from_slice(&len.to_be_bytes());
                out.push(h);
            }
        }
    }
    out
}

/// A BLOCK_STATUS reply for `base:allocation`: (length, state) extents.
pub fn encode_block_status(cookie: u64, extents: &[(u32, u32)]) -> Vec<u8> {
    let len = 4 + 8 * extents.len() as u32;
    let mut b = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len).to_vec();
    b.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
    for (length, state) in extents {
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&state.to_be_bytes());
    }
    b
}

/// A final error chunk (no message).
pub fn encode_error(cookie: u64, error: u32) -> Vec<u8> {
    let error = if error == 0 { EINVAL } else { error };
    let mut b = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 6).to_vec();
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_requests_roundtrip_and_bad_ones_are_refused() {
        let d = encode_meta_request("vol-a");
        assert_eq!(parse_meta_request(&d).unwrap(), ("vol-a".into(), vec![BASE_ALLOCATION.into()]));
        assert!(parse_meta_request(&d[..d.len() - 1]).is_err());
        let mut extra = d.clone();
        extra.push(0);
        assert!(parse_meta_request(&extra).is_err());
        assert!(query_matches("base:", true) && !query_matches("base:", false));
        assert!(!query_matches("qemu:dirty-bitmap:x", true));
    }

    #[test]
    fn read_replies_flag_only_their_last_chunk_done() {
        let pieces = [
            ReadPiece::Data { offset: 0, data: vec![7; 3] },
            ReadPiece::Hole { offset: 3, len: 5 },
        ];
        let out = encode_read(9, pieces.to_vec());
        assert_eq!(out.len(), 3);
        assert_eq!(u16::from_be_bytes([out[0][4], out[0][5]]), 0);
        assert_eq!(u16::from_be_bytes([out[0][6], out[0][7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u32::from_be_bytes(out[0][16..20].try_into().unwrap()), 11);
        assert_eq!(out[1], vec![7; 3]);
        assert_eq!(u16::from_be_bytes([out[2][4], out[2][5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([out[2][6], out[2][7]]), REPLY_TYPE_OFFSET_HOLE);
        assert_eq!(&out[2][20..], &[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 5]);
        let none = encode_read(9, Vec::new());
        assert_eq!(u16::from_be_bytes([none[0][6], none[0][7]]), REPLY_TYPE_NONE);
    }
}
