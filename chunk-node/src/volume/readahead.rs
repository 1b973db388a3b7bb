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
            let window_end = (end + WINDOW).min(size);
            // While hydrating, only as far as blocks are local without a gap:
            // a block the hydrator has not written yet is announced on a
            // later read, once it is (announcing past it would leave it out
            // for good, and a reader close behind the hydrator would then
            // wait for the disk on every read).
            let to = match hydration {
                Some(h) => local_prefix(|i| h.is_hydrated(i), size, from, window_end),
                None => window_end,
            };
            // Announce in half windows, not on every read (but what is local
            // behind the hydrator as soon as there is any).
            if to <= from || (to == window_end && to - from < WINDOW / 2) {
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

/// The end of the part of `[from, to)` whose blocks are all local: `from`
/// when its first block is not, `to` when every one is.
fn local_prefix(is_local: impl Fn(u64) -> bool, size: u64, from: u64, to: u64) -> u64 {
    if to <= from {
        return to;
    }
    (block_of(from)..=block_of(to - 1))
        .find(|i| !is_local(*i))
        .map_or(to, |i| block_range(i, size).0.max(from))
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

#[cfg(test)]
mod tests {
    use super::local_prefix;
    use cairn_core::BLOCK_SIZE;

    const B: u64 = BLOCK_SIZE as u64;

    #[test]
    fn the_local_prefix_stops_at_the_first_block_not_local() {
        let size = 100 * B;
        // Blocks 0..10 local, 10 not, 11.. local.
        let local = |i: u64| i != 10;
        assert_eq!(local_prefix(local, size, 0, 8 * B), 8 * B, "all local");
        assert_eq!(local_prefix(local, size, 2 * B + 7, 20 * B), 10 * B, "stops at block 10");
        assert_eq!(
            local_prefix(local, size, 10 * B + 5, 20 * B),
            10 * B + 5,
            "first block missing"
        );
        assert_eq!(local_prefix(local, size, 11 * B, 20 * B), 20 * B, "past the gap");
        assert_eq!(local_prefix(local, size, 5 * B, 5 * B), 5 * B, "empty range");
        // A short last block.
        let size = 10 * B + 100;
        assert_eq!(local_prefix(|i| i < 10, size, 9 * B, size), 10 * B);
        assert_eq!(local_prefix(|_| true, size, 9 * B, size), size);
    }
}
