//! The NBD wire format, fixed newstyle: magics, option and reply codes,
//! transmission flags and commands, errnos, the export a handshake
//! announces and the transmission-phase request header. No I/O here beyond
//! the big-endian integer readers every leg shares.

use crate::error::NbdError;
use tokio::io::{AsyncRead, AsyncReadExt};

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
pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
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
pub(crate) const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest error text a client accepts in an option reply (libnbd's limit).
pub(crate) const MAX_ERROR_TEXT: usize = 4096;

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

pub(crate) async fn read_u16<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16, NbdError> {
    Ok(s.read_u16().await?)
}

pub(crate) async fn read_u32<S: AsyncRead + Unpin>(s: &mut S) -> Result<u32, NbdError> {
    Ok(s.read_u32().await?)
}

pub(crate) async fn read_u64<S: AsyncRead + Unpin>(s: &mut S) -> Result<u64, NbdError> {
    Ok(s.read_u64().await?)
}
