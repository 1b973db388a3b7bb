//! Opening the archive store the configuration names.

use super::handle::Archive;
use crate::config::GatewayConfig;
use cairn_proto::objects;
use std::path::Path;
use std::sync::Arc;

/// The configured archive store, if any: `archive_s3` when set, else
/// `archive_dir` (created if missing).
pub fn open(config: &GatewayConfig) -> Result<Option<Arc<Archive>>, String> {
    let objects = match &config.archive_s3 {
        Some(s3) => s3.open(),
        None if config.archive_dir.is_empty() => return Ok(None),
        None => objects::open_dir(Path::new(&config.archive_dir)),
    }
    .map_err(|e| format!("archive store: {e}"))?;
    Ok(Some(Arc::new(Archive::new(objects.store, objects.name))))
}
