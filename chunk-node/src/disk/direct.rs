//! Direct I/O (`O_DIRECT`): the alignment it needs and a reusable aligned
//! buffer.
//!
//! Data written once and read at most once (chunks in packs, hydrated
//! blocks) skips the page cache: on this kind of machine (a VM) filling
//! page-cache pages is among the dearest parts of such I/O. Direct I/O
//! needs buffers, offsets and lengths on an [`ALIGN`] boundary; callers fall
//! back to buffered I/O where the file system refuses it (`EINVAL`).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Direct I/O boundary: buffers, offsets and lengths are multiples of it.
pub(crate) const ALIGN: u64 = 4096;

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
    pub(crate) fn fill(&mut self, len: usize) -> &mut [u8] {
        self.len = len;
        &mut self.raw[self.start..self.start + len]
    }
}

thread_local! {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

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
