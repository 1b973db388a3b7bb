//! The volume host: each live volume is a sparse file
//! `data_dir/volumes/<vol-id>.img` of the volume's size; a frozen image of a
//! snapshot is `data_dir/frozen/<snap-id>.img`.
//!
//! Point in time: every mutation (write, write-zeroes, trim) holds the
//! volume's gate shared from before it touches the file until it is done, and
//! `freeze` holds it exclusively while it copies. A mutation acknowledged
//! before `freeze` returned finished before freeze took the gate, so it is in
//! the image; one that starts after `freeze` returned runs after the copy.

use crate::error::{check_name, ChunkNodeError};
use crate::sparse;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::RwLock as Gate;

/// One live volume. I/O methods return `std::io::Error` so the NBD server
/// can map them to protocol errnos.
pub struct Volume {
    id: String,
    size: u64,
    path: PathBuf,
    file: Arc<File>,
    gate: Arc<Gate<()>>,
    deleted: AtomicBool,
}

fn gone(id: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("volume {id} was deleted"))
}

impl Volume {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self) -> io::Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(gone(&self.id));
        }
        Ok(())
    }

    pub async fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check()?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Runs a mutation under the shared gate (see the module comment); with
    /// `fua`, the data is durable before it returns.
    async fn mutate<F>(&self, fua: bool, op: F) -> io::Result<()>
    where
        F: FnOnce(&File) -> io::Result<()> + Send + 'static,
    {
        let guard = self.gate.clone().read_owned().await;
        self.check()?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let _held = guard;
            op(&file)?;
            if fua {
                file.sync_data()?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    pub async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        self.mutate(fua, move |f| f.write_all_at(&data, offset)).await
    }

    /// Makes the range read as zeroes; `allocate` keeps it allocated
    /// (NBD's NO_HOLE), otherwise it is deallocated.
    pub async fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        allocate: bool,
        fua: bool,
    ) -> io::Result<()> {
        self.mutate(fua, move |f| {
            if allocate {
                sparse::write_zeroes(f, offset, len)
            } else {
                sparse::punch_hole(f, offset, len)
            }
        })
        .await
    }

    /// Discards the range (it then reads as zeroes).
    pub async fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.mutate(fua, move |f| sparse::punch_hole(f, offset, len)).await
    }

    /// Makes every completed write durable.
    pub async fn flush(&self) -> io::Result<()> {
        self.check()?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_all()).await.map_err(io::Error::other)?
    }
}

/// All volumes of this node and their frozen images.
#[derive(Clone)]
pub struct VolumeHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    volumes_dir: PathBuf,
    frozen_dir: PathBuf,
    volumes: RwLock<HashMap<String, Arc<Volume>>>,
}

fn fsync_dir(dir: &Path) -> Result<(), ChunkNodeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ChunkNodeError::io("fsync directory", dir, e))
}

fn open_rw(path: &Path) -> Result<File, ChunkNodeError> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ChunkNodeError::io("open", path, e))
}

impl VolumeHost {
    /// Opens the volumes under `data_dir`, dropping temp files of unfinished
    /// creates, restores and freezes.
    pub async fn open(data_dir: &Path) -> Result<VolumeHost, ChunkNodeError> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir)).await?
    }

    fn open_blocking(data_dir: &Path) -> Result<VolumeHost, ChunkNodeError> {
        let volumes_dir = data_dir.join("volumes");
        let frozen_dir = data_dir.join("frozen");
        let mut volumes = HashMap::new();
        for d in [&volumes_dir, &frozen_dir] {
            fs::create_dir_all(d).map_err(|e| ChunkNodeError::io("create", d, e))?;
            for entry in fs::read_dir(d).map_err(|e| ChunkNodeError::io("list", d, e))? {
                let entry = entry.map_err(|e| ChunkNodeError::io("list", d, e))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp") {
                    fs::remove_file(&path).map_err(|e| ChunkNodeError::io("remove", &path, e))?;
                    continue;
                }
                if d != &volumes_dir {
                    continue;
                }
                let Some(id) = name.strip_suffix(".img") else { continue };
                let file = open_rw(&path)?;
                let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", &path, e))?.len();
                volumes.insert(id.to_string(), Arc::new(Self::volume(id, size, path, file)));
            }
        }
        tracing::info!(volumes = volumes.len(), "volume host opened");
        Ok(VolumeHost {
            inner: Arc::new(HostInner { volumes_dir, frozen_dir, volumes: RwLock::new(volumes) }),
        })
    }

    fn volume(id: &str, size: u64, path: PathBuf, file: File) -> Volume {
        Volume {
            id: id.to_string(),
            size,
            path,
            file: Arc::new(file),
            gate: Arc::new(Gate::new(())),
            deleted: AtomicBool::new(false),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.inner.volumes_dir.join(format!("{id}.img"))
    }

    fn frozen_path(&self, snap: &str) -> PathBuf {
        self.inner.frozen_dir.join(format!("{snap}.img"))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Volume>> {
        self.inner.volumes.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// (id, size) of every volume, sorted by id.
    pub fn list(&self) -> Vec<(String, u64)> {
        let map = self.inner.volumes.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().map(|v| (v.id.clone(), v.size)).collect();
        v.sort();
        v
    }

    /// A temp file in the volumes directory, of `size` bytes, all holes:
    /// where a restore assembles a volume before [`VolumeHost::install`].
    pub(crate) async fn staging(
        &self,
        size: u64,
    ) -> Result<tempfile::NamedTempFile, ChunkNodeError> {
        let dir = self.inner.volumes_dir.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = tempfile::Builder::new()
                .prefix(".tmp")
                .tempfile_in(&dir)
                .map_err(|e| ChunkNodeError::io("create temp in", &dir, e))?;
            tmp.as_file().set_len(size).map_err(|e| ChunkNodeError::io("size", tmp.path(), e))?;
            Ok(tmp)
        })
        .await?
    }

    /// Creates an empty volume of `size` bytes. Idempotent: an existing
    /// volume of the same size is left as it is.
    pub async fn create(&self, id: &str, size: u64) -> Result<(), ChunkNodeError> {
        check_name("volume id", id)?;
        if size == 0 {
            return Err(ChunkNodeError::InvalidArgument("volume size must be positive"));
        }
        if let Some(v) = self.existing(id, size)? {
            return Ok(v);
        }
        let tmp = self.staging(size).await?;
        self.install(id, size, tmp).await
    }

    /// `Some(())` when `id` exists with `size`; an error if with another size.
    fn existing(&self, id: &str, size: u64) -> Result<Option<()>, ChunkNodeError> {
        match self.get(id) {
            Some(v) if v.size == size => Ok(Some(())),
            Some(v) => Err(ChunkNodeError::VolumeExists { id: id.into(), size: v.size }),
            None => Ok(None),
        }
    }

    /// Makes a fully written staging file the volume `id` (fsync, rename,
    /// directory fsync), unless the volume appeared meanwhile.
    pub(crate) async fn install(
        &self,
        id: &str,
        size: u64,
        tmp: tempfile::NamedTempFile,
    ) -> Result<(), ChunkNodeError> {
        check_name("volume id", id)?;
        let host = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            let mut map = host.inner.volumes.write().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = map.get(&id) {
                return if v.size == size {
                    Ok(())
                } else {
                    Err(ChunkNodeError::VolumeExists { id: id.clone(), size: v.size })
                };
            }
            tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", tmp.path(), e))?;
            let path = host.path(&id);
            let file =
                tmp.persist(&path).map_err(|e| ChunkNodeError::io("rename to", &path, e.error))?;
            fsync_dir(&host.inner.volumes_dir)?;
            map.insert(id.clone(), Arc::new(Self::volume(&id, size, path, file)));
            tracing::info!(volume = %id, size, "volume created");
            Ok(())
        })
        .await?
    }

    /// Deletes a volume; open NBD connections to it then fail their I/O.
    /// Deleting a missing volume succeeds.
    pub async fn delete(&self, id: &str) -> Result<(), ChunkNodeError> {
        check_name("volume id", id)?;
        let removed = self.inner.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        let Some(vol) = removed else { return Ok(()) };
        // Wait for in-flight mutations, then refuse new ones.
        let _g = vol.gate.clone().write_owned().await;
        vol.deleted.store(true, Ordering::Release);
        let dir = self.inner.volumes_dir.clone();
        let path = vol.path.clone();
        tokio::task::spawn_blocking(move || {
            fs::remove_file(&path).map_err(|e| ChunkNodeError::io("remove", &path, e))?;
            fsync_dir(&dir)
        })
        .await??;
        tracing::info!(volume = %id, "volume deleted");
        Ok(())
    }

    /// Freezes `vol` for snapshot `snap`: a sparse copy of the volume as of
    /// now, fsynced, at the snapshot's frozen path. Idempotent: an existing
    /// frozen image (always complete, thanks to the rename) is kept.
    pub async fn freeze(&self, vol: &str, snap: &str) -> Result<(), ChunkNodeError> {
        check_name("volume id", vol)?;
        check_name("snapshot id", snap)?;
        let volume = self.get(vol).ok_or_else(|| ChunkNodeError::VolumeNotFound(vol.into()))?;
        let dest = self.frozen_path(snap);
        let guard = volume.gate.clone().write_owned().await;
        if volume.deleted.load(Ordering::Acquire) {
            return Err(ChunkNodeError::VolumeNotFound(vol.into()));
        }
        let frozen_dir = self.inner.frozen_dir.clone();
        let started = std::time::Instant::now();
        let copied = tokio::task::spawn_blocking(move || {
            let _held = guard;
            if dest.exists() {
                return Ok(None);
            }
            // A separate descriptor: the extent walk moves its seek offset.
            let src = File::open(&volume.path)
                .map_err(|e| ChunkNodeError::io("open", &volume.path, e))?;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp")
                .tempfile_in(&frozen_dir)
                .map_err(|e| ChunkNodeError::io("create temp in", &frozen_dir, e))?;
            let copied = sparse::sparse_copy(&src, tmp.as_file(), volume.size)
                .map_err(|e| ChunkNodeError::io("freeze copy of", &volume.path, e))?;
            tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", tmp.path(), e))?;
            tmp.persist(&dest).map_err(|e| ChunkNodeError::io("rename to", &dest, e.error))?;
            fsync_dir(&frozen_dir)?;
            Ok::<_, ChunkNodeError>(Some(copied))
        })
        .await??;
        match copied {
            Some(bytes) => {
                tracing::info!(volume = vol, snapshot = snap, bytes, elapsed = ?started.elapsed(), "volume frozen")
            }
            None => tracing::debug!(volume = vol, snapshot = snap, "already frozen"),
        }
        Ok(())
    }

    /// The frozen image of `snap`, opened for reading, or `NotFrozen`.
    pub(crate) async fn open_frozen(&self, snap: &str) -> Result<(File, u64), ChunkNodeError> {
        check_name("snapshot id", snap)?;
        let path = self.frozen_path(snap);
        let snap = snap.to_string();
        tokio::task::spawn_blocking(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ChunkNodeError::NotFrozen(snap))
                }
                Err(e) => return Err(ChunkNodeError::io("open", &path, e)),
            };
            let size = file.metadata().map_err(|e| ChunkNodeError::io("stat", &path, e))?.len();
            Ok((file, size))
        })
        .await?
    }

    /// Drops the frozen image of `snap`; releasing twice succeeds.
    pub async fn release(&self, snap: &str) -> Result<(), ChunkNodeError> {
        check_name("snapshot id", snap)?;
        let path = self.frozen_path(snap);
        tokio::task::spawn_blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ChunkNodeError::io("remove", &path, e)),
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_is_idempotent_and_freeze_captures_the_instant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = VolumeHost::open(dir.path()).await.expect("open");
        host.create("vol-1", 8 << 20).await.expect("create");
        host.create("vol-1", 8 << 20).await.expect("create again");
        assert!(matches!(
            host.create("vol-1", 4 << 20).await,
            Err(ChunkNodeError::VolumeExists { .. })
        ));
        assert!(host.create("../x", 1).await.is_err());

        let v = host.get("vol-1").expect("volume");
        v.write(1 << 20, vec![7u8; 4096], false).await.expect("write");
        host.freeze("vol-1", "snap-1").await.expect("freeze");
        v.write(1 << 20, vec![8u8; 4096], false).await.expect("write after");
        host.freeze("vol-1", "snap-1").await.expect("freeze is idempotent");

        let (frozen, size) = host.open_frozen("snap-1").await.expect("frozen");
        assert_eq!(size, 8 << 20);
        let mut buf = vec![0u8; 4096];
        frozen.read_exact_at(&mut buf, 1 << 20).expect("read");
        assert_eq!(buf, vec![7u8; 4096]);
        assert_eq!(v.read(1 << 20, 4096).await.expect("read live"), vec![8u8; 4096]);

        host.release("snap-1").await.expect("release");
        host.release("snap-1").await.expect("release twice");
        assert!(matches!(host.open_frozen("snap-1").await, Err(ChunkNodeError::NotFrozen(_))));

        drop(host);
        let host = VolumeHost::open(dir.path()).await.expect("reopen");
        assert_eq!(host.list(), vec![("vol-1".to_string(), 8 << 20)]);
        let v = host.get("vol-1").expect("volume after reopen");
        assert_eq!(v.read(1 << 20, 4096).await.expect("read"), vec![8u8; 4096]);
        host.delete("vol-1").await.expect("delete");
        assert!(v.read(0, 1).await.is_err(), "open handles fail after delete");
        assert!(host.list().is_empty());
    }

    /// Writes racing a freeze: the frozen image holds a prefix of the
    /// sequential writes that includes every write acknowledged before the
    /// freeze was called and none that started after it returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn freeze_is_atomic_with_respect_to_concurrent_writes() {
        use std::sync::atomic::AtomicU64;
        const N: u64 = 2000;
        let dir = tempfile::tempdir().expect("tempdir");
        let host = VolumeHost::open(dir.path()).await.expect("open");
        host.create("vol-1", N * 4096).await.expect("create");
        let v = host.get("vol-1").expect("volume");
        let started = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let writer = {
            let (v, started, acked) = (v.clone(), started.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..N {
                    started.store(i + 1, Ordering::SeqCst);
                    v.write(i * 4096, vec![1u8; 4096], false).await.expect("write");
                    acked.store(i + 1, Ordering::SeqCst);
                }
            })
        };
        while acked.load(Ordering::SeqCst) < 50 {
            tokio::task::yield_now().await;
        }
        let acked_before = acked.load(Ordering::SeqCst);
        host.freeze("vol-1", "snap-1").await.expect("freeze");
        let started_after = started.load(Ordering::SeqCst);
        writer.await.expect("writer");

        let (frozen, _) = host.open_frozen("snap-1").await.expect("frozen");
        let mut image = vec![0u8; (N * 4096) as usize];
        frozen.read_exact_at(&mut image, 0).expect("read image");
        let present: Vec<bool> = image.chunks(4096).map(|b| b[0] == 1).collect();
        let k = present.iter().take_while(|p| **p).count() as u64;
        assert!(present[k as usize..].iter().all(|p| !p), "image is a prefix of the writes");
        assert!(k >= acked_before, "acknowledged writes are in: {k} < {acked_before}");
        assert!(k <= started_after, "later writes are not: {k} > {started_after}");
    }
}
