//! Sparse-file helpers: finding data extents (SEEK_DATA / SEEK_HOLE), copying
//! only them, punching holes, writing zeroes. All blocking; callers run them
//! on the blocking pool.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Copy buffer size for extent copies and zero writes.
const IO_CHUNK: usize = 1 << 20;

/// The `[start, end)` byte ranges of `file` below `size` that may hold data,
/// in order. Holes read as zeroes and can be skipped. The file's seek offset
/// is moved; callers use positional I/O only.
pub fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    data_extents_in(file, 0, size)
}

/// [`data_extents`] of `[from, size)`.
pub fn data_extents_in(file: &File, from: u64, size: u64) -> io::Result<Vec<(u64, u64)>> {
    data_extents_upto(file, from, size, usize::MAX).map(|(extents, _)| extents)
}

/// The first `max` data extents of `[from, size)`, and how far they tell
/// the truth: `size` when the walk went all the way, else the end of the
/// last extent found (what lies past it is unknown).
pub fn data_extents_upto(
    file: &File,
    from: u64,
    size: u64,
    max: usize,
) -> io::Result<(Vec<(u64, u64)>, u64)> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = from;
    while pos < size {
        let start = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data at or after pos.
            Err(Errno::ENXIO) => break,
            // A filesystem without SEEK_DATA: treat everything as data.
            Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => {
                out.push((pos, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(fd, start as i64, Whence::SeekHole) {
            Ok(e) => (e as u64).min(size),
            Err(Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
        if out.len() >= max && pos < size {
            return Ok((out, pos));
        }
    }
    Ok((out, size))
}

/// `[from, to)` as runs `(start, end, zero)`, in order and covering it:
/// data where any of the `data` ranges (in any order, overlapping or not)
/// reaches, zero between.
pub fn runs(from: u64, to: u64, mut data: Vec<(u64, u64)>) -> Vec<(u64, u64, bool)> {
    data.sort_unstable();
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let mut pos = from;
    for (s, e) in data {
        let (s, e) = (s.max(from), e.min(to));
        if e <= s || e <= pos {
            continue;
        }
        if s > pos {
            out.push((pos, s, true));
        }
        match out.last_mut() {
            Some(last) if !last.2 && last.1 >= s.max(pos) => last.1 = e,
            _ => out.push((s.max(pos), e, false)),
        }
        pos = e;
    }
    if pos < to {
        out.push((pos, to, true));
    }
    out
}

/// Reads `[offset, offset + buf.len())` of `file` into `buf`, which must be
/// zeroed: only data extents are read, holes are left as they are. Reading a
/// hole through the page cache costs a page allocation and a memset per
/// 4 KiB; skipping it costs two `lseek`s. The file's seek offset is moved.
pub fn read_data_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let end = offset + buf.len() as u64;
    for (start, stop) in data_extents_in(file, offset, end)? {
        let range = (start - offset) as usize..(stop - offset) as usize;
        file.read_exact_at(&mut buf[range], start)?;
    }
    Ok(())
}

/// Turns off kernel readahead for `file` (POSIX_FADV_RANDOM). Volumes are
/// read in large requests, and readahead past a request mostly pulled holes
/// into the page cache, each 4 KiB allocated and zeroed. Advice only: a file
/// system that refuses it is left as it is.
pub fn no_readahead(file: &File) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    if let Err(e) = posix_fadvise(file.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_RANDOM) {
        tracing::debug!(error = %e, "readahead advice refused");
    }
}

/// Copies `src` (of length `size`) into the empty `dst`, writing only data
/// extents, so holes stay holes and a mostly-empty volume copies quickly.
/// Leaves `dst` with length `size`; does not fsync.
pub fn sparse_copy(src: &File, dst: &File, size: u64) -> io::Result<u64> {
    dst.set_len(size)?;
    let mut buf = vec![0u8; IO_CHUNK];
    let mut copied = 0u64;
    for (start, end) in data_extents(src, size)? {
        let mut off = start;
        while off < end {
            let n = (end - off).min(IO_CHUNK as u64) as usize;
            src.read_exact_at(&mut buf[..n], off)?;
            // Allocated-but-zero ranges (e.g. after write-zeroes) need no copy.
            if !cairn_core::is_zero(&buf[..n]) {
                dst.write_all_at(&buf[..n], off)?;
                copied += n as u64;
            }
            off += n as u64;
        }
    }
    Ok(copied)
}

/// Writes `len` zero bytes at `offset`, allocating them.
pub fn write_zeroes(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeroes = vec![0u8; IO_CHUNK.min(len as usize)];
    let mut off = offset;
    let end = offset + len;
    while off < end {
        let n = (end - off).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Deallocates `[offset, offset + len)`; it reads back as zeroes. Falls back
/// to writing zeroes where the filesystem cannot punch holes.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(file.as_raw_fd(), flags, offset as i64, len as i64) {
        Ok(()) => Ok(()),
        Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => write_zeroes(file, offset, len),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_range_and_merge_overlaps() {
        assert_eq!(runs(0, 10, vec![]), vec![(0, 10, true)]);
        assert_eq!(runs(0, 10, vec![(0, 20)]), vec![(0, 10, false)]);
        assert_eq!(
            runs(2, 20, vec![(15, 18), (0, 4), (3, 6), (6, 8)]),
            vec![(2, 8, false), (8, 15, true), (15, 18, false), (18, 20, true)]
        );
        assert_eq!(runs(5, 9, vec![(0, 2), (12, 14)]), vec![(5, 9, true)]);
    }

    #[test]
    fn a_bounded_extent_walk_says_how_far_it_knows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = File::create_new(dir.path().join("f")).expect("create");
        let size = 8u64 << 20;
        f.set_len(size).expect("len");
        f.write_all_at(&[1u8; 4096], 1 << 20).expect("w1");
        f.write_all_at(&[2u8; 4096], 4 << 20).expect("w2");
        let (all, known) = data_extents_upto(&f, 0, size, usize::MAX).expect("walk");
        assert_eq!(known, size);
        let (first, known) = data_extents_upto(&f, 0, size, 1).expect("walk");
        assert_eq!(first, all[..1]);
        assert_eq!(known, first[0].1);
        let r = runs(0, known, first);
        assert!(r[0] == (0, 1 << 20, true) && !r[1].2 && r.last().map(|x| x.1) == Some(known));
    }

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 64u64 << 20;
        let src = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("src"))
            .expect("src");
        src.set_len(size).expect("len");
        src.write_all_at(&[1u8; 4096], 3 << 20).expect("w1");
        src.write_all_at(&[2u8; 100], size - 100).expect("w2");
        let ext = data_extents(&src, size).expect("extents");
        let covered: u64 = ext.iter().map(|(s, e)| e - s).sum();
        assert!(covered < 16 << 20, "holes are skipped: {ext:?}");

        let dst = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("dst"))
            .expect("dst");
        sparse_copy(&src, &dst, size).expect("copy");
        assert_eq!(dst.metadata().expect("meta").len(), size);
        let mut a = vec![0u8; size as usize];
        let mut b = vec![0u8; size as usize];
        src.read_exact_at(&mut a, 0).expect("read src");
        dst.read_exact_at(&mut b, 0).expect("read dst");
        assert!(a == b);

        let mut d = vec![0u8; (5 << 20) + 4096];
        read_data_at(&dst, &mut d, (1 << 20) - 4096).expect("read data");
        assert!(d[..(2 << 20) + 4096].iter().all(|b| *b == 0));
        assert!(d[(2 << 20) + 4096..(2 << 20) + 8192].iter().all(|b| *b == 1));
        assert!(d[(2 << 20) + 8192..].iter().all(|b| *b == 0));
        let mut tail = vec![0u8; 200];
        read_data_at(&dst, &mut tail, size - 200).expect("read tail");
        assert_eq!(&tail[100..], &[2u8; 100][..]);
        assert!(tail[..100].iter().all(|b| *b == 0));

        punch_hole(&dst, 3 << 20, 4096).expect("punch");
        let mut c = [9u8; 4096];
        dst.read_exact_at(&mut c, 3 << 20).expect("read punched");
        assert_eq!(c, [0u8; 4096]);
    }
}
