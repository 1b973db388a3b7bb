//! The pack file format, and reading packs.
//!
//! Record: magic (4 bytes), payload length (4, LE), chunk id (32), payload,
//! zeros up to the next multiple of
//! [`ALIGN`](crate::disk::direct::ALIGN). The id is the BLAKE3 of the
//! payload, so every record checks itself. Records are aligned so that a
//! batch is one `O_DIRECT` write (see [`crate::store::committer`]). The pack
//! being appended is `NNNNNNNN.open`, a sealed one `NNNNNNNN.pack`.
//!
//! Packs are written with `O_DIRECT`, so their bytes are not in the page
//! cache; a buffered read would fill it with pages read once (a restore
//! reads each chunk once) and pay a page allocation per 4 KiB, which on a VM
//! is the dearest part of the read. So a record is read with one aligned
//! direct read into a per-thread buffer. Where the file system does not take
//! `O_DIRECT`, reads are buffered.

use crate::disk::direct::{align_up, AlignedBuf};
use crate::error::ChunkNodeError;
use cairn_core::ChunkId;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
fn parse_header(h: &[u8; HEADER as usize]) -> Option<(ChunkId, u32)> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut id = [0u8; 32];
    id.copy_from_slice(&h[8..]);
    (magic == MAGIC && len as usize <= MAX_CHUNK).then_some((ChunkId(id), len))
}

/// The records of one pack, in order. With `verify`, payloads are read and
/// hashed and the pack is cut before the first bad record (a crash's torn
/// tail); otherwise only headers are read, and a bad header ends the walk.
pub(crate) fn scan_pack(
    file: &File,
    path: &Path,
    pack: u32,
    verify: bool,
) -> Result<Vec<(ChunkId, Loc)>, ChunkNodeError> {
    let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", path, e))?.len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut h = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while pos + HEADER <= size {
        file.read_exact_at(&mut h, pos).map_err(|e| ChunkNodeError::io("read", path, e))?;
        let Some((id, len)) = parse_header(&h) else { break };
        let end = pos + HEADER + u64::from(len);
        if end > size {
            break;
        }
        let next = align_up(end).min(size);
        if verify {
            payload.resize(len as usize, 0);
            file.read_exact_at(&mut payload, pos + HEADER)
                .map_err(|e| ChunkNodeError::io("read", path, e))?;
            if ChunkId::of(&payload) != id {
                break;
            }
        }
        out.push((id, Loc { pack, offset: pos, len }));
        pos = next;
    }
    if pos < size {
        if verify {
            tracing::warn!(path = %path.display(), kept = pos, dropped = size - pos, "torn records at the end of a pack dropped");
            file.set_len(pos).map_err(|e| ChunkNodeError::io("truncate", path, e))?;
            file.sync_all().map_err(|e| ChunkNodeError::io("fsync", path, e))?;
        } else {
            tracing::error!(path = %path.display(), at = pos, "damaged record header; the rest of this pack is not indexed");
        }
    }
    Ok(out)
}

thread_local! {
    static READ_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// One pack, open for reading.
pub(crate) struct Pack {
    file: File,
    /// The same file opened with `O_DIRECT`, where allowed.
    direct: Option<File>,
    /// No record will be appended to it any more (only sealed packs are
    /// compacted).
    sealed: AtomicBool,
}

impl Pack {
    /// `file` is the pack at `path`, opened for reading; `sealed` unless the
    /// committer appends to it.
    pub(crate) fn new(file: File, path: &Path, sealed: bool) -> Pack {
        let direct = File::options().read(true).custom_flags(nix::libc::O_DIRECT).open(path).ok();
        Pack { file, direct, sealed: AtomicBool::new(sealed) }
    }

    pub(crate) fn sealed(&self) -> bool {
        self.sealed.load(Ordering::SeqCst)
    }

    /// Marks the pack sealed, once its last record is durable.
    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    /// Bytes of the file.
    pub(crate) fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The file, for walking its records.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The `len` payload bytes of the record at `offset`. A record cut short
    /// by the end of the file is `UnexpectedEof`.
    pub(crate) fn read_payload(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if let Some(direct) = &self.direct {
            match read_direct(direct, offset, len) {
                // The file system took O_DIRECT at open but not this read;
                // or the record's padding was cut short by a crash (the
                // payload may still be whole: read exactly it).
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EINVAL)
                        || e.kind() == io::ErrorKind::UnexpectedEof => {}
                done => return done,
            }
        }
        let mut data = vec![0u8; len];
        self.file.read_exact_at(&mut data, offset + HEADER)?;
        Ok(data)
    }
}

fn read_direct(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let span = align_up(HEADER + len as u64) as usize;
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.reset(span);
        file.read_exact_at(buf.fill(span), offset)?;
        let at = HEADER as usize;
        Ok(buf.bytes()[at..at + len].to_vec())
    })
}
