//! Changed-block tracking of one volume, by epochs.
//!
//! Every mutation stamps the blocks it touches with the current epoch; a
//! freeze records the epoch it closed and opens the next. The blocks changed
//! since freeze F are exactly those stamped later than F's epoch, so any
//! recorded freeze (pending or long released) can be a parent.
//!
//! Persistence: the small `tracking` file (epochs and the freeze history) is
//! written at every freeze; the stamps themselves only at a clean shutdown,
//! next to the host's clean marker. After an unclean stop the stamps are
//! gone, so tracking restarts at a fresh epoch and `known_from` moves to it:
//! no freeze before that point can serve as a parent (its snapshot's
//! successor reads every block), and nothing is ever silently skipped.

use crate::disk::files::{read_versioned, remove_file, write_versioned};
use crate::error::ChunkNodeError;
use crate::volume::blocks::{blocks_in, BlockSet};
use crate::volume::stamps::Stamps;
use serde::{Deserialize, Serialize};
use std::path::Path;

const META_VERSION: u16 = 1;
/// The `stamps` file: one epoch per block.
const PLAIN_STAMPS_VERSION: u16 = 1;
/// The `stamps.v2` file: [`Stamps`], by region.
const STAMPS_VERSION: u16 = 2;
/// Freezes remembered as possible parents.
const HISTORY: usize = 32;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    epoch: u64,
    known_from: u64,
    history: Vec<(String, u64)>,
}

pub struct Tracking {
    meta: Meta,
    stamps: Stamps,
}

impl Tracking {
    /// A new, empty volume: every change since its creation is known.
    pub fn fresh(size: u64) -> Tracking {
        Tracking {
            meta: Meta { epoch: 1, known_from: 0, history: Vec::new() },
            stamps: Stamps::new(blocks_in(size), 0),
        }
    }

    /// Loads tracking from `dir`. With `clean` (the host stopped cleanly) the
    /// stamps saved at that stop are used; otherwise, or if any file is
    /// missing, tracking is unknown until the next freeze. `freezes` are the
    /// (snapshot, epoch) of freezes found on disk, which may be newer than
    /// the tracking file.
    pub fn load(
        dir: &Path,
        size: u64,
        clean: bool,
        freezes: &[(String, u64)],
    ) -> Result<Tracking, ChunkNodeError> {
        let blocks = blocks_in(size);
        let meta: Option<Meta> = read_versioned(&dir.join("tracking"), META_VERSION)?;
        let saved = load_stamps(dir)?;
        let stamps = if clean { saved } else { None };
        let mut meta = meta.unwrap_or_default();
        for (snap, epoch) in freezes {
            if !meta.history.iter().any(|(s, _)| s == snap) {
                meta.history.push((snap.clone(), *epoch));
            }
            meta.epoch = meta.epoch.max(epoch + 1);
        }
        let stamps = match stamps {
            Some(s) if s.len() == blocks && meta.epoch > 0 => s,
            _ => {
                meta.epoch += 1;
                meta.known_from = meta.epoch;
                tracing::warn!(dir = %dir.display(), "changed-block tracking unknown until the next snapshot");
                Stamps::new(blocks, 0)
            }
        };
        Ok(Tracking { meta, stamps })
    }

    /// Writes the epochs and history (not the stamps).
    pub fn save_meta(&self, dir: &Path) -> Result<(), ChunkNodeError> {
        write_versioned(&dir.join("tracking"), META_VERSION, &self.meta)
    }

    /// Writes everything; for a clean shutdown.
    pub fn save_all(&self, dir: &Path) -> Result<(), ChunkNodeError> {
        self.save_meta(dir)?;
        write_versioned(&dir.join("stamps.v2"), STAMPS_VERSION, &self.stamps)?;
        remove_file(&dir.join("stamps"))
    }

    /// Marks blocks `first..=last` as changed now.
    pub fn stamp(&mut self, first: u64, last: u64) {
        self.stamps.set(first, last, self.meta.epoch);
    }

    /// The volume grew to `size` bytes: its new blocks count as changed since
    /// every earlier freeze, so the next snapshot records them (as zeros).
    pub fn grow(&mut self, size: u64) {
        self.stamps.grow(blocks_in(size), self.meta.epoch);
    }

    /// Whether the changed blocks since some freeze are known exactly.
    pub fn known(&self) -> bool {
        self.meta.epoch > self.meta.known_from
    }

    /// The epoch the next freeze will close.
    pub fn epoch(&self) -> u64 {
        self.meta.epoch
    }

    /// Blocks changed since the freeze of `parent`, if known exactly.
    pub fn changed_since(&self, parent: &str) -> Option<BlockSet> {
        let (_, pe) = self.meta.history.iter().find(|(s, _)| s == parent)?;
        if *pe < self.meta.known_from {
            return None;
        }
        Some(self.stamps.later_than(*pe))
    }

    /// Records a freeze of `snap` closing the current epoch; returns that epoch.
    pub fn freeze(&mut self, snap: &str) -> u64 {
        let epoch = self.meta.epoch;
        self.meta.history.retain(|(s, _)| s != snap);
        self.meta.history.push((snap.to_string(), epoch));
        if self.meta.history.len() > HISTORY {
            let drop = self.meta.history.len() - HISTORY;
            self.meta.history.drain(..drop);
        }
        self.meta.epoch += 1;
        epoch
    }
}

/// The stamps saved at a clean stop: `stamps.v2`, else a `stamps` file
/// written by an earlier build.
///
/// Both files are removed once read: they speak for the stop they were
/// written at only (a later clean stop writes them again), and one left
/// behind could be taken for a later stop's (by this build, after an
/// earlier build wrote the other file at a later stop).
fn load_stamps(dir: &Path) -> Result<Option<Stamps>, ChunkNodeError> {
    let (v2, v1) = (dir.join("stamps.v2"), dir.join("stamps"));
    let stamps = match read_versioned(&v2, STAMPS_VERSION)? {
        Some(s) => Some(s),
        None => {
            read_versioned::<Vec<u64>>(&v1, PLAIN_STAMPS_VERSION)?.map(|p| Stamps::from_plain(&p))
        }
    };
    remove_file(&v2)?;
    remove_file(&v1)?;
    Ok(stamps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::BLOCK_SIZE;

    const SIZE: u64 = 16 * BLOCK_SIZE as u64;

    #[test]
    fn changes_since_any_recorded_freeze() {
        let mut t = Tracking::fresh(SIZE);
        assert!(t.known());
        t.stamp(1, 2);
        t.freeze("s1");
        t.stamp(5, 5);
        t.freeze("s2");
        t.stamp(7, 7);
        let ids = |s: BlockSet| s.iter().collect::<Vec<_>>();
        assert_eq!(ids(t.changed_since("s1").expect("known")), vec![5, 7]);
        assert_eq!(ids(t.changed_since("s2").expect("known")), vec![7]);
        assert!(t.changed_since("unknown").is_none());
    }

    #[test]
    fn grown_blocks_count_as_changed_since_every_earlier_freeze() {
        let mut t = Tracking::fresh(SIZE);
        t.freeze("s1");
        t.stamp(2, 2);
        t.grow(SIZE * 2);
        t.grow(SIZE); // never shrinks
        let ids = |s: BlockSet| s.iter().collect::<Vec<_>>();
        let mut want = vec![2];
        want.extend(16..32);
        assert_eq!(ids(t.changed_since("s1").expect("known")), want);
        t.freeze("s2");
        assert!(ids(t.changed_since("s2").expect("known")).is_empty());
        // A clean stop saves every stamp; the reload at the new size keeps them.
        let dir = tempfile::tempdir().expect("tempdir");
        t.stamp(30, 30);
        t.save_all(dir.path()).expect("save");
        let back = Tracking::load(dir.path(), SIZE * 2, true, &[]).expect("load");
        assert_eq!(ids(back.changed_since("s2").expect("known")), vec![30]);
    }

    #[test]
    fn clean_reload_keeps_stamps_and_unclean_reload_forgets_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Tracking::fresh(SIZE);
        t.freeze("s1");
        t.stamp(3, 3);
        t.save_all(dir.path()).expect("save");
        let clean = Tracking::load(dir.path(), SIZE, true, &[]).expect("load");
        assert!(clean.known());
        assert_eq!(clean.changed_since("s1").expect("known").iter().collect::<Vec<_>>(), vec![3]);

        let mut unclean = Tracking::load(dir.path(), SIZE, false, &[]).expect("load");
        assert!(!unclean.known());
        assert!(unclean.changed_since("s1").is_none(), "a pre-crash parent is refused");
        // A freeze after the crash is a valid parent again.
        unclean.freeze("s2");
        assert!(unclean.known());
        unclean.stamp(9, 9);
        assert_eq!(unclean.changed_since("s2").expect("known").iter().collect::<Vec<_>>(), vec![9]);
    }

    #[test]
    fn stamps_saved_by_an_earlier_build_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Tracking::fresh(SIZE);
        t.freeze("s1");
        t.save_meta(dir.path()).expect("meta");
        let mut plain = vec![0u64; 16];
        plain[3] = t.epoch();
        write_versioned(&dir.path().join("stamps"), PLAIN_STAMPS_VERSION, &plain).expect("v1");
        let back = Tracking::load(dir.path(), SIZE, true, &[]).expect("load");
        assert_eq!(back.changed_since("s1").expect("known").iter().collect::<Vec<_>>(), vec![3]);
        assert!(!dir.path().join("stamps").exists(), "read once");
        back.save_all(dir.path()).expect("save");
        let again = Tracking::load(dir.path(), SIZE, true, &[]).expect("load v2");
        assert_eq!(again.changed_since("s1").expect("known").iter().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn freezes_found_on_disk_join_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tracking::load(dir.path(), SIZE, true, &[("s9".into(), 41)]).expect("load");
        assert!(t.epoch() > 41);
    }
}
