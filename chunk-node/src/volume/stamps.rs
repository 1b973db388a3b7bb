//! The epoch stamps of change tracking ([`crate::volume::tracking`]), one
//! per block, kept by region so that memory follows what was written, not
//! the volume's size: a 16 TiB volume has 33,554,432 blocks, 256 MiB of
//! plain stamps, while a region no write touched since it was created or
//! grown is one number.

use crate::volume::blocks::BlockSet;
use serde::{Deserialize, Serialize};

/// Blocks per region: 4096 x 512 KiB = 2 GiB of volume (a manifest page),
/// 32 KiB of stamps when held per block.
const REGION: u64 = 4096;
/// Stamps a region holds as exceptions to one value before it holds one
/// per block instead (256 x 16 bytes: 4 KiB, an eighth of per block).
const SPARSE_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Region {
    /// Every block has this stamp.
    Uniform(u64),
    /// Every block has `base` but those in `marks` (offset in the region,
    /// stamp; ascending by offset): a region a few scattered writes touched.
    Sparse { base: u64, marks: Vec<(u32, u64)> },
    /// One stamp per block.
    Blocks(Box<[u64]>),
}

impl Region {
    /// One stamp per block, for a region of `len` blocks.
    fn dense(&self, len: usize) -> Vec<u64> {
        match self {
            Region::Uniform(v) => vec![*v; len],
            Region::Sparse { base, marks } => {
                let mut b = vec![*base; len];
                for (k, v) in marks {
                    b[*k as usize] = *v;
                }
                b
            }
            Region::Blocks(b) => b.to_vec(),
        }
    }

    /// Stamps offsets `[from, to)` of a region of `len` blocks with `epoch`.
    fn set(&mut self, from: u64, to: u64, len: u64, epoch: u64) {
        if from == 0 && to == len {
            *self = Region::Uniform(epoch);
            return;
        }
        let few = (to - from) as usize <= SPARSE_MAX;
        match self {
            Region::Uniform(v) if *v == epoch => {}
            Region::Uniform(v) if few => {
                let marks = (from..to).map(|k| (k as u32, epoch)).collect();
                *self = Region::Sparse { base: *v, marks };
            }
            Region::Sparse { marks, .. }
                if few && marks.len() + (to - from) as usize <= SPARSE_MAX =>
            {
                for k in from..to {
                    match marks.binary_search_by_key(&(k as u32), |m| m.0) {
                        Ok(at) => marks[at].1 = epoch,
                        Err(at) => marks.insert(at, (k as u32, epoch)),
                    }
                }
            }
            Region::Blocks(b) => b[from as usize..to as usize].fill(epoch),
            _ => {
                let mut b = self.dense(len as usize);
                b[from as usize..to as usize].fill(epoch);
                *self = Region::Blocks(b.into());
            }
        }
    }

    /// Inserts into `set` the blocks (the region starting at block `start`,
    /// of `len` blocks) stamped later than `epoch`.
    fn later_than(&self, start: u64, len: u64, epoch: u64, set: &mut BlockSet) {
        match self {
            Region::Uniform(v) => {
                if *v > epoch {
                    (start..start + len).for_each(|i| set.insert(i));
                }
            }
            Region::Sparse { base, marks } if *base <= epoch => {
                for (k, v) in marks {
                    if *v > epoch {
                        set.insert(start + u64::from(*k));
                    }
                }
            }
            Region::Sparse { base, marks } => {
                let mut next = marks.iter().peekable();
                for k in 0..len {
                    let v = match next.peek() {
                        Some((at, v)) if u64::from(*at) == k => {
                            next.next();
                            *v
                        }
                        _ => *base,
                    };
                    if v > epoch {
                        set.insert(start + k);
                    }
                }
            }
            Region::Blocks(b) => {
                for (k, v) in b.iter().enumerate() {
                    if *v > epoch {
                        set.insert(start + k as u64);
                    }
                }
            }
        }
    }
}

/// One epoch per block, for `len` blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamps {
    len: u64,
    regions: Vec<Region>,
}

impl Stamps {
    /// `len` blocks, all stamped `epoch`.
    pub(crate) fn new(len: u64, epoch: u64) -> Stamps {
        Stamps { len, regions: vec![Region::Uniform(epoch); len.div_ceil(REGION) as usize] }
    }

    /// Plain stamps, one per block (the version 1 file).
    pub(crate) fn from_plain(plain: &[u64]) -> Stamps {
        let mut s = Stamps::new(plain.len() as u64, 0);
        for (i, e) in plain.iter().enumerate() {
            if *e != 0 {
                s.set(i as u64, i as u64, *e);
            }
        }
        s
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Blocks in region `r`.
    fn region_len(&self, r: u64) -> u64 {
        (self.len - r * REGION).min(REGION)
    }

    /// Stamps blocks `first..=last` (clipped to the length) with `epoch`.
    pub(crate) fn set(&mut self, first: u64, last: u64, epoch: u64) {
        let end = (last + 1).min(self.len);
        let mut i = first;
        while i < end {
            let r = i / REGION;
            let (start, len) = (r * REGION, self.region_len(r));
            let to = (start + len).min(end);
            self.regions[r as usize].set(i - start, to - start, len, epoch);
            i = to;
        }
    }

    /// Grows to `len` blocks, the new ones stamped `epoch`; never shrinks.
    pub(crate) fn grow(&mut self, len: u64, epoch: u64) {
        if len <= self.len {
            return;
        }
        let old = self.len;
        if !old.is_multiple_of(REGION) {
            // The partial last region takes its share of the new blocks.
            let start = old / REGION * REGION;
            let end = (start + REGION).min(len);
            let last = self.regions.last_mut().expect("a partial region is a region");
            let mut b = last.dense((old - start) as usize);
            b.resize((end - start) as usize, epoch);
            *last = Region::Blocks(b.into());
        }
        self.len = len;
        self.regions.resize(len.div_ceil(REGION) as usize, Region::Uniform(epoch));
    }

    /// The blocks stamped later than `epoch`.
    pub(crate) fn later_than(&self, epoch: u64) -> BlockSet {
        let mut set = BlockSet::new(self.len);
        for (r, region) in self.regions.iter().enumerate() {
            let r = r as u64;
            region.later_than(r * REGION, self.region_len(r), epoch, &mut set);
        }
        set
    }

    /// Bytes of stamps held (to show that memory follows writes).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.regions
            .iter()
            .map(|r| match r {
                Region::Uniform(_) => 0,
                Region::Sparse { marks, .. } => marks.len() * 16,
                Region::Blocks(b) => b.len() * 8,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain stamps `s` stands for.
    fn plain(s: &Stamps) -> Vec<u64> {
        let mut out = Vec::new();
        for r in &s.regions {
            out.extend(r.dense(REGION as usize));
        }
        out.truncate(s.len as usize);
        out
    }

    #[test]
    fn stamps_equal_a_plain_array_through_sets_and_grows() {
        let mut s = Stamps::new(3 * REGION + 100, 0);
        let mut p = vec![0u64; (3 * REGION + 100) as usize];
        let mut seed = 12345u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for epoch in 1..200u64 {
            let len = p.len() as u64;
            if epoch % 50 == 0 {
                let to = len + next() % (2 * REGION);
                s.grow(to, epoch);
                p.resize(to as usize, epoch);
                continue;
            }
            let first = next() % len;
            let last = (first + next() % (REGION + 10)).min(len + 5);
            s.set(first, last, epoch);
            let end = ((last + 1).min(len)) as usize;
            p[first as usize..end].fill(epoch);
            assert_eq!(s.len(), p.len() as u64);
            let cut = next() % epoch;
            let want: Vec<u64> = (0..p.len() as u64).filter(|i| p[*i as usize] > cut).collect();
            assert_eq!(s.later_than(cut).iter().collect::<Vec<_>>(), want, "epoch {epoch}");
        }
        assert_eq!(plain(&s), p);
        assert_eq!(Stamps::from_plain(&p), Stamps::from_plain(&plain(&s)));
        assert_eq!(plain(&Stamps::from_plain(&p)), p);
    }

    #[test]
    fn a_big_sparse_volume_holds_stamps_only_where_written() {
        // 16 TiB of 512 KiB blocks; 1 GiB written in 2048 scattered blocks.
        let blocks = 32 << 20;
        let mut s = Stamps::new(blocks, 0);
        for k in 0..2048u64 {
            let i = k * (blocks / 2048) + 7;
            s.set(i, i, 3);
        }
        assert!(s.held() <= 2048 * 16, "{}", s.held());
        assert_eq!(s.later_than(2).count(), 2048);
        s.set(0, blocks - 1, 4);
        assert_eq!(s.held(), 0, "a whole overwrite is uniform again");
        // 0.1% changed, one block in a thousand: every region touched.
        for i in (0..blocks).step_by(1000) {
            s.set(i, i, 5);
        }
        assert!(s.held() <= (blocks as usize / 1000 + 1) * 16, "{}", s.held());
        assert_eq!(s.later_than(4).count(), blocks.div_ceil(1000));
    }
}
