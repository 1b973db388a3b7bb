//! Small durable-file helpers: directory fsync, atomic replace, and
//! versioned bincode files (every persisted structure carries its version).

use crate::error::ChunkNodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

pub fn fsync_dir(dir: &Path) -> Result<(), ChunkNodeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ChunkNodeError::io("fsync directory", dir, e))
}

/// Replaces `path` with `bytes` atomically and durably (temp file, fsync,
/// rename, directory fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ChunkNodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| ChunkNodeError::io("create temp in", dir, e))?;
    tmp.write_all(bytes).map_err(|e| ChunkNodeError::io("write", tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| ChunkNodeError::io("fsync", tmp.path(), e))?;
    tmp.persist(path).map_err(|e| ChunkNodeError::io("rename to", path, e.error))?;
    fsync_dir(dir)
}

/// Writes `value` as version `version` of its format.
pub fn write_versioned<T: Serialize>(
    path: &Path,
    version: u16,
    value: &T,
) -> Result<(), ChunkNodeError> {
    let mut bytes = version.to_be_bytes().to_vec();
    bytes.extend(bincode::serialize(value).map_err(|e| ChunkNodeError::Encode(e.to_string()))?);
    write_atomic(path, &bytes)
}

/// Reads a file written by [`write_versioned`]; `None` when it is absent.
/// Another version, or bytes that do not decode, are an error.
pub fn read_versioned<T: DeserializeOwned>(
    path: &Path,
    version: u16,
) -> Result<Option<T>, ChunkNodeError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ChunkNodeError::io("read", path, e)),
    };
    let corrupt = |why: String| ChunkNodeError::CorruptState { path: path.to_path_buf(), why };
    if bytes.len() < 2 {
        return Err(corrupt("too short".into()));
    }
    let found = u16::from_be_bytes([bytes[0], bytes[1]]);
    if found != version {
        return Err(corrupt(format!("format version {found}, expected {version}")));
    }
    bincode::deserialize(&bytes[2..]).map(Some).map_err(|e| corrupt(e.to_string()))
}

/// Removes a file; absent counts as removed.
pub fn remove_file(path: &Path) -> Result<(), ChunkNodeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ChunkNodeError::io("remove", path, e)),
    }
}

/// Removes a directory tree; absent counts as removed.
pub fn remove_dir(path: &Path) -> Result<(), ChunkNodeError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ChunkNodeError::io("remove", path, e)),
    }
}
