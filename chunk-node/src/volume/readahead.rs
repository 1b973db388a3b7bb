//! Read-ahead for sequential readers of a volume, over data only.
//!
//! Volume files are opened with readahead off (see [`crate::disk::sparse::no_readahead`]):
//! kernel readahead past a request pulled holes into the page cache. But a
//! reader that walks a volume in order (`qemu-img convert` or `compare`, a
//! backup agent, `dd`) waits for each reply before asking again, so every
//! read that misses the page cache waits for the disk in turn; after a
//! restore every block misses, as the hydrator writes past the page cache.
//! So when reads move forward, the data extents of the next
//! [`WINDOW`] bytes are announced to the kernel (`POSIX_FADV_WILLNEED`,
//! which reads them in the background) while the current reply is sent.
//!
//! On a volume still hydrating only blocks already local are announced: a
//! block not yet local may be being written by the hydrator with direct I/O,
//! which must not race a buffered read of the same range.

use crate::disk::volfile::VolumeFile;
use crate::volume::blocks::{block_of, block_range};
use crate::volume::hydration::Hydration;
use std::sync::{Arc, Mutex};

/// How far ahead of a sequential reader data is announced.
const WINDOW: u64 = 16 << 20;
/// A read starting at most this far past the previous one's end still
/// counts as moving forward (sequential readers skip holes).
const GAP: u64 = WINDOW;

/// Where the reader was, and how far data has been announced.
#[derive(Default)]
pub(crate) struct Readahead {
    state: Mutex<(u64, u64)>,
}

impl Readahead {
    /// Notes a read of `[offset, end)` of `file` (of `size` bytes); when the
    /// reader is moving forward and the announced range runs short, announces
    /// the next window's data on the blocking pool.
    pub(crate) fn note(
        &self,
        file: &Arc<VolumeFile>,
        size: u64,
        hydration: Option<&Arc<Hydration>>,
        offset: u64,
        end: u64,
    ) {
        let (from, to) = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (next, announced) = *s;
            let forward = offset >= next && offset - next <= GAP;
            if !forward {
                *s = (end, end);
                return;
            }
            let from = announced.max(end);
            let to = (end + WINDOW).min(size);
            // Announce in half windows, not on every read.
            if to <= from || to - from < WINDOW / 2 {
                s.0 = end;
                return;
            }
            *s = (end, to);
            (from, to)
        };
        let (file, hydration) = (file.clone(), hydration.cloned());
        tokio::task::spawn_blocking(move || announce(&file, size, hydration.as_deref(), from, to));
    }
}

/// Asks the kernel to read the data (local data, while hydrating) of
/// `[from, to)`. Advice only: failures change nothing.
fn announce(file: &VolumeFile, size: u64, hydration: Option<&Hydration>, from: u64, to: u64) {
    let Ok(extents) = file.data_extents_in(from, to) else { return };
    for (start, stop) in extents {
        let mut pieces = vec![(start, stop)];
        if let Some(h) = hydration {
            pieces = (block_of(start)..=block_of(stop - 1))
                .filter(|i| h.is_hydrated(*i))
                .map(|i| {
                    let (bs, be) = block_range(i, size);
                    (bs.max(start), be.min(stop))
                })
                .collect();
        }
        for (s, e) in pieces {
            file.will_need(s, e - s);
        }
    }
}
