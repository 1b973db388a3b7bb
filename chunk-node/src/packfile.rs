//! Reading pack files, and the aligned buffer direct I/O needs.
//!
//! Packs are written with `O_DIRECT` (see [`crate::store`]), so their bytes
//! are not in the page cache; a buffered read would fill it with pages read
//! once (a restore reads each chunk once) and pay a page allocation per
//! 4 KiB, which on a VM is the dearest part of the read. Records start on an
//! [`ALIGN`] boundary and are padded to one, so a record is read with one
//! aligned direct read into a per-thread buffer. Where the file system does
//! not take `O_DIRECT`, reads are buffered.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Records start, and are padded, to this boundary.
pub(crate) const ALIGN: u64 = 4096;
/// Bytes of a record header (magic, length, chunk id).
pub(crate) const HEADER: u64 = 40;

pub(crate) fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// A reusable byte buffer whose data starts at an [`ALIGN`] boundary, as
/// direct I/O needs (found by offset, so no unsafe allocation is needed).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Empties the buffer, making room for `cap` bytes.
    pub(crate) fn reset(&mut self, cap: usize) {
        if self.raw.len() < cap + ALIGN as usize {
            self.raw = vec![0u8; cap + ALIGN as usize];
            self.start = self.raw.as_ptr().align_offset(ALIGN as usize);
        }
        self.len = 0;
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let at = self.start + self.len;
        self.raw[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Zeros up to the next [`ALIGN`] boundary.
    pub(crate) fn pad(&mut self) {
        let padded = align_up(self.len as u64) as usize;
        self.raw[self.start + self.len..self.start + padded].fill(0);
        self.len = padded;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The first `len` bytes, to be filled (after a `reset` to at least `len`).
    fn fill(&mut self, len: usize) -> &mut [u8] {
        self.len = len;
        &mut self.raw[self.start..self.start + len]
    }
}

thread_local! {
    static READ_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
    static WRITE_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Writes `data` at `offset` (an [`ALIGN`] multiple) of `file`, opened with
/// `O_DIRECT`, zero-padded to the next [`ALIGN`] boundary: the caller makes
/// sure those padding bytes are zero in the file's content anyway. A file
/// system that refuses the write answers `EINVAL`.
pub(crate) fn write_direct_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    WRITE_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.reset(align_up(data.len() as u64) as usize);
        buf.push(data);
        buf.pad();
        file.write_all_at(buf.bytes(), offset)
    })
}

/// One pack, open for reading.
pub(crate) struct Pack {
    file: File,
    /// The same file opened with `O_DIRECT`, where allowed.
    direct: Option<File>,
}

impl Pack {
    /// `file` is the pack at `path`, opened for reading.
    pub(crate) fn new(file: File, path: &Path) -> Pack {
        let direct = File::options().read(true).custom_flags(nix::libc::O_DIRECT).open(path).ok();
        Pack { file, direct }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_write_lands_whole_and_pads_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0xffu8; 16384]).unwrap();
        let Ok(direct) = File::options().write(true).custom_flags(nix::libc::O_DIRECT).open(&path)
        else {
            return; // no direct I/O on this file system: nothing to check
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        match write_direct_at(&direct, &data, 4096) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => return,
            r => r.unwrap(),
        }
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..4096], &[0xffu8; 4096][..], "before the write: untouched");
        assert_eq!(&back[4096..9096], &data[..]);
        assert!(back[9096..12288].iter().all(|b| *b == 0), "padded with zeros to 4 KiB");
        assert!(back[12288..].iter().all(|b| *b == 0xff), "past the padding: untouched");
    }
}
