//! A staging log's block map, in bounded memory: one entry per block (the
//! log's last write of it), ascending by block index.
//!
//! A log is in arrival order and may be far larger than memory (a fully
//! written 16 TiB volume has 33.5 M records, 2.9 GiB). So the map is an
//! external sort: the log is read in runs of at most `run_entries` block
//! entries; each run is sorted and cut to one entry per block in place; when
//! the log needs more than one run, each sorted run goes to a temporary file
//! beside the log and the runs are merged, at most [`MAX_FAN_IN`] at a time
//! (more are first merged in consecutive groups, one run per group).
//! Memory: one run while sorting, then one read buffer per merged run.
//!
//! Which write of a block wins: the greatest `at_ms` (the gateway's
//! acceptance time), and between equal times the later in the log. The
//! gateway merges the replicas' maps by the same rule.

use crate::staging::error::{io, StagingError};
use crate::staging::record::{Entry, Records, RECORD_LEN};
use cairn_proto::pb::StagingKind;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use tempfile::TempPath;

/// Block entries sorted in memory at once: 262,144 x 96 bytes = 24 MiB,
/// 128 GiB of written volume per run.
pub(crate) const RUN_ENTRIES: usize = 1 << 18;

/// Runs merged at once (one open file and read buffer each).
const MAX_FAN_IN: usize = 64;

/// Read buffer per run while merging.
const READ_BUFFER: usize = 64 << 10;

/// Records read between looks at whether the reader went away.
const STOP_EVERY: u64 = 4096;

/// Reads the first `len` bytes of the log at `path` (its durable part) and
/// hands its block map to `emit` in ascending batches of at most `batch`
/// entries. `emit` returns false to stop (the reader went away); `stopped`
/// says so while the log is still being sorted, before the first batch.
/// True when the whole map was handed over.
pub(crate) fn block_map(
    path: &Path,
    len: u64,
    run_entries: usize,
    batch: usize,
    stopped: impl Fn() -> bool,
    mut emit: impl FnMut(Vec<Entry>) -> bool,
) -> Result<bool, StagingError> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    let mut records = Records::open(path, file, len)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut runs = Vec::new();
    let mut run = Vec::new();
    while let Some((i, entry)) = records.next()? {
        if i % STOP_EVERY == 0 && stopped() {
            return Ok(false);
        }
        let e = entry.ok_or_else(|| {
            StagingError::Corrupt(path.to_path_buf(), format!("record {i} is damaged"))
        })?;
        if matches!(e.kind, StagingKind::Block | StagingKind::Zero) {
            run.push(e);
        }
        if run.len() >= run_entries {
            sort_run(&mut run);
            runs.push(spill(dir, run.drain(..))?);
        }
    }
    sort_run(&mut run);
    if runs.is_empty() {
        return Ok(run.chunks(batch.max(1)).all(|part| emit(part.to_vec())));
    }
    if !run.is_empty() {
        runs.push(spill(dir, run.drain(..))?);
    }
    drop(run);
    // Merge consecutive groups into one run each until the rest can be
    // merged at once; each merged run takes its group's place, so log order
    // is kept.
    while runs.len() > MAX_FAN_IN {
        let mut merged = Vec::with_capacity(runs.len().div_ceil(MAX_FAN_IN));
        let mut left = runs.into_iter();
        loop {
            let group: Vec<TempPath> = left.by_ref().take(MAX_FAN_IN).collect();
            match group.len() {
                0 => break,
                1 => merged.extend(group),
                _ => match spill_merge(dir, &group, &stopped)? {
                    Some(run) => merged.push(run),
                    None => return Ok(false),
                },
            }
        }
        runs = merged;
    }
    merge(&runs, batch, emit)
}

/// Sorts a run by block (stable, so equal times keep log order) and keeps
/// each block's winning write, in place.
fn sort_run(run: &mut Vec<Entry>) {
    run.sort_by_key(|e| (e.block_index, e.at_ms));
    // `later` follows `kept`; a later write of the same block replaces it.
    run.dedup_by(|later, kept| {
        let same = later.block_index == kept.block_index;
        if same {
            *kept = *later;
        }
        same
    });
}

/// A new temporary file beside the log (removed when its path drops, so a
/// stopped or failed map leaves nothing behind; a crash's leftovers are
/// removed when the node's staging store opens).
fn run_file(dir: &Path) -> Result<(File, TempPath), StagingError> {
    let file = tempfile::Builder::new()
        .prefix(".sort-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io("create a sort run in", dir, e))?;
    let (file, path) = file.into_parts();
    Ok((file, path))
}

/// Writes sorted entries to a new run file.
fn spill(dir: &Path, entries: impl Iterator<Item = Entry>) -> Result<TempPath, StagingError> {
    let (file, path) = run_file(dir)?;
    let mut w = BufWriter::with_capacity(READ_BUFFER, file);
    for e in entries {
        w.write_all(&e.encode()).map_err(|e| io("write", &path, e))?;
    }
    w.flush().map_err(|e| io("write", &path, e))?;
    Ok(path)
}

/// Merges `runs` into one new run file; `None` when stopped.
fn spill_merge(
    dir: &Path,
    runs: &[TempPath],
    stopped: &impl Fn() -> bool,
) -> Result<Option<TempPath>, StagingError> {
    let (file, path) = run_file(dir)?;
    let mut w = BufWriter::with_capacity(READ_BUFFER, file);
    let mut failed = None;
    let whole = merge(runs, 1024, |part| {
        for e in part {
            if let Err(err) = w.write_all(&e.encode()) {
                failed = Some(err);
                return false;
            }
        }
        !stopped()
    })?;
    if let Some(e) = failed {
        return Err(io("write", &path, e));
    }
    if !whole {
        return Ok(None);
    }
    w.flush().map_err(|e| io("write", &path, e))?;
    Ok(Some(path))
}

/// One run being merged.
struct Run<'a> {
    path: &'a Path,
    reader: BufReader<File>,
    head: Option<Entry>,
}

impl Run<'_> {
    /// Reads the next entry into `head`, checking the order.
    fn advance(&mut self) -> Result<(), StagingError> {
        let corrupt = |what: &str| StagingError::Corrupt(self.path.to_path_buf(), what.into());
        let mut rec = [0u8; RECORD_LEN];
        let next = match self.reader.read_exact(&mut rec) {
            Ok(()) => Some(Entry::decode(&rec).ok_or_else(|| corrupt("damaged sort run"))?),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(io("read", self.path, e)),
        };
        if let (Some(n), Some(h)) = (&next, &self.head) {
            if n.block_index <= h.block_index {
                return Err(corrupt("sort run out of order"));
            }
        }
        self.head = next;
        Ok(())
    }
}

/// Merges sorted runs (given in log order) into the block map; true when
/// every batch was taken.
fn merge(
    paths: &[TempPath],
    batch: usize,
    mut emit: impl FnMut(Vec<Entry>) -> bool,
) -> Result<bool, StagingError> {
    let mut runs = Vec::with_capacity(paths.len());
    // Heads by (block, run): each run holds a block at most once.
    let mut heads = BinaryHeap::new();
    for (i, p) in paths.iter().enumerate() {
        let file = File::open(p).map_err(|e| io("open", p, e))?;
        let mut run =
            Run { path: p, reader: BufReader::with_capacity(READ_BUFFER, file), head: None };
        run.advance()?;
        if let Some(e) = &run.head {
            heads.push(Reverse((e.block_index, i)));
        }
        runs.push(run);
    }
    let batch = batch.max(1);
    let mut out = Vec::with_capacity(batch);
    while let Some(Reverse((block, first))) = heads.pop() {
        let mut best: Option<Entry> = None;
        let mut next = Some(first);
        // Runs holding this block come off the heap in run (log) order, so
        // a later one wins equal times.
        while let Some(i) = next {
            let run = &mut runs[i];
            let e = run.head.ok_or_else(|| {
                StagingError::Corrupt(run.path.to_path_buf(), "sort run lost its head".into())
            })?;
            if best.is_none_or(|b| e.at_ms >= b.at_ms) {
                best = Some(e);
            }
            run.advance()?;
            if let Some(n) = &run.head {
                heads.push(Reverse((n.block_index, i)));
            }
            next = match heads.peek() {
                Some(&Reverse((b, j))) if b == block => {
                    heads.pop();
                    Some(j)
                }
                _ => None,
            };
        }
        out.extend(best);
        if out.len() >= batch && !emit(std::mem::replace(&mut out, Vec::with_capacity(batch))) {
            return Ok(false);
        }
    }
    Ok(out.is_empty() || emit(out))
}
