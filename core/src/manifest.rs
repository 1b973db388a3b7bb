//! Manifests: a snapshot's block map (block index -> chunk id), cut into
//! content-addressed pages under a root. Zero blocks have no entry; a page
//! with no entries is not written at all.
//!
//! Pages and roots are stored like chunks, named by the BLAKE3 of their
//! encoding, so a page shared by two snapshots is stored once.

use crate::block::{ChunkId, BLOCK_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Format version written by this build. Version 2 added the root's
/// `parent` and `data_blocks`; version 1 objects (roots without them, pages
/// unchanged) are still read.
pub const MANIFEST_VERSION: u16 = 2;

/// Oldest format version this build reads.
pub const MANIFEST_MIN_VERSION: u16 = 1;

/// Blocks covered by one page: 4096 x 512 KiB = 2 GiB of volume, ~140 KiB of page.
pub const PAGE_BLOCKS: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRoot {
    pub volume_size_bytes: u64,
    pub block_size: u32,
    /// (page number, page id), ascending; absent pages hold only zero blocks.
    pub pages: Vec<(u64, ChunkId)>,
    /// The root of the snapshot this one was built from, if any (lineage; an
    /// incremental snapshot shares every unchanged page with it).
    pub parent: Option<ChunkId>,
    /// Non-zero blocks in the whole manifest; `None` only for version 1
    /// roots, which did not record it.
    pub data_blocks: Option<u64>,
}

/// The version 1 root, as it was encoded.
#[derive(Deserialize)]
struct ManifestRootV1 {
    volume_size_bytes: u64,
    block_size: u32,
    pages: Vec<(u64, ChunkId)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPage {
    pub page: u64,
    /// (block index, chunk id), ascending; absent blocks are zero.
    pub entries: Vec<(u64, ChunkId)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest object is corrupt: {0}")]
    Corrupt(String),
    #[error("manifest format version {0} is not readable by this build")]
    Version(u16),
    #[error("page {0} of the parent manifest was needed but not supplied")]
    MissingPage(u64),
}

fn encode<T: Serialize>(kind: u8, v: &T) -> Vec<u8> {
    let mut out = MANIFEST_VERSION.to_be_bytes().to_vec();
    out.push(kind);
    out.extend(bincode::serialize(v).unwrap_or_default());
    out
}

/// Checks the header; returns the version and the body.
fn header(kind: u8, b: &[u8]) -> Result<(u16, &[u8]), ManifestError> {
    if b.len() < 3 {
        return Err(ManifestError::Corrupt("too short".into()));
    }
    let version = u16::from_be_bytes([b[0], b[1]]);
    if !(MANIFEST_MIN_VERSION..=MANIFEST_VERSION).contains(&version) {
        return Err(ManifestError::Version(version));
    }
    if b[2] != kind {
        return Err(ManifestError::Corrupt(format!("expected kind {kind}, found {}", b[2])));
    }
    Ok((version, &b[3..]))
}

fn body<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, ManifestError> {
    bincode::deserialize(b).map_err(|e| ManifestError::Corrupt(e.to_string()))
}

impl ManifestRoot {
    pub fn encode(&self) -> Vec<u8> {
        encode(b'R', self)
    }
    /// Decodes a root; one whose block size is not [`BLOCK_SIZE`] is corrupt
    /// (every Cairn manifest uses it, and block arithmetic divides by it).
    pub fn decode(b: &[u8]) -> Result<Self, ManifestError> {
        let root: ManifestRoot = match header(b'R', b)? {
            (1, rest) => {
                let v1: ManifestRootV1 = body(rest)?;
                ManifestRoot {
                    volume_size_bytes: v1.volume_size_bytes,
                    block_size: v1.block_size,
                    pages: v1.pages,
                    parent: None,
                    data_blocks: None,
                }
            }
            (_, rest) => body(rest)?,
        };
        if root.block_size as usize != BLOCK_SIZE {
            return Err(ManifestError::Corrupt(format!(
                "block size {} is not {BLOCK_SIZE}",
                root.block_size
            )));
        }
        Ok(root)
    }
    pub fn blocks(&self) -> u64 {
        self.volume_size_bytes.div_ceil(u64::from(self.block_size.max(1)))
    }
}

impl ManifestPage {
    pub fn encode(&self) -> Vec<u8> {
        encode(b'P', self)
    }
    /// Pages have the same shape in every version.
    pub fn decode(b: &[u8]) -> Result<Self, ManifestError> {
        body(header(b'P', b)?.1)
    }
}

/// Collects block entries in any order and cuts them into pages.
#[derive(Debug, Default)]
pub struct ManifestBuilder {
    volume_size_bytes: u64,
    parent: Option<ChunkId>,
    entries: BTreeMap<u64, ChunkId>,
}

/// A finished manifest: the root and every page it had to write, encoded,
/// with their ids. An incremental build lists only the pages that changed.
pub struct BuiltManifest {
    pub root_id: ChunkId,
    pub root: Vec<u8>,
    pub pages: Vec<(ChunkId, Vec<u8>)>,
    /// Non-zero blocks of the whole manifest.
    pub data_blocks: u64,
}

fn encode_page(page: u64, entries: Vec<(u64, ChunkId)>) -> (ChunkId, Vec<u8>) {
    let bytes = ManifestPage { page, entries }.encode();
    (ChunkId::of(&bytes), bytes)
}

impl ManifestBuilder {
    pub fn new(volume_size_bytes: u64) -> Self {
        ManifestBuilder { volume_size_bytes, parent: None, entries: BTreeMap::new() }
    }

    /// A full manifest that still names `parent` as its lineage.
    pub fn with_parent(volume_size_bytes: u64, parent: Option<ChunkId>) -> Self {
        ManifestBuilder { volume_size_bytes, parent, entries: BTreeMap::new() }
    }

    /// Records that block `index` holds `chunk`; `None` marks it zero.
    pub fn set(&mut self, index: u64, chunk: Option<ChunkId>) {
        match chunk {
            Some(c) => self.entries.insert(index, c),
            None => self.entries.remove(&index),
        };
    }

    pub fn finish(self) -> BuiltManifest {
        let mut writer = ManifestWriter::full(self.volume_size_bytes, self.parent);
        let mut written = Vec::new();
        let mut entries = self.entries.into_iter().peekable();
        while let Some(&(first, _)) = entries.peek() {
            let page = first / PAGE_BLOCKS;
            let mut changes = Vec::new();
            while let Some((idx, c)) = entries.next_if(|(i, _)| i / PAGE_BLOCKS == page) {
                changes.push((idx, Some(c)));
            }
            let stored = writer.write_page(page, None, changes);
            written.extend(stored.expect("a full manifest needs no parent page"));
        }
        writer.finish_with(written)
    }
}

/// Builds a snapshot's manifest from its parent's: only the blocks that
/// changed are given, only the parent pages holding them are read (see
/// [`IncrementalBuilder::pages_needed`]) and only pages whose content changed
/// are written; every other page keeps its id. Cost: O(changed blocks).
#[derive(Debug)]
pub struct IncrementalBuilder {
    parent_id: ChunkId,
    parent: ManifestRoot,
    volume_size_bytes: u64,
    changes: BTreeMap<u64, Option<ChunkId>>,
}

impl IncrementalBuilder {
    /// Starts from the parent root `parent` (named `parent_id`) for a volume
    /// of `volume_size_bytes` (it may have grown since the parent).
    pub fn new(
        parent_id: ChunkId,
        parent: ManifestRoot,
        volume_size_bytes: u64,
    ) -> Result<Self, ManifestError> {
        if parent.block_size as usize != BLOCK_SIZE {
            return Err(ManifestError::Corrupt(format!("block size {}", parent.block_size)));
        }
        Ok(IncrementalBuilder { parent_id, parent, volume_size_bytes, changes: BTreeMap::new() })
    }

    /// Records the new content of a changed block; `None` marks it zero.
    pub fn set(&mut self, index: u64, chunk: Option<ChunkId>) {
        self.changes.insert(index, chunk);
    }

    /// The parent pages [`IncrementalBuilder::finish`] must be given: those
    /// holding a changed block (all of them when the parent is a version 1
    /// root, which does not record its block count).
    pub fn pages_needed(&self) -> Vec<(u64, ChunkId)> {
        if self.parent.data_blocks.is_none() {
            return self.parent.pages.clone();
        }
        let touched: BTreeSet<u64> = self.changes.keys().map(|i| i / PAGE_BLOCKS).collect();
        self.parent.pages.iter().filter(|(p, _)| touched.contains(p)).copied().collect()
    }

    /// Applies the changes to the `parent_pages` (decoded, by page number;
    /// at least those of `pages_needed`) and writes the new root.
    pub fn finish(
        self,
        parent_pages: &BTreeMap<u64, ManifestPage>,
    ) -> Result<BuiltManifest, ManifestError> {
        let mut by_page: BTreeMap<u64, Vec<(u64, Option<ChunkId>)>> = BTreeMap::new();
        for (idx, c) in self.changes {
            by_page.entry(idx / PAGE_BLOCKS).or_default().push((idx, c));
        }
        let parent_blocks = match self.parent.data_blocks {
            Some(n) => n,
            None => {
                let mut n = 0u64;
                for (page, _) in &self.parent.pages {
                    n += parent_pages
                        .get(page)
                        .ok_or(ManifestError::MissingPage(*page))?
                        .entries
                        .len() as u64;
                }
                n
            }
        };
        let mut writer = ManifestWriter::incremental(
            self.parent_id,
            &self.parent,
            self.volume_size_bytes,
            parent_blocks,
        )?;
        let mut written = Vec::new();
        for (page, changes) in by_page {
            let parent = writer.parent_page(page).and(parent_pages.get(&page));
            written.extend(writer.write_page(page, parent, changes)?);
        }
        Ok(writer.finish_with(written))
    }
}

/// Writes a manifest one page at a time: each page from its parent's
/// content, if the parent has it, and the changes to its blocks. What it
/// holds is the root's page list, whatever the volume's size, so a caller
/// that streams entries (a copy, page by page as it passes them) needs
/// memory for one page, not the volume. Pages not written keep their
/// parent's id.
#[derive(Debug)]
pub struct ManifestWriter {
    volume_size_bytes: u64,
    lineage: Option<ChunkId>,
    /// The new root's pages: the parent's until each is written.
    pages: BTreeMap<u64, ChunkId>,
    /// Pages already written, which must not be written again (a second
    /// write would take the first one's id as the parent's).
    written: BTreeSet<u64>,
    data_blocks: u64,
}

/// A finished root: its id, encoding and the manifest's non-zero blocks.
pub struct FinishedRoot {
    pub root_id: ChunkId,
    pub root: Vec<u8>,
    pub data_blocks: u64,
}

impl ManifestWriter {
    /// A whole manifest, naming `lineage` as its parent (or none).
    pub fn full(volume_size_bytes: u64, lineage: Option<ChunkId>) -> ManifestWriter {
        ManifestWriter {
            volume_size_bytes,
            lineage,
            pages: BTreeMap::new(),
            written: BTreeSet::new(),
            data_blocks: 0,
        }
    }

    /// A manifest built over the root `parent` (named `parent_id`), which
    /// has `parent_blocks` non-zero blocks (its `data_blocks`; a version 1
    /// root's caller counts its pages), for a volume of `volume_size_bytes`.
    pub fn incremental(
        parent_id: ChunkId,
        parent: &ManifestRoot,
        volume_size_bytes: u64,
        parent_blocks: u64,
    ) -> Result<ManifestWriter, ManifestError> {
        if parent.block_size as usize != BLOCK_SIZE {
            return Err(ManifestError::Corrupt(format!("block size {}", parent.block_size)));
        }
        Ok(ManifestWriter {
            volume_size_bytes,
            lineage: Some(parent_id),
            pages: parent.pages.iter().copied().collect(),
            written: BTreeSet::new(),
            data_blocks: parent_blocks,
        })
    }

    /// The parent's page `page`, if it has one: the content
    /// [`ManifestWriter::write_page`] must be given for that page.
    pub fn parent_page(&self, page: u64) -> Option<ChunkId> {
        self.pages.get(&page).copied().filter(|_| !self.written.contains(&page))
    }

    /// Writes page `page` (once) from the parent's page, which must be
    /// given when [`ManifestWriter::parent_page`] names one, and `changes`
    /// to blocks of that page (`None` zeroes a block). Returns the encoded
    /// page with its id when it has to be stored: when it holds data and
    /// differs from the parent's.
    pub fn write_page(
        &mut self,
        page: u64,
        parent: Option<&ManifestPage>,
        changes: impl IntoIterator<Item = (u64, Option<ChunkId>)>,
    ) -> Result<Option<(ChunkId, Vec<u8>)>, ManifestError> {
        if !self.written.insert(page) {
            return Err(ManifestError::Corrupt(format!("page {page} written twice")));
        }
        let old = self.pages.get(&page).copied();
        let mut entries: BTreeMap<u64, ChunkId> = match (old, parent) {
            (None, _) => BTreeMap::new(),
            (Some(_), None) => return Err(ManifestError::MissingPage(page)),
            (Some(_), Some(p)) if p.page != page => {
                return Err(ManifestError::Corrupt(format!("page {} supplied as {page}", p.page)))
            }
            (Some(_), Some(p)) => p.entries.iter().copied().collect(),
        };
        let before = entries.len() as u64;
        for (idx, c) in changes {
            if idx / PAGE_BLOCKS != page {
                return Err(ManifestError::Corrupt(format!("block {idx} is not in page {page}")));
            }
            match c {
                Some(c) => entries.insert(idx, c),
                None => entries.remove(&idx),
            };
        }
        self.data_blocks = (self.data_blocks + entries.len() as u64).saturating_sub(before);
        if entries.is_empty() {
            self.pages.remove(&page);
            return Ok(None);
        }
        let (id, bytes) = encode_page(page, entries.into_iter().collect());
        self.pages.insert(page, id);
        Ok((old != Some(id)).then_some((id, bytes)))
    }

    /// The root over every page: those written and the parent's others.
    pub fn finish(self) -> FinishedRoot {
        let blocks = self.volume_size_bytes.div_ceil(BLOCK_SIZE as u64);
        let mut pages = self.pages;
        // A volume never shrinks, but never describe blocks past its end.
        pages.retain(|p, _| p * PAGE_BLOCKS < blocks.max(1));
        let root = ManifestRoot {
            volume_size_bytes: self.volume_size_bytes,
            block_size: BLOCK_SIZE as u32,
            pages: pages.into_iter().collect(),
            parent: self.lineage,
            data_blocks: Some(self.data_blocks),
        };
        let root = root.encode();
        FinishedRoot { root_id: ChunkId::of(&root), root, data_blocks: self.data_blocks }
    }

    /// [`ManifestWriter::finish`], with the pages written as a
    /// [`BuiltManifest`] holds them.
    fn finish_with(self, pages: Vec<(ChunkId, Vec<u8>)>) -> BuiltManifest {
        let FinishedRoot { root_id, root, data_blocks } = self.finish();
        BuiltManifest { root_id, root, pages, data_blocks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the manifest fuzz target: a root with block size 0 made
    /// `blocks()` divide by zero. It is corrupt now.
    #[test]
    fn a_root_with_a_zero_block_size_is_corrupt() {
        let crash =
            "00025200000004000000000000000001000000000000000000000000000000d3e4d45bf6726c0a\
                     7fccb0a01b0582a95c4f4efc227672cee2724d40267d372d00010400000000000000";
        let bytes = hex::decode(crash.replace(' ', "")).expect("hex");
        assert!(matches!(ManifestRoot::decode(&bytes), Err(ManifestError::Corrupt(_))));
        let zero = ManifestRoot {
            volume_size_bytes: 1 << 20,
            block_size: 0,
            pages: vec![],
            parent: None,
            data_blocks: Some(0),
        };
        assert_eq!(zero.blocks(), 1 << 20);
        assert!(matches!(ManifestRoot::decode(&zero.encode()), Err(ManifestError::Corrupt(_))));
    }

    #[test]
    fn build_and_read_back() {
        let mut b = ManifestBuilder::new(10 * PAGE_BLOCKS * BLOCK_SIZE as u64);
        let a = ChunkId::of(b"a");
        b.set(3, Some(a));
        b.set(PAGE_BLOCKS * 5 + 1, Some(a));
        b.set(7, Some(a));
        b.set(7, None);
        let m = b.finish();
        let root = ManifestRoot::decode(&m.root).expect("root");
        assert_eq!(root.pages.len(), 2);
        assert_eq!(root.blocks(), 10 * PAGE_BLOCKS);
        let p = ManifestPage::decode(&m.pages[0].1).expect("page");
        assert_eq!(p.entries, vec![(3, a)]);
        assert_eq!(ChunkId::of(&m.pages[1].1), m.pages[1].0);
        assert!(ManifestPage::decode(&m.root).is_err(), "a root is not a page");
    }

    #[test]
    fn same_content_same_ids() {
        let mk = || {
            let mut b = ManifestBuilder::new(1 << 30);
            b.set(1, Some(ChunkId::of(b"x")));
            b.finish().root_id
        };
        assert_eq!(mk(), mk());
    }

    /// Three pages of entries; changing one block rewrites exactly one page
    /// and reuses the other two ids; the root names its parent.
    #[test]
    fn incremental_rewrites_only_changed_pages() {
        let size = 3 * PAGE_BLOCKS * BLOCK_SIZE as u64;
        let mut full = ManifestBuilder::new(size);
        for i in (0..3 * PAGE_BLOCKS).step_by(7) {
            full.set(i, Some(ChunkId::of(&i.to_le_bytes())));
        }
        let parent = full.finish();
        assert_eq!(parent.pages.len(), 3);
        let parent_root = ManifestRoot::decode(&parent.root).expect("root");
        let pages: BTreeMap<u64, ManifestPage> = parent
            .pages
            .iter()
            .map(|(_, b)| {
                let p = ManifestPage::decode(b).expect("page");
                (p.page, p)
            })
            .collect();

        let mut inc =
            IncrementalBuilder::new(parent.root_id, parent_root.clone(), size).expect("new");
        let changed = 7 * 586; // an existing entry of page 1
        inc.set(changed, Some(ChunkId::of(b"new")));
        let needed = inc.pages_needed();
        assert_eq!(needed, vec![parent_root.pages[1]], "only the touched page is read");
        let needed_pages: BTreeMap<u64, ManifestPage> =
            needed.iter().map(|(n, _)| (*n, pages[n].clone())).collect();
        let built = inc.finish(&needed_pages).expect("finish");
        assert_eq!(built.pages.len(), 1, "exactly one page rewritten");
        assert_eq!(built.data_blocks, parent.data_blocks);
        let root = ManifestRoot::decode(&built.root).expect("root");
        assert_eq!(root.parent, Some(parent.root_id));
        assert_eq!(root.pages[0], parent_root.pages[0]);
        assert_eq!(root.pages[2], parent_root.pages[2]);
        assert_ne!(root.pages[1], parent_root.pages[1]);
        let page = ManifestPage::decode(&built.pages[0].1).expect("page");
        assert!(page.entries.contains(&(changed, ChunkId::of(b"new"))));

        // The same result as a full build of the new content, page for page.
        let mut again = ManifestBuilder::new(size);
        for i in (0..3 * PAGE_BLOCKS).step_by(7) {
            again.set(i, Some(ChunkId::of(&i.to_le_bytes())));
        }
        again.set(changed, Some(ChunkId::of(b"new")));
        let again = ManifestRoot::decode(&again.finish().root).expect("root");
        assert_eq!(again.pages, root.pages);
    }

    #[test]
    fn incremental_zeroing_drops_empty_pages_and_counts() {
        let size = 2 * PAGE_BLOCKS * BLOCK_SIZE as u64;
        let mut full = ManifestBuilder::new(size);
        full.set(1, Some(ChunkId::of(b"a")));
        full.set(PAGE_BLOCKS, Some(ChunkId::of(b"b")));
        let parent = full.finish();
        let parent_root = ManifestRoot::decode(&parent.root).expect("root");
        let mut inc = IncrementalBuilder::new(parent.root_id, parent_root, size).expect("new");
        inc.set(1, None);
        inc.set(2, None);
        let p0 = ManifestPage::decode(&parent.pages[0].1).expect("page");
        let built = inc.finish(&BTreeMap::from([(0, p0)])).expect("finish");
        let root = ManifestRoot::decode(&built.root).expect("root");
        assert_eq!(root.pages.len(), 1);
        assert_eq!(root.data_blocks, Some(1));
        assert!(built.pages.is_empty());
    }

    #[test]
    fn a_writer_takes_each_page_once_with_its_parent_page() {
        let size = 2 * PAGE_BLOCKS * BLOCK_SIZE as u64;
        let mut full = ManifestWriter::full(size, None);
        let (p0, page0) = full
            .write_page(0, None, [(1, Some(ChunkId::of(b"a"))), (2, None)])
            .expect("write")
            .expect("a page with data is stored");
        assert!(full.write_page(0, None, []).is_err(), "page 0 twice");
        assert!(full.write_page(1, None, [(3, None)]).is_err(), "block 3 is not in page 1");
        let parent = full.finish();
        assert_eq!(parent.data_blocks, 1);
        let root = ManifestRoot::decode(&parent.root).expect("root");
        assert_eq!(root.pages, vec![(0, p0)]);

        let mut inc = ManifestWriter::incremental(parent.root_id, &root, size, 1).expect("new");
        assert_eq!((inc.parent_page(0), inc.parent_page(1)), (Some(p0), None));
        assert!(matches!(inc.write_page(0, None, []), Err(ManifestError::MissingPage(0))));
        let mut inc = ManifestWriter::incremental(parent.root_id, &root, size, 1).expect("new");
        let decoded = ManifestPage::decode(&page0).expect("page");
        // Rewriting a block with what it held stores nothing new.
        let same = inc.write_page(0, Some(&decoded), [(1, Some(ChunkId::of(b"a")))]);
        assert!(same.expect("write").is_none());
        let added = inc.write_page(1, None, [(PAGE_BLOCKS, Some(ChunkId::of(b"b")))]);
        assert!(added.expect("write").is_some());
        let built = inc.finish();
        assert_eq!(built.data_blocks, 2);
        let root2 = ManifestRoot::decode(&built.root).expect("root");
        assert_eq!((root2.pages[0], root2.parent), ((0, p0), Some(parent.root_id)));
    }

    #[test]
    fn version_1_roots_are_still_read() {
        #[derive(Serialize)]
        struct V1 {
            volume_size_bytes: u64,
            block_size: u32,
            pages: Vec<(u64, ChunkId)>,
        }
        let mut b = 1u16.to_be_bytes().to_vec();
        b.push(b'R');
        let page = (0u64, ChunkId::of(b"p"));
        b.extend(
            bincode::serialize(&V1 {
                volume_size_bytes: 1 << 30,
                block_size: 524_288,
                pages: vec![page],
            })
            .expect("encode"),
        );
        let root = ManifestRoot::decode(&b).expect("v1 root");
        assert_eq!(root.parent, None);
        assert_eq!(root.data_blocks, None);
        assert_eq!(root.pages, vec![page]);
        let mut future = b.clone();
        future[1] = 9;
        assert!(matches!(ManifestRoot::decode(&future), Err(ManifestError::Version(9))));
        // A v1 parent: every page is needed, since its block count is unknown.
        let inc = IncrementalBuilder::new(ChunkId::of(&b), root, 1 << 30).expect("new");
        assert_eq!(inc.pages_needed(), vec![page]);
    }
}
