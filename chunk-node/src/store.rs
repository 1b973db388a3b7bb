//! The chunk store: immutable blocks named by their BLAKE3, one file each
//! under `data_dir/chunks/<first byte hex>/<id hex>`.
//!
//! Discipline (after Garage's block manager): a put is put-if-absent by hash,
//! refused unless the data hashes to the id, and atomic (temp file, fsync,
//! rename, directory fsync), so a crash leaves either the whole chunk or
//! nothing. Puts and the set-aside of corrupt files for one id are serialised
//! by a striped lock. Every read verifies the hash; a corrupt file is moved to
//! `data_dir/corrupt/`, counted, and reported as missing so that repair (or
//! the next put) replaces it. Blocking file I/O runs on the blocking pool.

use crate::error::ChunkNodeError;
use crate::files::fsync_dir;
use cairn_core::ChunkId;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Number of lock stripes; ids spread evenly over them by their first byte.
const STRIPES: usize = 256;

/// Counters of the store, kept in memory and rebuilt by a scan at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub chunks: u64,
    pub bytes: u64,
    /// Corrupt files found (and set aside) since the store was opened.
    pub corrupt: u64,
}

#[derive(Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

struct Inner {
    chunks_dir: PathBuf,
    corrupt_dir: PathBuf,
    stripes: Vec<Mutex<()>>,
    chunks: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating if needed) the store under `data_dir`, removes temp
    /// files a crash left behind, and counts what is stored.
    pub async fn open(data_dir: &Path) -> Result<ChunkStore, ChunkNodeError> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir)).await?
    }

    fn open_blocking(data_dir: &Path) -> Result<ChunkStore, ChunkNodeError> {
        let chunks_dir = data_dir.join("chunks");
        let corrupt_dir = data_dir.join("corrupt");
        for d in [&chunks_dir, &corrupt_dir] {
            fs::create_dir_all(d).map_err(|e| ChunkNodeError::io("create", d, e))?;
        }
        let (mut chunks, mut bytes) = (0u64, 0u64);
        let shards =
            fs::read_dir(&chunks_dir).map_err(|e| ChunkNodeError::io("list", &chunks_dir, e))?;
        for shard in shards {
            let shard = shard.map_err(|e| ChunkNodeError::io("list", &chunks_dir, e))?.path();
            if !shard.is_dir() {
                continue;
            }
            let files = fs::read_dir(&shard).map_err(|e| ChunkNodeError::io("list", &shard, e))?;
            for f in files {
                let f = f.map_err(|e| ChunkNodeError::io("list", &shard, e))?;
                let path = f.path();
                let name = f.file_name();
                let name = name.to_string_lossy();
                if ChunkId::from_hex(&name).is_some() {
                    let meta = f.metadata().map_err(|e| ChunkNodeError::io("stat", &path, e))?;
                    chunks += 1;
                    bytes += meta.len();
                } else if name.starts_with(".tmp") {
                    fs::remove_file(&path).map_err(|e| ChunkNodeError::io("remove", &path, e))?;
                } else {
                    tracing::warn!(path = %path.display(), "stray file in the chunk store");
                }
            }
        }
        tracing::info!(chunks, bytes, dir = %chunks_dir.display(), "chunk store opened");
        Ok(ChunkStore {
            inner: Arc::new(Inner {
                chunks_dir,
                corrupt_dir,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                chunks: AtomicU64::new(chunks),
                bytes: AtomicU64::new(bytes),
                corrupt: AtomicU64::new(0),
            }),
        })
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            chunks: self.inner.chunks.load(Ordering::Relaxed),
            bytes: self.inner.bytes.load(Ordering::Relaxed),
            corrupt: self.inner.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Stores `data` under `id` unless it is already there. Returns whether
    /// it was newly stored. Refused (nothing stored) when `data` does not
    /// hash to `id`.
    pub async fn put(&self, id: ChunkId, data: Vec<u8>) -> Result<bool, ChunkNodeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.put(id, &data)).await?
    }

    /// The verified bytes of `id`, or `None` when it is absent (or was corrupt).
    pub async fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.get(id)).await?
    }

    /// Whether each id is stored (present files; contents are verified on read).
    pub async fn has(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>, ChunkNodeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|id| {
                    let p = inner.path(id);
                    match fs::symlink_metadata(&p) {
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                        Err(e) => Err(ChunkNodeError::io("stat", p, e)),
                    }
                })
                .collect()
        })
        .await?
    }

    /// Where `id` is stored (the file may not exist).
    pub fn path(&self, id: &ChunkId) -> PathBuf {
        self.inner.path(id)
    }
}

impl Inner {
    fn shard(&self, id: &ChunkId) -> PathBuf {
        self.chunks_dir.join(hex_byte(id.0[0]))
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        self.shard(id).join(id.to_hex())
    }

    fn lock(&self, id: &ChunkId) -> MutexGuard<'_, ()> {
        // A panic while holding a stripe cannot leave a chunk half-written
        // (the rename is atomic), so a poisoned stripe is still usable.
        self.stripes[id.0[0] as usize % STRIPES].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file for `id`; `Some(Ok)` if it verifies, `Some(Err(len))`
    /// if it exists but is corrupt, `None` if absent. Caller holds the lock.
    fn read_verified(&self, id: &ChunkId) -> Result<Option<Result<Vec<u8>, u64>>, ChunkNodeError> {
        let p = self.path(id);
        match fs::read(&p) {
            Ok(data) if ChunkId::of(&data) == *id => Ok(Some(Ok(data))),
            Ok(data) => Ok(Some(Err(data.len() as u64))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ChunkNodeError::io("read", p, e)),
        }
    }

    /// Moves a corrupt file out of the store and forgets it. Caller holds the lock.
    fn set_aside(&self, id: &ChunkId, len: u64) -> Result<(), ChunkNodeError> {
        let from = self.path(id);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let to = self.corrupt_dir.join(format!("{}.{stamp}", id.to_hex()));
        fs::rename(&from, &to).map_err(|e| ChunkNodeError::io("set aside", &from, e))?;
        self.chunks.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::error!(chunk = %id, moved_to = %to.display(), "corrupt chunk set aside");
        Ok(())
    }

    fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, ChunkNodeError> {
        let _g = self.lock(&id);
        match self.read_verified(&id)? {
            Some(Ok(data)) => Ok(Some(data)),
            Some(Err(len)) => {
                self.set_aside(&id, len)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn put(&self, id: ChunkId, data: &[u8]) -> Result<bool, ChunkNodeError> {
        if ChunkId::of(data) != id {
            return Err(ChunkNodeError::HashMismatch(id));
        }
        let _g = self.lock(&id);
        match self.read_verified(&id)? {
            Some(Ok(_)) => return Ok(false),
            // A corrupt copy is replaced by the good bytes we were just given.
            Some(Err(len)) => self.set_aside(&id, len)?,
            None => {}
        }
        let shard = self.shard(&id);
        if !shard.is_dir() {
            fs::create_dir_all(&shard).map_err(|e| ChunkNodeError::io("create", &shard, e))?;
            fsync_dir(&self.chunks_dir)?;
        }
        // The temp file deletes itself if anything below fails.
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(&shard)
            .map_err(|e| ChunkNodeError::io("create temp in", &shard, e))?;
        tmp.write_all(data).map_err(|e| ChunkNodeError::io("write", tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", tmp.path(), e))?;
        let dest = self.path(&id);
        tmp.persist(&dest).map_err(|e| ChunkNodeError::io("rename to", &dest, e.error))?;
        fsync_dir(&shard)?;
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(true)
    }
}

fn hex_byte(b: u8) -> String {
    format!("{b:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_has_and_idempotence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).await.expect("open");
        let data = vec![5u8; 1000];
        let id = ChunkId::of(&data);
        let other = ChunkId::of(b"other");
        assert!(store.put(id, data.clone()).await.expect("put"));
        assert!(!store.put(id, data.clone()).await.expect("second put"));
        assert_eq!(store.get(id).await.expect("get"), Some(data.clone()));
        assert_eq!(store.get(other).await.expect("get missing"), None);
        assert_eq!(store.has(vec![id, other]).await.expect("has"), vec![true, false]);
        assert_eq!(store.stats(), StoreStats { chunks: 1, bytes: 1000, corrupt: 0 });
    }

    #[tokio::test]
    async fn wrong_id_is_refused_and_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).await.expect("open");
        let id = ChunkId::of(b"claimed");
        let err = store.put(id, b"actual".to_vec()).await.expect_err("mismatch");
        assert!(matches!(err, ChunkNodeError::HashMismatch(_)));
        assert_eq!(store.has(vec![id]).await.expect("has"), vec![false]);
        assert_eq!(store.stats().chunks, 0);
    }

    #[tokio::test]
    async fn corruption_is_detected_counted_and_repaired_by_put() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).await.expect("open");
        let data = vec![9u8; 4096];
        let id = ChunkId::of(&data);
        store.put(id, data.clone()).await.expect("put");
        let mut bad = data.clone();
        bad[100] ^= 1;
        fs::write(store.path(&id), &bad).expect("corrupt the file");
        assert_eq!(store.get(id).await.expect("get"), None, "corrupt bytes are never served");
        assert_eq!(store.stats(), StoreStats { chunks: 0, bytes: 0, corrupt: 1 });
        assert_eq!(store.has(vec![id]).await.expect("has"), vec![false]);
        assert_eq!(fs::read_dir(dir.path().join("corrupt")).expect("dir").count(), 1);
        assert!(store.put(id, data.clone()).await.expect("repair put"));
        assert_eq!(store.get(id).await.expect("get"), Some(data));
    }

    #[tokio::test]
    async fn stats_survive_reopen_and_concurrent_puts_are_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).await.expect("open");
        let blocks: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 300 + i as usize]).collect();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            for b in &blocks {
                let (s, b) = (store.clone(), b.clone());
                tasks.push(tokio::spawn(async move { s.put(ChunkId::of(&b), b).await }));
            }
        }
        let mut new = 0;
        for t in tasks {
            new += usize::from(t.await.expect("join").expect("put"));
        }
        assert_eq!(new, 10, "each chunk stored exactly once");
        let expect_bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        assert_eq!(store.stats(), StoreStats { chunks: 10, bytes: expect_bytes, corrupt: 0 });
        drop(store);
        let reopened = ChunkStore::open(dir.path()).await.expect("reopen");
        assert_eq!(reopened.stats(), StoreStats { chunks: 10, bytes: expect_bytes, corrupt: 0 });
    }
}
