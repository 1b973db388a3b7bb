//! A volume's bytes on disk: one sparse file, or a run of them.
//!
//! A file system caps a file's size: ext4 with 4 KiB blocks stops at
//! 16 TiB - 4 KiB, so a 16 TiB gp2 volume (and gp3's 64 TiB) cannot be one
//! ext4 file. So a volume is cut into segments of [`SEGMENT`] bytes: the
//! first is the volume's file (`vol-….img`, the only one for volumes up to
//! 8 TiB, so their layout is what it always was), the next ones are
//! `vol-….img.1`, `.img.2`, …. Every segment but the last is exactly
//! [`SEGMENT`] long, so the volume's size is read back from the files.
//!
//! Creating: the later segments first, then the first one (renamed into
//! place last, so a volume exists only once all of it does). Growing: the
//! last segment is extended, then new ones are added. Removing: the first
//! one first. Segments left without a first one (a create or a remove cut
//! short) are orphans the host removes when it opens ([`is_orphan_segment`]).
//!
//! Every operation takes volume offsets and splits at segment boundaries.

use crate::disk::direct::write_direct_at;
use crate::disk::sparse;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

/// Bytes per segment file: a power of two well below ext4's 16 TiB cap
/// and a multiple of every block size.
pub const SEGMENT: u64 = 8 << 40;

/// A volume's segment files, opened for reads and writes (or, from
/// [`VolumeFile::open_direct`], for direct writes only).
pub struct VolumeFile {
    path: PathBuf,
    segment: u64,
    direct: bool,
    /// Segments in order; only [`VolumeFile::set_len`] adds to them.
    files: RwLock<Vec<File>>,
}

/// The file of segment `n` of the volume whose first file is `path`.
fn segment_path(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// For a file name in a volumes directory: if it is a later segment
/// (`X.img.N`), the name of its volume's first file (`X.img`).
pub fn segment_owner(name: &str) -> Option<&str> {
    let (first, n) = name.rsplit_once('.')?;
    (first.ends_with(".img") && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then_some(first)
}

/// Whether `path` is a later segment whose volume's first file is gone.
pub fn is_orphan_segment(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match segment_owner(&name) {
        Some(first) => !path.with_file_name(first).exists(),
        None => false,
    }
}

/// The lengths of the segments of a `size`-byte volume.
fn lengths(size: u64, segment: u64) -> Vec<u64> {
    let n = size.div_ceil(segment).max(1);
    (0..n).map(|i| (size - i * segment).min(segment)).collect()
}

fn open_options(direct: bool) -> std::fs::OpenOptions {
    let mut o = File::options();
    if direct {
        o.write(true).custom_flags(nix::libc::O_DIRECT);
    } else {
        o.read(true).write(true);
    }
    o
}

/// Creates (empty, or emptied if a crash left one) segment `n` of `len`
/// bytes, synced.
fn create_segment(path: &Path, n: usize, len: u64) -> io::Result<File> {
    let p = segment_path(path, n);
    let f = File::options().read(true).write(true).create(true).truncate(true).open(&p)?;
    f.set_len(len)?;
    f.sync_all()?;
    Ok(f)
}

impl VolumeFile {
    /// Creates the later segments of a `size`-byte volume whose first file
    /// will be `path`, each empty and synced; the caller then puts the first
    /// file in place (renaming it is what makes the volume exist) and opens
    /// the whole with [`VolumeFile::open`].
    pub fn create_later_segments(path: &Path, size: u64) -> io::Result<()> {
        Self::create_later_segments_of(path, size, SEGMENT)
    }

    fn create_later_segments_of(path: &Path, size: u64, segment: u64) -> io::Result<()> {
        let count = lengths(size, segment).len();
        for (n, len) in lengths(size, segment).into_iter().enumerate().skip(1) {
            create_segment(path, n, len)?;
        }
        // Past the new volume's segments: any left by an earlier volume of
        // the same id whose removal was cut short.
        remove_from(path, count.max(1))
    }

    /// The first segment's length for a `size`-byte volume.
    pub fn first_len(size: u64) -> u64 {
        size.min(SEGMENT)
    }

    /// Opens the volume whose first file is `path`, for reads and writes.
    pub fn open(path: &Path) -> io::Result<VolumeFile> {
        Self::open_with(path, SEGMENT, false)
    }

    /// Opens it again with `O_DIRECT`, for [`VolumeFile::write_direct_at`].
    pub fn open_direct(&self) -> io::Result<VolumeFile> {
        Self::open_with(&self.path, self.segment, true)
    }

    fn open_with(path: &Path, segment: u64, direct: bool) -> io::Result<VolumeFile> {
        let mut files = vec![open_options(direct).open(path)?];
        loop {
            let p = segment_path(path, files.len());
            match open_options(direct).open(&p) {
                Ok(f) => files.push(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        let first = files[0].metadata()?.len();
        // A volume made by a build before segments, on a file system that
        // holds files past `segment` bytes: one file, and so it stays.
        let segment = if files.len() == 1 && first > segment { u64::MAX } else { segment };
        for (n, f) in files.iter().enumerate().take(files.len() - 1) {
            if f.metadata()?.len() != segment {
                let why = format!("segment {n} of {} is not {segment} bytes", path.display());
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
        }
        let me =
            VolumeFile { path: path.to_path_buf(), segment, direct, files: RwLock::new(files) };
        if !direct {
            me.no_readahead();
        }
        Ok(me)
    }

    fn files(&self) -> RwLockReadGuard<'_, Vec<File>> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> io::Result<u64> {
        let files = self.files();
        let last = files.last().map(|f| f.metadata().map(|m| m.len())).transpose()?;
        Ok((files.len() as u64 - 1) * self.segment + last.unwrap_or(0))
    }

    /// Grows the volume to `size` bytes (the new space reads as zeros) and
    /// syncs what changed; never shrinks.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let want = lengths(size, self.segment);
        for (n, len) in want.into_iter().enumerate() {
            match files.get(n) {
                Some(f) => {
                    if f.metadata()?.len() < len {
                        f.set_len(len)?;
                        f.sync_all()?;
                    }
                }
                None => files.push(create_segment(&self.path, n, len)?),
            }
        }
        Ok(())
    }

    /// Removes every segment: the first one first, durably, so that a
    /// crash leaves no volume with segments missing, only orphans.
    pub fn remove(path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        remove_from(path, 1)
    }

    /// `[offset, offset + len)` cut at segment boundaries: (segment,
    /// offset in it, offset from `offset`, length).
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64, u64)> {
        let segment = self.segment;
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let n = pos / segment;
            let at = pos % segment;
            let take = (segment - at).min(end - pos);
            let piece = (n as usize, at, pos - offset, take);
            pos += take;
            Some(piece)
        })
    }

    /// Runs `op(file, offset in it, offset from `offset`, length)` on each
    /// piece of `[offset, offset + len)`.
    fn each<F>(&self, offset: u64, len: u64, mut op: F) -> io::Result<()>
    where
        F: FnMut(&File, u64, usize, usize) -> io::Result<()>,
    {
        let files = self.files();
        for (n, at, from, take) in self.pieces(offset, len) {
            let f = files.get(n).ok_or_else(|| past_end(offset + len))?;
            op(f, at, from as usize, take as usize)?;
        }
        Ok(())
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.each(offset, buf.len() as u64, |f, at, from, take| {
            f.read_exact_at(&mut buf[from..from + take], at)
        })
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.each(offset, buf.len() as u64, |f, at, from, take| {
            f.write_all_at(&buf[from..from + take], at)
        })
    }

    /// [`write_direct_at`] on a volume opened with
    /// [`VolumeFile::open_direct`]: `offset` aligned, the zero padding past
    /// `data` inside the same segment.
    pub fn write_direct_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        debug_assert!(self.direct);
        self.each(offset, data.len() as u64, |f, at, from, take| {
            write_direct_at(f, &data[from..from + take], at)
        })
    }

    /// Reads `[offset, offset + buf.len())` into the zeroed `buf`, data
    /// extents only ([`sparse::read_data_at`]).
    pub fn read_data_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.each(offset, buf.len() as u64, |f, at, from, take| {
            sparse::read_data_at(f, &mut buf[from..from + take], at)
        })
    }

    /// [`sparse::data_extents_upto`] over the volume.
    pub fn data_extents_upto(
        &self,
        from: u64,
        to: u64,
        max: usize,
    ) -> io::Result<(Vec<(u64, u64)>, u64)> {
        let files = self.files();
        let mut out = Vec::new();
        for (n, at, rel, take) in self.pieces(from, to.saturating_sub(from)) {
            let f = files.get(n).ok_or_else(|| past_end(to))?;
            let base = from + rel - at;
            let (found, known) = sparse::data_extents_upto(f, at, at + take, max - out.len())?;
            out.extend(found.into_iter().map(|(s, e)| (base + s, base + e)));
            if known < at + take {
                return Ok((out, base + known));
            }
            if out.len() >= max {
                return Ok((out, base + at + take));
            }
        }
        Ok((out, to))
    }

    /// Every data extent of `[from, to)`.
    pub fn data_extents_in(&self, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
        self.data_extents_upto(from, to, usize::MAX).map(|(extents, _)| extents)
    }

    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.each(offset, len, |f, at, _, take| sparse::punch_hole(f, at, take as u64))
    }

    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.each(offset, len, |f, at, _, take| sparse::write_zeroes(f, at, take as u64))
    }

    /// Asks the kernel to read `[offset, offset + len)` in the background.
    /// Advice only: failures change nothing.
    pub fn will_need(&self, offset: u64, len: u64) {
        let _ = self.each(offset, len, |f, at, _, take| {
            let advice = PosixFadviseAdvice::POSIX_FADV_WILLNEED;
            let _ = posix_fadvise(f.as_raw_fd(), at as i64, take as i64, advice);
            Ok(())
        });
    }

    /// Turns kernel readahead off ([`sparse::no_readahead`]) on every segment.
    fn no_readahead(&self) {
        for f in self.files().iter() {
            sparse::no_readahead(f);
        }
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.files().iter().try_for_each(File::sync_data)
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.files().iter().try_for_each(File::sync_all)
    }
}

/// Removes segments `from`, `from + 1`, … of `path` while they exist.
fn remove_from(path: &Path, from: usize) -> io::Result<()> {
    for n in from.. {
        match std::fs::remove_file(segment_path(path, n)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn past_end(end: u64) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("offset {end} is past the volume's end"))
}

#[cfg(test)]
#[path = "volfile_tests.rs"]
mod tests;
