//! Diffing two manifests, as pure functions: ListChangedBlocks compares
//! page ids first and reads only the pages whose ids differ, so its cost
//! follows the changed pages, not the volume size. (Sealing uses core's
//! `ManifestWriter`.)

use cairn_core::manifest::{ManifestPage, ManifestRoot};
use cairn_core::ChunkId;
use std::collections::BTreeMap;

/// Pages whose ids differ between `first` (absent: an empty manifest) and
/// `second`, from page `from_page` on, ascending: (page, first id, second id).
pub fn changed_pages(
    first: Option<&ManifestRoot>,
    second: &ManifestRoot,
    from_page: u64,
) -> Vec<(u64, Option<ChunkId>, Option<ChunkId>)> {
    let a: BTreeMap<u64, ChunkId> =
        first.map(|r| r.pages.iter().copied().collect()).unwrap_or_default();
    let b: BTreeMap<u64, ChunkId> = second.pages.iter().copied().collect();
    let mut nums: Vec<u64> =
        a.keys().chain(b.keys()).copied().filter(|n| *n >= from_page).collect();
    nums.sort_unstable();
    nums.dedup();
    nums.into_iter()
        .filter_map(|n| {
            let (x, y) = (a.get(&n).copied(), b.get(&n).copied());
            (x != y).then_some((n, x, y))
        })
        .collect()
}

/// Blocks (index >= `from`) whose chunk differs between two versions of a
/// page, ascending: (index, first chunk, second chunk); `None` is zero.
pub fn changed_blocks(
    first: Option<&ManifestPage>,
    second: Option<&ManifestPage>,
    from: u64,
) -> Vec<(u64, Option<ChunkId>, Option<ChunkId>)> {
    let a: BTreeMap<u64, ChunkId> =
        first.map(|p| p.entries.iter().copied().collect()).unwrap_or_default();
    let b: BTreeMap<u64, ChunkId> =
        second.map(|p| p.entries.iter().copied().collect()).unwrap_or_default();
    let mut idx: Vec<u64> = a.keys().chain(b.keys()).copied().filter(|i| *i >= from).collect();
    idx.sort_unstable();
    idx.dedup();
    idx.into_iter()
        .filter_map(|i| {
            let (x, y) = (a.get(&i).copied(), b.get(&i).copied());
            (x != y).then_some((i, x, y))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::BLOCK_SIZE;

    fn c(b: u8) -> ChunkId {
        ChunkId([b; 32])
    }

    #[test]
    fn diff_compares_page_ids_first() {
        let mk = |pages: Vec<(u64, ChunkId)>| ManifestRoot {
            volume_size_bytes: 1 << 40,
            block_size: BLOCK_SIZE as u32,
            pages,
            parent: None,
            data_blocks: None,
        };
        let a = mk(vec![(0, c(1)), (1, c(2)), (5, c(5))]);
        let b = mk(vec![(0, c(1)), (1, c(3)), (4, c(4))]);
        assert_eq!(
            changed_pages(Some(&a), &b, 0),
            vec![(1, Some(c(2)), Some(c(3))), (4, None, Some(c(4))), (5, Some(c(5)), None)]
        );
        assert_eq!(changed_pages(Some(&a), &b, 2).len(), 2);
        assert!(changed_pages(Some(&a), &a, 0).is_empty(), "identical manifests: no page read");
        assert_eq!(changed_pages(None, &b, 0).len(), 3);
    }

    #[test]
    fn diff_of_pages() {
        let p = |entries: Vec<(u64, ChunkId)>| ManifestPage { page: 0, entries };
        let a = p(vec![(1, c(1)), (2, c(2)), (3, c(3))]);
        let b = p(vec![(1, c(1)), (2, c(9)), (4, c(4))]);
        assert_eq!(
            changed_blocks(Some(&a), Some(&b), 0),
            vec![(2, Some(c(2)), Some(c(9))), (3, Some(c(3)), None), (4, None, Some(c(4)))]
        );
        assert_eq!(changed_blocks(Some(&a), Some(&b), 3).len(), 2);
        assert_eq!(changed_blocks(None, Some(&b), 0).len(), 3);
    }
}
