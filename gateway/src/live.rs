//! The live progress of the snapshot copies this gateway follows: what the
//! volume host reported last (percent, blocks read, chunks the destination
//! lacked and was sent). The snapshot record keeps only coarse progress
//! (committed every few percent); this is what `cairn snapshot wait` and
//! the console show between commits, including how much deduplication
//! saved. Only the gateway holding a copy's lease knows it; others answer
//! from the record alone. Entries of finished copies stay a few minutes so
//! a client polling after the end still sees the totals.

use cairn_core::block::BLOCK_SIZE;
use cairn_core::time::now_ms;
use cairn_core::SnapshotId;
use cairn_proto::pb::CopyProgress;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a finished copy's figures stay.
const KEEP_FINISHED_MS: u64 = 10 * 60 * 1000;

/// One copy's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LiveCopy {
    pub percent: u32,
    /// Bytes of the volume read so far (blocks read by this run).
    pub bytes_read: u64,
    /// Bytes of blocks no replica held yet, stored by this run: the data
    /// sent after deduplication (replicas and manifest pages not counted).
    pub bytes_sent: u64,
    pub done: bool,
    /// When the host reported this, ms since the epoch.
    pub updated_ms: u64,
}

#[derive(Default)]
pub struct LiveCopies {
    copies: Mutex<HashMap<SnapshotId, LiveCopy>>,
}

impl LiveCopies {
    /// Records a progress report of the host copying `id`.
    pub fn report(&self, id: &SnapshotId, p: &CopyProgress) {
        let now = now_ms();
        let copy = LiveCopy {
            percent: p.percent,
            bytes_read: p.blocks_read.saturating_mul(BLOCK_SIZE as u64),
            bytes_sent: p.new_data_bytes,
            done: p.done,
            updated_ms: now,
        };
        let mut copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        copies.retain(|_, c| !c.done || now.saturating_sub(c.updated_ms) < KEEP_FINISHED_MS);
        copies.insert(id.clone(), copy);
    }

    pub fn get(&self, id: &SnapshotId) -> Option<LiveCopy> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_report_in_bytes() {
        let live = LiveCopies::default();
        let id = SnapshotId::parse("snap-0123456789abcdef0").expect("id");
        assert_eq!(live.get(&id), None);
        let report = |percent, blocks_read, new_data_bytes, done| CopyProgress {
            percent,
            blocks_read,
            new_data_bytes,
            done,
            ..Default::default()
        };
        live.report(&id, &report(10, 4, 524_288, false));
        live.report(&id, &report(100, 8, 2 * 524_288, true));
        let c = live.get(&id).expect("reported");
        assert_eq!((c.percent, c.done), (100, true));
        assert_eq!((c.bytes_read, c.bytes_sent), (8 * 524_288, 2 * 524_288));
    }
}
