//! The pack file format, and reading packs.
//!
//! Record: magic (4 bytes), payload length (4, LE), chunk id (32), payload,
//! zeros up to the next multiple of
//! [`ALIGN`](crate::disk::direct::ALIGN). The id is the BLAKE3 of the
//! payload, so every record checks itself. Every record starts on an
//! aligned offset, so a walk that meets a damaged header resynchronises at
//! the next aligned offset holding a record that verifies ([`scan_pack`]):
//! only the damaged record is lost. Records are aligned so that a
//! batch is one `O_DIRECT` write (see [`crate::store::committer`]). The pack
//! being appended is `NNNNNNNN.open`, a sealed one `NNNNNNNN.pack`.
//!
//! Packs are written with `O_DIRECT`, so their bytes are not in the page
//! cache; a buffered read would fill it with pages read once (a restore
//! reads each chunk once) and pay a page allocation per 4 KiB, which on a VM
//! is the dearest part of the read. So a record is read with one aligned
//! direct read into a per-thread buffer. Where the file system does not take
//! `O_DIRECT`, reads are buffered.

use crate::disk::direct::{align_up, AlignedBuf, ALIGN};
use crate::error::ChunkNodeError;
use cairn_core::ChunkId;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4b50_4331; // "1CPK"
/// Largest chunk a store takes (blocks are 512 KiB; manifest pages smaller).
pub const MAX_CHUNK: usize = 16 << 20;
/// Bytes of a record header (magic, length, chunk id).
pub(crate) const HEADER: u64 = 40;

/// Where a chunk's record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    pub(crate) pack: u32,
    /// Offset of the record header.
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The file of pack `n`: sealed, or still being appended.
pub(crate) fn pack_path(dir: &Path, n: u32, sealed: bool) -> PathBuf {
    dir.join(format!("{n:08}.{}", if sealed { "pack" } else { "open" }))
}

/// The header of a record of `len` payload bytes under `id`.
pub(crate) fn header(id: &ChunkId, len: usize) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..].copy_from_slice(&id.0);
    h
}

/// Decodes a record header: `(id, payload length)`, or `None` if it is not one.
pub(crate) fn parse_header(h: &[u8; HEADER as usize]) -> Option<(ChunkId, u32)> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut id = [0u8; 32];
    id.copy_from_slice(&h[8..]);
    (magic == MAGIC && len as usize <= MAX_CHUNK).then_some((ChunkId(id), len))
}

/// How [`scan_pack`] walks a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Headers only (a sealed pack after a clean stop). A damaged header is
    /// skipped: the walk resynchronises at the next aligned offset holding a
    /// record that verifies.
    Headers,
    /// Every payload hashed (a sealed pack after an unclean stop): a record
    /// that does not hash to its id is reported corrupt, and the walk
    /// resynchronises after it as after a damaged header.
    Verify,
    /// Every payload hashed, as [`Scan::Verify`], and the pack cut after the
    /// last record that verifies (a pack a crash left open: its tail may be
    /// torn, never acknowledged). A bad record or damage with records that
    /// verify after it is rot, not a torn write: those later records were
    /// acknowledged, so they are kept and the bad one is reported corrupt.
    CutTail,
}

/// What [`scan_pack`] found.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// Records whose header is whole (and, when hashed, whose payload
    /// verifies), in order.
    pub(crate) records: Vec<(ChunkId, Loc)>,
    /// Records with a whole header whose payload does not hash to its id.
    pub(crate) corrupt: Vec<(ChunkId, Loc)>,
    /// Bytes skipped as damaged (no record could be read there).
    pub(crate) damaged: u64,
}

/// The records of one pack, in order (see [`Scan`]).
pub(crate) fn scan_pack(
    file: &File,
    path: &Path,
    pack: u32,
    mode: Scan,
) -> Result<Scanned, ChunkNodeError> {
    let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", path, e))?.len();
    let mut out = Scanned::default();
    let mut pos = 0u64;
    // Where the damaged span being skipped began.
    let mut lost: Option<u64> = None;
    // Looking for a record that verifies after damage.
    let mut resync = false;
    // Where the last record that verified ends.
    let mut end_valid = 0u64;
    let mut h = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while pos + HEADER <= size {
        file.read_exact_at(&mut h, pos).map_err(|e| ChunkNodeError::io("read", path, e))?;
        let parsed = parse_header(&h).filter(|(_, len)| pos + HEADER + u64::from(*len) <= size);
        let Some((id, len)) = parsed else {
            lost.get_or_insert(pos);
            resync = true;
            pos += ALIGN;
            continue;
        };
        let loc = Loc { pack, offset: pos, len };
        if mode != Scan::Headers || resync {
            payload.resize(len as usize, 0);
            file.read_exact_at(&mut payload, pos + HEADER)
                .map_err(|e| ChunkNodeError::io("read", path, e))?;
            if ChunkId::of(&payload) != id {
                if resync {
                    // A header-like run of bytes inside damage: look on.
                    lost.get_or_insert(pos);
                } else {
                    out.corrupt.push((id, loc));
                }
                resync = true;
                pos += ALIGN;
                continue;
            }
        }
        if let Some(from) = lost.take() {
            out.damaged += pos - from;
            tracing::error!(path = %path.display(), from, to = pos, "damaged bytes in a pack skipped; the records after them are kept");
        }
        resync = false;
        out.records.push((id, loc));
        pos = align_up(pos + HEADER + u64::from(len)).min(size);
        end_valid = pos;
    }
    if end_valid < size && mode == Scan::CutTail {
        // Bad records after the last good one are the torn tail, not rot.
        out.corrupt.retain(|(_, l)| l.offset < end_valid);
        tracing::warn!(path = %path.display(), kept = end_valid, dropped = size - end_valid, "torn records at the end of a pack dropped");
        file.set_len(end_valid).map_err(|e| ChunkNodeError::io("truncate", path, e))?;
        file.sync_all().map_err(|e| ChunkNodeError::io("fsync", path, e))?;
    } else if let Some(from) = lost {
        out.damaged += size - from;
        tracing::error!(path = %path.display(), from, "damaged bytes at the end of a pack skipped");
    }
    Ok(out)
}

thread_local! {
    static READ_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

pub(crate) fn read_direct(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let span = align_up(HEADER + len as u64) as usize;
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.reset(span);
        file.read_exact_at(buf.fill(span), offset)?;
        let at = HEADER as usize;
        Ok(buf.bytes()[at..at + len].to_vec())
    })
}
