//! A restore's state on disk, in its volume's state directory: the map
//! (`hydrate.map`: size, replication factor, sources, how many blocks),
//! the chunk map beside it (`hydrate.ids`, [`BlockIds`]), and the names of
//! those files and of the hydration log. The chunk map is written first,
//! so a map always has its chunk map.

use crate::disk::files::{read_versioned, remove_file, write_versioned};
use crate::error::ChunkNodeError;
use crate::volume::blockids::{BlockIdsWriter, WrittenIds};
use cairn_core::ChunkId;
use cairn_proto::pb::StoreNode;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Version 1 held the chunk map inline (see [`read_map`]).
const MAP_VERSION: u16 = 2;

/// Where a restored volume's blocks come from, as persisted; which blocks
/// and chunks is in its [`BlockIds`] beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HydrationMap {
    pub size: u64,
    pub replication_factor: u32,
    /// (node id, AZ, gRPC address) of the nodes holding the snapshot.
    pub sources: Vec<(String, String, String)>,
    /// Non-zero blocks (records in the chunk map).
    pub blocks: u64,
}

/// The map as version 1 held it: every entry inline, all of them in memory
/// while the volume hydrated.
#[derive(Serialize, Deserialize)]
struct HydrationMapV1 {
    size: u64,
    replication_factor: u32,
    sources: Vec<(String, String, String)>,
    entries: Vec<(u64, ChunkId)>,
}

impl HydrationMap {
    pub fn store_nodes(&self) -> Vec<StoreNode> {
        self.sources
            .iter()
            .map(|(n, a, g)| StoreNode { node_id: n.clone(), az: a.clone(), grpc_addr: g.clone() })
            .collect()
    }
}

pub(super) fn map_path(dir: &Path) -> PathBuf {
    dir.join("hydrate.map")
}

pub(super) fn log_path(dir: &Path) -> PathBuf {
    dir.join("hydrate.log")
}

pub(super) fn ids_path(dir: &Path) -> PathBuf {
    dir.join("hydrate.ids")
}

/// Reads the map in `dir`; `None` when there is none. A map of version 1
/// (a restore under way when the node was upgraded) is rewritten as the
/// current map and its chunk map first. Blocking.
pub(super) fn read_map(dir: &Path) -> Result<Option<HydrationMap>, ChunkNodeError> {
    let path = map_path(dir);
    if version_of(&path)? != Some(1) {
        return read_versioned(&path, MAP_VERSION);
    }
    let Some(old) = read_versioned::<HydrationMapV1>(&path, 1)? else { return Ok(None) };
    // Version 1 left out blocks past the end when it loaded them.
    let end = crate::volume::blocks::blocks_in(old.size);
    // The temporary file beside the volumes (one filesystem), where the
    // host removes what a crash left.
    let mut ids = BlockIdsWriter::create(dir.parent().unwrap_or(dir))?;
    for (i, id) in old.entries.iter().filter(|(i, _)| *i < end) {
        ids.push(*i, id)?;
    }
    let map = HydrationMap {
        size: old.size,
        replication_factor: old.replication_factor,
        sources: old.sources,
        blocks: ids.count(),
    };
    ids.finish()?.persist(&ids_path(dir))?;
    crate::disk::files::fsync_dir(dir)?;
    write_versioned(&path, MAP_VERSION, &map)?;
    tracing::info!(dir = %dir.display(), blocks = map.blocks, "hydration map of version 1 rewritten");
    Ok(Some(map))
}

/// The format version of the file at `path`; `None` when it is absent or
/// too short to say.
fn version_of(path: &Path) -> Result<Option<u16>, ChunkNodeError> {
    let mut v = [0u8; 2];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut v)) {
        Ok(()) => Ok(Some(u16::from_be_bytes(v))),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::UnexpectedEof) => Ok(None),
        Err(e) => Err(ChunkNodeError::io("read", path, e)),
    }
}

/// Persists `map` and its chunk map `ids` in `dir` (before the volume
/// is installed; the caller syncs `dir`). Blocking.
pub fn create(dir: &Path, map: &HydrationMap, ids: WrittenIds) -> Result<(), ChunkNodeError> {
    if ids.count != map.blocks {
        let why = format!("{} blocks in the chunk map, {} expected", ids.count, map.blocks);
        return Err(ChunkNodeError::CorruptState { path: ids_path(dir), why });
    }
    remove_file(&log_path(dir))?;
    ids.persist(&ids_path(dir))?;
    write_versioned(&map_path(dir), MAP_VERSION, map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::blockids::BlockIds;

    #[test]
    fn a_map_of_version_1_is_rewritten_with_its_chunk_map() {
        let top = tempfile::tempdir().expect("dir");
        let dir = top.path().join("vol.state");
        std::fs::create_dir(&dir).expect("state dir");
        let dir = &dir;
        let entries: Vec<(u64, ChunkId)> =
            [3u64, 7, 4096, 9000].iter().map(|i| (*i, ChunkId::of(&i.to_le_bytes()))).collect();
        let sources = vec![("n1".to_string(), "az1".to_string(), "127.0.0.1:1".to_string())];
        let old = HydrationMapV1 {
            size: 9001 * cairn_core::BLOCK_SIZE as u64,
            replication_factor: 3,
            sources: sources.clone(),
            entries: entries.clone(),
        };
        write_versioned(&map_path(dir), 1, &old).expect("write v1");
        let map = read_map(dir).expect("read").expect("a map");
        assert_eq!((map.size, map.replication_factor, map.blocks), (old.size, 3, 4));
        assert_eq!(map.sources, sources);
        let again = read_map(dir).expect("read again").expect("a map");
        assert_eq!(again.blocks, 4, "now a map of the current version");
        let mut seen = Vec::new();
        let ids =
            BlockIds::open(&ids_path(dir), 9001, |i, c| seen.push((i, *c))).expect("chunk map");
        assert_eq!(seen, entries);
        assert_eq!(ids.get(4096).expect("get"), Some(entries[2].1));
        let left: Vec<_> = std::fs::read_dir(dir).expect("list").collect();
        assert_eq!(left.len(), 2, "the map and the chunk map");
        assert_eq!(std::fs::read_dir(top.path()).expect("list").count(), 1, "no temporary file");
    }

    #[test]
    fn a_chunk_map_that_does_not_match_the_map_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = BlockIdsWriter::create(dir.path()).expect("writer");
        w.push(1, &ChunkId::of(b"1")).expect("push");
        let map = HydrationMap { size: 1 << 30, replication_factor: 1, sources: vec![], blocks: 2 };
        assert!(create(dir.path(), &map, w.finish().expect("finish")).is_err());
        assert!(read_map(dir.path()).expect("read").is_none(), "nothing persisted");
    }
}
