//! Opening the archive store the configuration names.

use super::handle::Archive;
use crate::config::GatewayConfig;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use std::sync::Arc;

/// The configured archive store, if any: `archive_s3` when set, else
/// `archive_dir` (created if missing).
pub fn open(config: &GatewayConfig) -> Result<Option<Arc<Archive>>, String> {
    if let Some(s3) = &config.archive_s3 {
        let store = AmazonS3Builder::new()
            .with_endpoint(&s3.endpoint)
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key)
            .with_allow_http(s3.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| format!("archive_s3: {e}"))?;
        let name = format!("s3 bucket {} at {}", s3.bucket, s3.endpoint);
        return Ok(Some(Arc::new(Archive::new(Arc::new(store), name))));
    }
    if config.archive_dir.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&config.archive_dir)
        .map_err(|e| format!("archive_dir {}: {e}", config.archive_dir))?;
    let store = LocalFileSystem::new_with_prefix(&config.archive_dir)
        .map_err(|e| format!("archive_dir {}: {e}", config.archive_dir))?;
    let name = format!("directory {}", config.archive_dir);
    Ok(Some(Arc::new(Archive::new(Arc::new(store), name))))
}
