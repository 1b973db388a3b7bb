//! The capacity tier's read cache: segments of packs that live in the
//! object store, kept as files under `data_dir/pack-cache/`, at most a
//! configured number of bytes, least recently used first out.
//!
//! A read of a record in such a pack needs the [`SEGMENT`]-aligned ranges of
//! the pack that cover it. Each one missing is fetched with one ranged GET
//! (never the whole pack) and kept, so that the records after it in the pack
//! (a restore or a copy reads a snapshot's chunks in the order they were
//! written) cost no request at all. Two readers missing the same segment
//! fetch it once. A hit reads only the bytes asked for from the segment's
//! file.
//!
//! The cache is only a copy: its files are written without fsync and the
//! directory is emptied at open, and a record read from it that does not
//! verify is read again from the object store before anything is called
//! corrupt ([`crate::store::tier`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of one cached segment of a pack.
pub(crate) const SEGMENT: u64 = 4 << 20;

/// (pack, segment number).
type Key = (u32, u64);

#[derive(Default)]
struct Lru {
    /// Bytes and last use of each cached segment.
    entries: HashMap<Key, (u64, u64)>,
    /// Segments by last use.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

impl Lru {
    /// Marks `key` used now; false when it is not cached.
    fn touch(&mut self, key: Key) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.entries.get_mut(&key) {
            Some((_, last)) => {
                self.order.remove(last);
                *last = tick;
                self.order.insert(tick, key);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: Key) -> bool {
        match self.entries.remove(&key) {
            Some((len, last)) => {
                self.order.remove(&last);
                self.bytes -= len;
                true
            }
            None => false,
        }
    }
}

/// Hits and misses since the cache was opened, and the bytes it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

pub(crate) struct ReadCache {
    dir: PathBuf,
    limit: u64,
    lru: Mutex<Lru>,
    /// One lock per segment being fetched.
    fetching: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCache {
    /// An empty cache of at most `limit` bytes in `dir` (emptied).
    pub(crate) fn open(dir: &Path, limit: u64) -> io::Result<ReadCache> {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(dir)?;
        Ok(ReadCache {
            dir: dir.to_path_buf(),
            limit,
            lru: Mutex::default(),
            fetching: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.lru().bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Bytes `range` of pack `pack` (of `size` bytes), from cached segments
    /// or, for each one missing, one call of `fetch` with the segment's
    /// range.
    pub(crate) fn read(
        &self,
        pack: u32,
        size: u64,
        range: Range<u64>,
        fetch: impl Fn(Range<u64>) -> io::Result<Vec<u8>>,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let seg = at / SEGMENT;
            let seg_range = seg * SEGMENT..((seg + 1) * SEGMENT).min(size);
            let to = range.end.min(seg_range.end);
            if to <= at {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let part = at - seg_range.start..to - seg_range.start;
            out.extend(self.part((pack, seg), seg_range, part, &fetch)?);
            at = to;
        }
        Ok(out)
    }

    /// Forgets the segments of `pack` that cover `range` (a record read
    /// from them did not verify).
    pub(crate) fn forget(&self, pack: u32, range: Range<u64>) {
        let mut lru = self.lru();
        for seg in range.start / SEGMENT..range.end.div_ceil(SEGMENT) {
            if lru.remove((pack, seg)) {
                let _ = fs::remove_file(self.path((pack, seg)));
            }
        }
    }

    /// Forgets every segment of `pack` (it was removed).
    pub(crate) fn forget_pack(&self, pack: u32) {
        let mut lru = self.lru();
        let keys: Vec<Key> = lru.entries.keys().filter(|(p, _)| *p == pack).copied().collect();
        for key in keys {
            lru.remove(key);
            let _ = fs::remove_file(self.path(key));
        }
    }

    /// Bytes `part` of segment `key` (which spans `seg` of its pack).
    fn part(
        &self,
        key: Key,
        seg: Range<u64>,
        part: Range<u64>,
        fetch: &impl Fn(Range<u64>) -> io::Result<Vec<u8>>,
    ) -> io::Result<Vec<u8>> {
        if let Some(data) = self.cached(key, &part)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(data);
        }
        let lock = self.fetching().entry(key).or_default().clone();
        let fetched = {
            let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
            match self.cached(key, &part)? {
                Some(data) => Ok(data),
                None => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    fetch(seg.clone()).and_then(|bytes| {
                        if bytes.len() as u64 != seg.end - seg.start {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        self.keep(key, &bytes);
                        Ok(bytes[part.start as usize..part.end as usize].to_vec())
                    })
                }
            }
        };
        self.fetching().remove(&key);
        fetched
    }

    /// The bytes `part` of cached segment `key`, if it is cached.
    fn cached(&self, key: Key, part: &Range<u64>) -> io::Result<Option<Vec<u8>>> {
        if !self.lru().touch(key) {
            return Ok(None);
        }
        let file = match fs::File::open(self.path(key)) {
            Ok(f) => f,
            // Evicted since.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut data = vec![0u8; (part.end - part.start) as usize];
        match file.read_exact_at(&mut data, part.start) {
            Ok(()) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.forget(key.0, key.1 * SEGMENT..key.1 * SEGMENT + 1);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps `bytes` as segment `key`, evicting the least recently used
    /// segments past the limit. A cache that cannot write only logs it.
    fn keep(&self, key: Key, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if len > self.limit {
            return;
        }
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        if let Err(e) = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep a segment in the read cache");
            let _ = fs::remove_file(&tmp);
            return;
        }
        let mut lru = self.lru();
        lru.remove(key);
        lru.tick += 1;
        let tick = lru.tick;
        lru.entries.insert(key, (len, tick));
        lru.order.insert(tick, key);
        lru.bytes += len;
        while lru.bytes > self.limit {
            let Some((_, old)) = lru.order.pop_first() else { break };
            if let Some((old_len, _)) = lru.entries.remove(&old) {
                lru.bytes -= old_len;
            }
            let _ = fs::remove_file(self.path(old));
        }
    }

    fn path(&self, (pack, seg): Key) -> PathBuf {
        self.dir.join(format!("{pack:08}-{seg:06}"))
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fetching(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Mutex<()>>>> {
        self.fetching.lock().unwrap_or_else(|e| e.into_inner())
    }
}
