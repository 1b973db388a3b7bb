//! A restored volume's chunk map, on disk (`hydrate.ids`): one record per
//! block that holds data in the snapshot (its index and chunk id), in block
//! order. A fully written 16 TiB volume has 33,554,432 of them (1.25 GiB),
//! so they are not held in memory: what is held is one bit per block of the
//! volume saying which blocks have a record, and the count of records before
//! every [`RANK_BLOCKS`] blocks, so block `i`'s record is found at its rank
//! among the set bits with one read. Memory follows the volume's size (4 MiB
//! per 16 TiB, like the other per-block bitmaps), not what was written.
//!
//! No checksum: a record whose index is not the block looked up, or indexes
//! out of order, are reported as corrupt state; a damaged chunk id names a
//! chunk that does not exist or whose bytes do not hash to it, which the
//! fetch refuses (every fetched chunk is verified against its id).

use crate::error::ChunkNodeError;
use crate::volume::blocks::BlockSet;
use cairn_core::ChunkId;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes per record: the block index (little-endian) and the chunk id.
const RECORD_LEN: usize = 40;
/// Blocks per running count (64 bitmap words).
const RANK_BLOCKS: u64 = 4096;

fn record(i: u64, id: &ChunkId) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r[8..].copy_from_slice(&id.0);
    r
}

fn parse(r: &[u8; RECORD_LEN]) -> (u64, ChunkId) {
    let mut id = [0u8; 32];
    id.copy_from_slice(&r[8..]);
    let mut i = [0u8; 8];
    i.copy_from_slice(&r[..8]);
    (u64::from_le_bytes(i), ChunkId(id))
}

/// The records of a restore, written in block order to a temporary file
/// (`.tmp…`; the host removes those it finds in its volumes directory when
/// it opens) before its volume exists.
pub struct BlockIdsWriter {
    out: BufWriter<tempfile::NamedTempFile>,
    last: Option<u64>,
    count: u64,
}

impl BlockIdsWriter {
    /// A new, empty map in `dir` (the directory the volume's state will
    /// be in, so that moving it there is a rename). Blocking.
    pub fn create(dir: &Path) -> Result<BlockIdsWriter, ChunkNodeError> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| ChunkNodeError::io("create temp in", dir, e))?;
        Ok(BlockIdsWriter { out: BufWriter::with_capacity(1 << 20, tmp), last: None, count: 0 })
    }

    /// Adds block `i`'s chunk; blocks come in ascending order. Blocking.
    pub fn push(&mut self, i: u64, id: &ChunkId) -> Result<(), ChunkNodeError> {
        if self.last.is_some_and(|last| i <= last) {
            let path = self.out.get_ref().path().to_path_buf();
            return Err(ChunkNodeError::CorruptState {
                path,
                why: format!("block {i} after {:?}", self.last),
            });
        }
        self.last = Some(i);
        self.count += 1;
        self.out.write_all(&record(i, id)).map_err(|e| self.io_error(e))
    }

    /// The last block pushed.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Records pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn io_error(&self, e: std::io::Error) -> ChunkNodeError {
        ChunkNodeError::io("write", self.out.get_ref().path(), e)
    }

    /// The map, written and synced.
    pub fn finish(self) -> Result<WrittenIds, ChunkNodeError> {
        let path = self.out.get_ref().path().to_path_buf();
        let count = self.count;
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| ChunkNodeError::io("write", &path, e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", &path, e))?;
        Ok(WrittenIds { tmp, count })
    }
}

/// A map written by [`BlockIdsWriter`], not yet in its volume's state.
pub struct WrittenIds {
    tmp: tempfile::NamedTempFile,
    /// Records in it.
    pub count: u64,
}

impl WrittenIds {
    /// Moves the map to `path` (the caller syncs the directory). Blocking.
    pub fn persist(self, path: &Path) -> Result<(), ChunkNodeError> {
        self.tmp.persist(path).map_err(|e| ChunkNodeError::io("rename to", path, e.error))?;
        Ok(())
    }
}

/// A map on disk, opened: which blocks have a chunk, and each one's chunk.
pub struct BlockIds {
    present: BlockSet,
    /// Members of `present` below each multiple of [`RANK_BLOCKS`].
    ranks: Vec<u64>,
    /// Members of `present`.
    count: u64,
    file: File,
    path: PathBuf,
}

impl BlockIds {
    /// Opens the map at `path` of a volume of `blocks` blocks, reading it
    /// through once: `each` sees every record in order. Blocking.
    pub fn open(
        path: &Path,
        blocks: u64,
        mut each: impl FnMut(u64, &ChunkId),
    ) -> Result<BlockIds, ChunkNodeError> {
        let corrupt = |why: String| ChunkNodeError::CorruptState { path: path.into(), why };
        let file = File::open(path).map_err(|e| ChunkNodeError::io("open", path, e))?;
        let mut present = BlockSet::new(blocks);
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut last = None;
        let mut r = [0u8; RECORD_LEN];
        loop {
            match reader.read_exact(&mut r) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(ChunkNodeError::io("read", path, e)),
            }
            let (i, id) = parse(&r);
            if i >= blocks || last.is_some_and(|l| i <= l) {
                return Err(corrupt(format!("block {i} after {last:?} in {blocks} blocks")));
            }
            last = Some(i);
            present.insert(i);
            each(i, &id);
        }
        let len = file.metadata().map_err(|e| ChunkNodeError::io("stat", path, e))?.len();
        if len % RECORD_LEN as u64 != 0 {
            return Err(corrupt(format!("{len} bytes: not whole records")));
        }
        let words_per_rank = (RANK_BLOCKS / 64) as usize;
        let mut ranks = Vec::with_capacity(present.words().len().div_ceil(words_per_rank));
        let mut below = 0u64;
        for words in present.words().chunks(words_per_rank) {
            ranks.push(below);
            below += words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        }
        Ok(BlockIds { present, ranks, count: below, file, path: path.to_path_buf() })
    }

    /// Whether block `i` has a chunk (holds data in the snapshot).
    pub fn contains(&self, i: u64) -> bool {
        self.present.contains(i)
    }

    /// The blocks with a chunk from `start` on, ascending.
    pub fn iter_from(&self, start: u64) -> impl Iterator<Item = u64> + '_ {
        self.present.iter_from(start)
    }

    /// The blocks with a chunk.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Members of the set below block `i`.
    fn rank(&self, i: u64) -> u64 {
        let words = self.present.words();
        let (first, word) = (((i / RANK_BLOCKS) * (RANK_BLOCKS / 64)) as usize, (i / 64) as usize);
        let whole: u64 = words[first..word].iter().map(|w| u64::from(w.count_ones())).sum();
        let part = words[word] & ((1u64 << (i % 64)) - 1);
        self.ranks[(i / RANK_BLOCKS) as usize] + whole + u64::from(part.count_ones())
    }

    /// The chunks of those of `blocks` (ascending) that have one, in order:
    /// one read per run of adjacent records. Blocking, briefly (see
    /// [`BlockIds::get`]).
    pub fn get_many(&self, blocks: &[u64]) -> Result<Vec<(u64, ChunkId)>, ChunkNodeError> {
        let found: Vec<(u64, u64)> =
            blocks.iter().filter(|i| self.contains(**i)).map(|i| (*i, self.rank(*i))).collect();
        let mut out = Vec::with_capacity(found.len());
        for run in found.chunk_by(|a, b| b.1 == a.1 + 1 && b.0 > a.0) {
            let mut buf = vec![0u8; run.len() * RECORD_LEN];
            let at = run[0].1 * RECORD_LEN as u64;
            self.file
                .read_exact_at(&mut buf, at)
                .map_err(|e| ChunkNodeError::io("read", &self.path, e))?;
            for ((i, _), r) in run.iter().zip(buf.chunks_exact(RECORD_LEN)) {
                let r: &[u8; RECORD_LEN] = r.try_into().unwrap_or(&[0xff; RECORD_LEN]);
                out.push((*i, self.check(*i, r)?));
            }
        }
        Ok(out)
    }

    /// The chunk in record `r`, which must be block `i`'s.
    fn check(&self, i: u64, r: &[u8; RECORD_LEN]) -> Result<ChunkId, ChunkNodeError> {
        match parse(r) {
            (found, id) if found == i => Ok(id),
            (found, _) => Err(ChunkNodeError::CorruptState {
                path: self.path.clone(),
                why: format!("block {found} where block {i} belongs"),
            }),
        }
    }

    /// Block `i`'s chunk; `None` for a block without one. Reads the file
    /// (the page cache keeps the parts in use). Blocking, briefly.
    pub fn get(&self, i: u64) -> Result<Option<ChunkId>, ChunkNodeError> {
        Ok(self.get_many(&[i])?.pop().map(|(_, id)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    fn write(dir: &Path, blocks: &[u64]) -> PathBuf {
        let mut w = BlockIdsWriter::create(dir).expect("create");
        for i in blocks {
            w.push(*i, &id(*i)).expect("push");
        }
        let written = w.finish().expect("finish");
        assert_eq!(written.count, blocks.len() as u64);
        let path = dir.join("ids");
        written.persist(&path).expect("persist");
        path
    }

    #[test]
    fn finds_each_block_at_its_rank() {
        let dir = tempfile::tempdir().expect("dir");
        let blocks: Vec<u64> =
            [0, 1, 63, 64, 4095, 4096, 4097, 9000, 12287, 12288, 20_000].into_iter().collect();
        let path = write(dir.path(), &blocks);
        let mut seen = Vec::new();
        let ids = BlockIds::open(&path, 20_001, |i, c| seen.push((i, *c))).expect("open");
        assert_eq!(seen, blocks.iter().map(|i| (*i, id(*i))).collect::<Vec<_>>());
        assert_eq!(ids.count(), blocks.len() as u64);
        for i in 0..20_001 {
            let want = blocks.contains(&i).then(|| id(i));
            assert_eq!(ids.get(i).expect("get"), want, "block {i}");
        }
        let all: Vec<u64> = (0..20_001).collect();
        let want: Vec<(u64, ChunkId)> = blocks.iter().map(|i| (*i, id(*i))).collect();
        assert_eq!(ids.get_many(&all).expect("get many"), want);
        let some = [1, 2, 63, 4096, 9000, 9001, 20_000];
        let want: Vec<(u64, ChunkId)> = [1, 63, 4096, 9000, 20_000].map(|i| (i, id(i))).to_vec();
        assert_eq!(ids.get_many(&some).expect("get some"), want);
        assert_eq!(ids.iter_from(4097).collect::<Vec<_>>(), vec![4097, 9000, 12287, 12288, 20_000]);
    }

    #[test]
    fn refuses_out_of_order_and_damaged_maps() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = BlockIdsWriter::create(dir.path()).expect("create");
        w.push(5, &id(5)).expect("push");
        assert!(w.push(5, &id(5)).is_err() && w.push(4, &id(4)).is_err());

        let path = write(dir.path(), &[1, 2, 3]);
        assert!(BlockIds::open(&path, 3, |_, _| {}).is_err(), "block 3 of 3 blocks");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.push(0);
        std::fs::write(&path, &bytes).expect("write");
        assert!(BlockIds::open(&path, 10, |_, _| {}).is_err(), "a torn record");
        bytes.pop();
        bytes[RECORD_LEN..RECORD_LEN + 8].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        assert!(BlockIds::open(&path, 10, |_, _| {}).is_err(), "block 1 twice");
    }
}
