//! One pack open for reading, wherever its bytes are: a file on this disk
//! (read with one aligned direct read per record, see
//! [`crate::store::packfile`]) or, sealed and uploaded, an object in the
//! capacity tier ([`crate::store::remote`]). Reads, scrub's checks, the walk
//! compaction makes and removal go through this one interface.

use crate::disk::direct::align_up;
use crate::disk::files::remove_file;
use crate::error::ChunkNodeError;
use crate::store::packfile::{pack_path, parse_header, read_direct, scan_pack, Loc, Scan, HEADER};
use crate::store::remote::RemotePack;
use cairn_core::ChunkId;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// One pack, open for reading: a file here, or (sealed and uploaded) an
/// object in the capacity tier ([`crate::store::tier`]).
pub(crate) struct Pack {
    body: Body,
    /// No record will be appended to it any more (only sealed packs are
    /// compacted or uploaded).
    sealed: AtomicBool,
}

enum Body {
    Local {
        file: File,
        /// The same file opened with `O_DIRECT`, where allowed.
        direct: Option<File>,
    },
    Remote(RemotePack),
}

impl Pack {
    /// `file` is the pack at `path`, opened for reading; `sealed` unless the
    /// committer appends to it.
    pub(crate) fn new(file: File, path: &Path, sealed: bool) -> Pack {
        let direct = File::options().read(true).custom_flags(nix::libc::O_DIRECT).open(path).ok();
        Pack { body: Body::Local { file, direct }, sealed: AtomicBool::new(sealed) }
    }

    /// A sealed pack that lives in the capacity tier.
    pub(crate) fn remote(pack: RemotePack) -> Pack {
        Pack { body: Body::Remote(pack), sealed: AtomicBool::new(true) }
    }

    pub(crate) fn sealed(&self) -> bool {
        self.sealed.load(Ordering::SeqCst)
    }

    /// Marks the pack sealed, once its last record is durable.
    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    /// The local file, unless the pack lives in the capacity tier.
    pub(crate) fn local_file(&self) -> Option<&File> {
        match &self.body {
            Body::Local { file, .. } => Some(file),
            Body::Remote(_) => None,
        }
    }

    /// Bytes of the pack.
    pub(crate) fn size(&self) -> io::Result<u64> {
        match &self.body {
            Body::Local { file, .. } => Ok(file.metadata()?.len()),
            Body::Remote(r) => Ok(r.size()),
        }
    }

    /// Every record of the sealed pack `n` under `dir`, by offset; `None`
    /// when a local pack could not be walked to its end (a damaged header:
    /// compaction then leaves it alone).
    pub(crate) fn records(
        &self,
        dir: &Path,
        n: u32,
    ) -> Result<Option<Vec<(ChunkId, Loc)>>, ChunkNodeError> {
        let file = match &self.body {
            Body::Local { file, .. } => file,
            Body::Remote(r) => return r.records(dir).map(Some),
        };
        let path = pack_path(dir, n, true);
        let size = self.size().map_err(|e| ChunkNodeError::io("stat", &path, e))?;
        let records = scan_pack(file, &path, n, Scan::Headers)?.records;
        let walked =
            records.last().map_or(0, |(_, l)| align_up(l.offset + HEADER + u64::from(l.len)));
        if walked.min(size) != size {
            tracing::error!(path = %path.display(), "pack not walked to its end");
            return Ok(None);
        }
        Ok(Some(records))
    }

    /// Removes the sealed pack `n` under `dir`: its file, or its record of
    /// the capacity tier and then its object.
    pub(crate) fn remove(&self, dir: &Path, n: u32) -> Result<(), ChunkNodeError> {
        match &self.body {
            Body::Local { .. } => remove_file(&pack_path(dir, n, true)),
            Body::Remote(r) => r.remove(dir),
        }
    }

    /// Scrub's check of `id`'s record at `loc`: its header names `id` and
    /// `loc.len` (a walk at the next open trusts headers) and its payload
    /// hashes to `id`. A record cut short is bad, not an error.
    pub(crate) fn check(&self, id: &ChunkId, loc: Loc) -> io::Result<bool> {
        let (head, payload) = match &self.body {
            Body::Local { file, .. } => {
                let mut h = [0u8; HEADER as usize];
                match file.read_exact_at(&mut h, loc.offset) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                    Err(e) => return Err(e),
                }
                (h, self.read_payload(id, loc.offset, loc.len as usize))
            }
            Body::Remote(r) => match r.fetch_record(loc) {
                Ok((h, payload)) => (h, Ok(payload)),
                Err(e) => ([0u8; HEADER as usize], Err(e)),
            },
        };
        match payload {
            Ok(data) => {
                Ok(parse_header(&head) == Some((*id, loc.len)) && ChunkId::of(&data) == *id)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The `len` payload bytes of `id`'s record at `offset`. A record cut
    /// short by the end of the file is `UnexpectedEof`. The caller checks
    /// the bytes against `id`; a pack in the capacity tier uses it to tell
    /// a bad cached copy from a bad record.
    pub(crate) fn read_payload(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        let (file, direct) = match &self.body {
            Body::Local { file, direct } => (file, direct),
            Body::Remote(r) => return r.read(id, offset + HEADER, len),
        };
        if let Some(direct) = direct {
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
        file.read_exact_at(&mut data, offset + HEADER)?;
        Ok(data)
    }
}
