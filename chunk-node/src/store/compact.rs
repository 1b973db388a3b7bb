//! Compaction: giving the space of swept chunks back to the file system.
//! It owns the removal of pack files, the pack number high-water mark
//! (`next-pack`) and the rewriting of `tombstones.log`.
//!
//! The active pack is first sealed when too little of it is live (a small
//! cluster may never fill one). For every sealed pack the live
//! payload bytes are summed from the index. A pack with none is removed. A
//! pack whose live bytes are below the given fraction of its file size has
//! its live records rewritten through the committer as relocations (see
//! [`crate::store::committer`]): each is read and verified, appended to the
//! active pack and made durable, and only then is its index entry switched
//! (if it still points at the old record). Then the pack leaves `packs` and
//! is unlinked, and the directory is synced.
//!
//! Invariants:
//! - No index entry points at a removed pack. Only the committer moves
//!   entries, always into the active pack, so the entries into a sealed pack
//!   only ever go away; a rewritten pack is removed only once every record
//!   of its file was walked (a damaged header keeps it).
//! - A read never sees a spurious "missing": entries are switched before
//!   the pack leaves `packs`, and a read that finds its pack gone looks the
//!   chunk up again ([`crate::store::shared`]).
//! - Pack numbers are never reused (tombstones name records by pack number):
//!   before a pack is removed, `next-pack` is durably raised past it, and
//!   opening the store starts numbering at the larger of it and the highest
//!   pack found plus one.
//! - A crash leaves only duplicates: a relocated record and its old one
//!   (the first pack wins at open, both are valid), or a stale tombstone of
//!   a removed pack (harmless, as its number is never reused; the next open
//!   or compaction rewrites the log without it).

use crate::disk::direct::align_up;
use crate::disk::files::{fsync_dir, remove_file, write_atomic};
use crate::disk::reclog::RecordLog;
use crate::error::ChunkNodeError;
use crate::store::committer::{Put, Request};
use crate::store::index::SHARDS;
use crate::store::pack::Pack;
use crate::store::packfile::{pack_path, HEADER};
use crate::store::shared::Shared;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// The file holding the pack number high-water mark.
pub(crate) const NEXT_PACK: &str = "next-pack";
pub(crate) const TOMBSTONES: &str = "tombstones.log";
/// Where `tombstones.log` is rewritten before it replaces the old one.
pub(crate) const TOMBSTONES_NEW: &str = "tombstones.log.new";
/// Most relocated payload bytes waiting for the committer at once.
const IN_FLIGHT_BYTES: usize = 32 << 20;

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Packs whose live records were rewritten (then removed).
    pub packs_rewritten: u64,
    /// Packs removed, rewritten ones included.
    pub packs_removed: u64,
    /// Bytes of the removed pack files less the bytes their live records
    /// take where they were rewritten.
    pub bytes_freed: u64,
}

/// Rewrites or removes every sealed pack whose live payload bytes are below
/// `max_live_fraction` of its size. Blocking; one at a time per store.
pub(crate) fn compact(
    shared: &Shared,
    queue: &mpsc::Sender<Request>,
    max_live_fraction: f64,
) -> Result<CompactReport, ChunkNodeError> {
    if !(0.0..=1.0).contains(&max_live_fraction) {
        return Err(ChunkNodeError::InvalidArgument("live fraction outside 0..=1"));
    }
    let live = live_bytes(shared);
    seal_active_if_dead(shared, queue, &live, max_live_fraction)?;
    let mut sealed: Vec<(u32, Arc<Pack>)> = {
        let packs = shared.packs.read().unwrap_or_else(|e| e.into_inner());
        packs.iter().filter(|(_, p)| p.sealed()).map(|(n, p)| (*n, p.clone())).collect()
    };
    sealed.sort_unstable_by_key(|(n, _)| *n);
    let mut targets = Vec::new();
    for (n, pack) in sealed {
        let path = pack_path(&shared.dir, n, true);
        let size = pack.size().map_err(|e| ChunkNodeError::io("stat", &path, e))?;
        let live = live.get(&n).copied().unwrap_or(0);
        if live == 0 || (live as f64) < max_live_fraction * size as f64 {
            targets.push((n, pack, size, live > 0));
        }
    }
    let mut report = CompactReport::default();
    let Some(highest) = targets.iter().map(|(n, ..)| *n).max() else { return Ok(report) };
    raise_next_pack(&shared.dir, highest + 1)?;
    let mut relocated = 0u64;
    for (n, pack, size, has_live) in targets {
        if has_live {
            match relocate(shared, queue, n, &pack)? {
                Some(bytes) => relocated += bytes,
                None => continue,
            }
            report.packs_rewritten += 1;
        }
        shared.packs.write().unwrap_or_else(|e| e.into_inner()).remove(&n);
        pack.remove(&shared.dir, n)?;
        fsync_dir(&shared.dir)?;
        report.packs_removed += 1;
        report.bytes_freed += size;
    }
    report.bytes_freed = report.bytes_freed.saturating_sub(relocated);
    drop_stale_tombstones(shared)?;
    tracing::info!(
        rewritten = report.packs_rewritten,
        removed = report.packs_removed,
        bytes_freed = report.bytes_freed,
        "chunk store compacted"
    );
    Ok(report)
}

/// Asks the committer to seal the active pack when too little of it is
/// live, so that its dead records are given back too (a small cluster may
/// never fill a pack).
fn seal_active_if_dead(
    shared: &Shared,
    queue: &mpsc::Sender<Request>,
    live: &HashMap<u32, u64>,
    max_live_fraction: f64,
) -> Result<(), ChunkNodeError> {
    let active: Vec<(u32, Arc<Pack>)> = {
        let packs = shared.packs.read().unwrap_or_else(|e| e.into_inner());
        packs.iter().filter(|(_, p)| !p.sealed()).map(|(n, p)| (*n, p.clone())).collect()
    };
    for (n, pack) in active {
        let size = pack
            .size()
            .map_err(|e| ChunkNodeError::io("stat", pack_path(&shared.dir, n, false), e))?;
        let live = live.get(&n).copied().unwrap_or(0);
        if size > 0 && (live as f64) < max_live_fraction * size as f64 {
            let (reply, rx) = oneshot::channel();
            queue.send(Request::Seal(reply)).map_err(|_| ChunkNodeError::StoreStopped)?;
            rx.blocking_recv().map_err(|_| ChunkNodeError::StoreStopped)??;
            return Ok(());
        }
    }
    Ok(())
}

/// Live payload bytes per pack, from the index.
fn live_bytes(shared: &Shared) -> HashMap<u32, u64> {
    let mut live = HashMap::new();
    for n in 0..SHARDS {
        for entry in shared.index.read_shard(n).values() {
            *live.entry(entry.loc.pack).or_insert(0) += u64::from(entry.loc.len);
        }
    }
    live
}

/// Rewrites the live records of sealed pack `n` through the committer.
/// Returns the bytes they take in their new pack, or `None` when the pack
/// must stay (its records could not all be walked).
fn relocate(
    shared: &Shared,
    queue: &mpsc::Sender<Request>,
    n: u32,
    pack: &Pack,
) -> Result<Option<u64>, ChunkNodeError> {
    let Some(records) = pack.records(&shared.dir, n)? else {
        tracing::error!(pack = n, "pack not compacted");
        return Ok(None);
    };
    let (mut waiting, mut in_flight, mut moved) = (Vec::new(), 0usize, 0u64);
    for (id, loc) in records {
        if shared.index.loc(&id) != Some(loc) {
            continue;
        }
        // A corrupt record is buried (and so no longer live) by the read.
        let Some(data) = shared.read(id, loc, pack)? else { continue };
        in_flight += data.len();
        moved += align_up(HEADER + data.len() as u64);
        let (reply, rx) = oneshot::channel();
        let put = Put { id, data: Bytes::from(data), hashed: true, relocate: Some(loc), reply };
        queue.send(Request::Put(put)).map_err(|_| ChunkNodeError::StoreStopped)?;
        waiting.push(rx);
        if in_flight >= IN_FLIGHT_BYTES {
            wait_all(&mut waiting)?;
            in_flight = 0;
        }
    }
    wait_all(&mut waiting)?;
    Ok(Some(moved))
}

fn wait_all(
    waiting: &mut Vec<oneshot::Receiver<Result<bool, ChunkNodeError>>>,
) -> Result<(), ChunkNodeError> {
    for rx in waiting.drain(..) {
        rx.blocking_recv().map_err(|_| ChunkNodeError::StoreStopped)??;
    }
    Ok(())
}

/// The pack number high-water mark under `dir`, if one was written.
pub(crate) fn read_next_pack(dir: &Path) -> Result<Option<u32>, ChunkNodeError> {
    let path = dir.join(NEXT_PACK);
    match fs::read(&path) {
        Ok(b) => match <[u8; 4]>::try_from(b.as_slice()) {
            Ok(b) => Ok(Some(u32::from_le_bytes(b))),
            Err(_) => Err(ChunkNodeError::CorruptState { path, why: "not 4 bytes".into() }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ChunkNodeError::io("read", &path, e)),
    }
}

/// Durably raises the high-water mark to at least `next`.
fn raise_next_pack(dir: &Path, next: u32) -> Result<(), ChunkNodeError> {
    if read_next_pack(dir)?.is_some_and(|at| at >= next) {
        return Ok(());
    }
    write_atomic(&dir.join(NEXT_PACK), &next.to_le_bytes())
}

/// A tombstone's (pack, offset).
pub(crate) fn parse_tombstone(p: &[u8]) -> Option<(u32, u64)> {
    let pack = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let offset = u64::from_le_bytes(p.get(4..12)?.try_into().ok()?);
    (p.len() == 12).then_some((pack, offset))
}

/// Rewrites `tombstones.log` under `dir` without the tombstones of packs
/// that are no longer open.
fn drop_stale_tombstones(shared: &Shared) -> Result<(), ChunkNodeError> {
    let mut log = shared.tombstones.lock().unwrap_or_else(|e| e.into_inner());
    let open: Vec<u32> =
        shared.packs.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
    if let Some(new) = rewrite_tombstones(&shared.dir, |pack| open.contains(&pack))? {
        *log = new;
    }
    Ok(())
}

/// Rewrites `tombstones.log` under `dir` keeping the tombstones of the packs
/// `keep` takes (temp file, fsync, rename, directory fsync). Returns the new
/// log, or `None` when every tombstone is kept (nothing rewritten). The
/// caller holds the store's tombstone lock, or is opening the store.
pub(crate) fn rewrite_tombstones(
    dir: &Path,
    keep: impl Fn(u32) -> bool,
) -> Result<Option<RecordLog>, ChunkNodeError> {
    let path = dir.join(TOMBSTONES);
    let mut all = Vec::new();
    drop(RecordLog::open(&path, |_, p| {
        all.push(p.to_vec());
        Ok(())
    })?);
    let kept: Vec<Vec<u8>> =
        all.iter().filter(|p| parse_tombstone(p).is_some_and(|(n, _)| keep(n))).cloned().collect();
    if kept.len() == all.len() {
        return Ok(None);
    }
    let tmp = dir.join(TOMBSTONES_NEW);
    remove_file(&tmp)?;
    let mut new = RecordLog::open(&tmp, |_, _| Ok(()))?;
    for p in &kept {
        new.append(p)?;
    }
    drop(new);
    fs::rename(&tmp, &path).map_err(|e| ChunkNodeError::io("rename to", &path, e))?;
    fsync_dir(dir)?;
    tracing::info!(kept = kept.len(), dropped = all.len() - kept.len(), "tombstones rewritten");
    Ok(Some(RecordLog::open(&path, |_, _| Ok(()))?))
}
