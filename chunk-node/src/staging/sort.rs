//! A staging log's block map, in bounded memory: one entry per block (the
//! log's last write of it), ascending by block index.
//!
//! A log is in arrival order and may be far larger than memory (a fully
//! written 16 TiB volume has 33.5 M records, 3.1 GiB). So the map is an
//! external sort: the log is read in runs of at most `run_entries` block
//! entries; each run is sorted and cut to one entry per block; when the log
//! needs more than one run, each sorted run goes to a temporary file beside
//! the log and the runs are merged. Memory: one run while sorting, then one
//! read buffer per run while merging.
//!
//! Which write of a block wins: the greatest `at_ms` (the gateway's
//! acceptance time), and between equal times the later in the log. The
//! gateway merges the replicas' maps by the same rule.

use crate::staging::error::{io, StagingError};
use crate::staging::record::{check_header, Entry, HEADER_LEN, RECORD_LEN};
use cairn_proto::pb::StagingKind;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use tempfile::NamedTempFile;

/// Block entries sorted in memory at once: 262,144 x 96 bytes = 24 MiB,
/// 128 GiB of written volume per run.
pub(crate) const RUN_ENTRIES: usize = 1 << 18;

/// Read buffer per run while merging (and for the log itself).
const READ_BUFFER: usize = 64 << 10;

/// Reads the first `len` bytes of the log at `path` (its durable part) and
/// hands its block map to `emit` in ascending batches of at most `batch`
/// entries. `emit` returns false to stop early (the reader went away).
pub(crate) fn block_map(
    path: &Path,
    len: u64,
    run_entries: usize,
    batch: usize,
    mut emit: impl FnMut(Vec<Entry>) -> bool,
) -> Result<(), StagingError> {
    let mut log =
        BufReader::with_capacity(READ_BUFFER, File::open(path).map_err(|e| io("open", path, e))?);
    let mut header = [0u8; HEADER_LEN as usize];
    log.read_exact(&mut header).map_err(|e| io("read", path, e))?;
    check_header(path, &header)?;
    let records = (len.saturating_sub(HEADER_LEN)) / RECORD_LEN as u64;
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut rec = [0u8; RECORD_LEN];
    for i in 0..records {
        log.read_exact(&mut rec).map_err(|e| io("read", path, e))?;
        let e = Entry::decode(&rec).ok_or_else(|| {
            StagingError::Corrupt(path.to_path_buf(), format!("record {i} is damaged"))
        })?;
        if matches!(e.kind, StagingKind::Block | StagingKind::Zero) {
            run.push(e);
        }
        if run.len() >= run_entries {
            runs.push(spill(path, sorted(std::mem::take(&mut run)))?);
        }
    }
    let last = sorted(run);
    if runs.is_empty() {
        for part in last.chunks(batch.max(1)) {
            if !emit(part.to_vec()) {
                break;
            }
        }
        return Ok(());
    }
    if !last.is_empty() {
        runs.push(spill(path, last)?);
    }
    merge(path, runs, batch, emit)
}

/// Sorts a run by block (stable, so equal times keep log order) and keeps
/// each block's winning write.
fn sorted(mut run: Vec<Entry>) -> Vec<Entry> {
    run.sort_by_key(|e| (e.block_index, e.at_ms));
    let mut out: Vec<Entry> = Vec::with_capacity(run.len());
    for e in run {
        match out.last_mut() {
            Some(prev) if prev.block_index == e.block_index => *prev = e,
            _ => out.push(e),
        }
    }
    out
}

/// Writes a sorted run to a temporary file beside the log (removed when
/// dropped, so a stopped or failed map leaves nothing behind; a crash's
/// leftovers are removed when the node's staging store opens).
fn spill(log: &Path, run: Vec<Entry>) -> Result<NamedTempFile, StagingError> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let file = tempfile::Builder::new()
        .prefix(".sort-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io("create a sort run in", dir, e))?;
    let mut w = BufWriter::with_capacity(READ_BUFFER, file.as_file());
    for e in &run {
        w.write_all(&e.encode()).map_err(|e| io("write", file.path(), e))?;
    }
    w.flush().map_err(|e| io("write", file.path(), e))?;
    drop(w);
    Ok(file)
}

/// One spilled run being merged.
struct Run<'a> {
    file: &'a NamedTempFile,
    reader: BufReader<File>,
}

impl Run<'_> {
    fn next(&mut self) -> Result<Option<Entry>, StagingError> {
        let mut rec = [0u8; RECORD_LEN];
        match self.reader.read_exact(&mut rec) {
            Ok(()) => Entry::decode(&rec).map(Some).ok_or_else(|| {
                StagingError::Corrupt(self.file.path().to_path_buf(), "damaged sort run".into())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io("read", self.file.path(), e)),
        }
    }
}

/// Merges sorted runs (in log order) into the block map.
fn merge(
    log: &Path,
    files: Vec<NamedTempFile>,
    batch: usize,
    mut emit: impl FnMut(Vec<Entry>) -> bool,
) -> Result<(), StagingError> {
    let mut runs = Vec::with_capacity(files.len());
    for f in &files {
        let reader = f.reopen().map_err(|e| io("reopen", f.path(), e))?;
        runs.push(Run { file: f, reader: BufReader::with_capacity(READ_BUFFER, reader) });
    }
    // Heads by (block, run): each run holds a block at most once.
    let mut heads = BinaryHeap::new();
    let mut current: Vec<Option<Entry>> = Vec::with_capacity(runs.len());
    for (i, r) in runs.iter_mut().enumerate() {
        let head = r.next()?;
        if let Some(e) = &head {
            heads.push(Reverse((e.block_index, i)));
        }
        current.push(head);
    }
    let mut out = Vec::with_capacity(batch);
    while let Some(Reverse((block, i))) = heads.pop() {
        let mut best = take_head(&mut current, &mut runs, &mut heads, i)?;
        while let Some(&Reverse((b, j))) = heads.peek() {
            if b != block {
                break;
            }
            heads.pop();
            let e = take_head(&mut current, &mut runs, &mut heads, j)?;
            // Later runs are later in the log: they win equal times.
            if e.at_ms >= best.at_ms {
                best = e;
            }
        }
        out.push(best);
        if out.len() >= batch && !emit(std::mem::replace(&mut out, Vec::with_capacity(batch))) {
            return Ok(());
        }
    }
    if !out.is_empty() {
        emit(out);
    }
    tracing::debug!(log = %log.display(), runs = files.len(), "staging block map merged");
    Ok(())
}

/// Takes run `i`'s head and reads its next entry into the heap.
fn take_head(
    current: &mut [Option<Entry>],
    runs: &mut [Run<'_>],
    heads: &mut BinaryHeap<Reverse<(u64, usize)>>,
    i: usize,
) -> Result<Entry, StagingError> {
    let e = current[i].take().ok_or_else(|| {
        StagingError::Corrupt(runs[i].file.path().to_path_buf(), "sort run lost its head".into())
    })?;
    let next = runs[i].next()?;
    if let Some(n) = &next {
        if n.block_index <= e.block_index {
            return Err(StagingError::Corrupt(
                runs[i].file.path().to_path_buf(),
                "sort run out of order".into(),
            ));
        }
        heads.push(Reverse((n.block_index, i)));
    }
    current[i] = next;
    Ok(e)
}
