//! What garbage collection shares between the gateway that marks and the
//! chunk nodes that sweep: the live filter (every chunk id some holder
//! needs, as a Bloom filter) and the partitioning of the id space that keeps
//! its memory bounded by a setting instead of by the number of chunks.
//!
//! A Bloom filter answers "maybe live" for every id inserted and, with a
//! small probability, for ids that were not: a false positive keeps a dead
//! chunk until a later pass (whose filter differs), never the other way
//! round. So the filter can only err on the side of keeping data. Chunk ids
//! are BLAKE3 hashes, uniformly random, so the filter's probes are slices of
//! the id itself (double hashing) and need no hash function of their own:
//! the format is fixed here, not by a crate version.
//!
//! When the live ids would not fit the memory budget at the target false
//! positive rate, the id space is cut into `count` partitions (by the id's
//! last 8 bytes modulo `count`) and the pass marks and sweeps one partition
//! at a time: manifests are walked once per partition, and memory stays at
//! one filter.

use crate::block::ChunkId;
use serde::{Deserialize, Serialize};

/// Bits per expected entry: about 1% false positives with 7 probes.
pub const BITS_PER_ENTRY: u64 = 10;
const PROBES: u32 = 7;
/// Format version of an encoded filter.
const FORMAT: u8 = 1;

/// Which slice of the chunk id space a filter covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Whether `id` lies in this partition.
    pub fn covers(&self, id: &ChunkId) -> bool {
        self.count <= 1 || partition_of(id, self.count) == self.index
    }

    /// The partitions a pass needs for `expected` live ids within
    /// `budget_bytes` of filter: at least one.
    pub fn plan(expected: u64, budget_bytes: u64) -> Vec<Partition> {
        let budget_bits = (budget_bytes.max(64) * 8).max(1);
        let need_bits = expected.max(1) * BITS_PER_ENTRY;
        let count = need_bits.div_ceil(budget_bits).clamp(1, u64::from(u32::MAX)) as u32;
        (0..count).map(|index| Partition { index, count }).collect()
    }
}

/// The partition of `id` when the id space is cut in `count`.
pub fn partition_of(id: &ChunkId, count: u32) -> u32 {
    let tail = u64::from_le_bytes(id.0[24..32].try_into().unwrap_or([0; 8]));
    (tail % u64::from(count.max(1))) as u32
}

/// A Bloom filter over chunk ids: no false negatives, about 1% false
/// positives when filled to the entries it was sized for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveFilter {
    partition: Partition,
    /// Number of bits, a multiple of 64.
    bits: u64,
    words: Vec<u64>,
    inserted: u64,
}

/// An encoded filter that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("live filter is malformed: {0}")]
pub struct FilterError(&'static str);

impl LiveFilter {
    /// A filter for `expected` ids of `partition`, using at most
    /// `max_bytes` of bits (and at least 64 bytes).
    pub fn new(partition: Partition, expected: u64, max_bytes: u64) -> LiveFilter {
        let want = expected.max(1).saturating_mul(BITS_PER_ENTRY);
        let bits = want.min(max_bytes.max(64) * 8).max(512).next_multiple_of(64);
        LiveFilter { partition, bits, words: vec![0; (bits / 64) as usize], inserted: 0 }
    }

    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// Ids inserted (counting repeats).
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Bytes of memory the bits take.
    pub fn size_bytes(&self) -> u64 {
        self.bits / 8
    }

    /// Adds `id` if it lies in this filter's partition.
    pub fn insert(&mut self, id: &ChunkId) {
        if !self.partition.covers(id) {
            return;
        }
        self.inserted += 1;
        for bit in self.probes(id) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Whether `id` may be live. Ids outside the partition are always
    /// reported live: this filter says nothing about them.
    pub fn contains(&self, id: &ChunkId) -> bool {
        if !self.partition.covers(id) {
            return true;
        }
        self.probes(id).all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn probes(&self, id: &ChunkId) -> impl Iterator<Item = u64> {
        let h1 = u64::from_le_bytes(id.0[0..8].try_into().unwrap_or([0; 8]));
        let h2 = u64::from_le_bytes(id.0[8..16].try_into().unwrap_or([0; 8])) | 1;
        let bits = self.bits;
        (0..u64::from(PROBES)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
    }

    /// The wire form: format, partition, bit count, then the bits.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.words.len() * 8);
        out.push(FORMAT);
        out.extend_from_slice(&self.partition.index.to_le_bytes());
        out.extend_from_slice(&self.partition.count.to_le_bytes());
        out.extend_from_slice(&self.bits.to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<LiveFilter, FilterError> {
        if b.len() < 17 {
            return Err(FilterError("shorter than its header"));
        }
        if b[0] != FORMAT {
            return Err(FilterError("unknown format"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        let partition = Partition { index: u32_at(1), count: u32_at(5) };
        let bits = u64::from_le_bytes(b[9..17].try_into().unwrap_or([0; 8]));
        if partition.count == 0 || partition.index >= partition.count {
            return Err(FilterError("bad partition"));
        }
        if bits == 0 || bits % 64 != 0 || (b.len() - 17) as u64 != bits / 8 {
            return Err(FilterError("bit count does not match the length"));
        }
        let words = b[17..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(LiveFilter { partition, bits, words, inserted: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    #[test]
    fn every_inserted_id_is_found_and_few_others_are() {
        let mut f = LiveFilter::new(Partition::WHOLE, 10_000, 1 << 20);
        for n in 0..10_000 {
            f.insert(&id(n));
        }
        assert!((0..10_000).all(|n| f.contains(&id(n))));
        let false_hits = (10_000..110_000).filter(|n| f.contains(&id(*n))).count();
        assert!(false_hits < 2_000, "{false_hits} false positives in 100000");
    }

    #[test]
    fn a_filter_survives_its_wire_form() {
        let mut f = LiveFilter::new(Partition { index: 1, count: 3 }, 500, 1 << 16);
        (0..500).for_each(|n| f.insert(&id(n)));
        let back = LiveFilter::decode(&f.encode()).expect("decodes");
        assert_eq!(back.partition(), f.partition());
        assert!((0..500).all(|n| back.contains(&id(n))));
        assert!(LiveFilter::decode(&f.encode()[..20]).is_err());
        assert!(LiveFilter::decode(&[2; 40]).is_err());
    }

    #[test]
    fn a_partition_filter_keeps_everything_outside_it() {
        let mut f = LiveFilter::new(Partition { index: 0, count: 4 }, 100, 4096);
        let outside: Vec<ChunkId> =
            (0..400).map(id).filter(|i| partition_of(i, 4) != 0).take(50).collect();
        assert!(outside.iter().all(|i| f.contains(i)));
        let inside = (0..400).map(id).find(|i| partition_of(i, 4) == 0).expect("some");
        assert!(!f.contains(&inside));
        f.insert(&inside);
        assert!(f.contains(&inside));
    }

    #[test]
    fn plan_splits_only_past_the_budget() {
        assert_eq!(Partition::plan(1_000, 1 << 20).len(), 1);
        let p = Partition::plan(10_000_000, 1 << 20);
        assert_eq!(p.len(), 12);
        assert!(p.iter().enumerate().all(|(i, q)| q.index == i as u32 && q.count == 12));
    }
}
