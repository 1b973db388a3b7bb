//! The one way a process opens an object store: a local directory or an
//! S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage). The gateway's
//! archive tier and a chunk node's capacity tier both name a store this way.

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An S3-compatible bucket: path-style requests to `endpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Bucket {
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// An opened store and how to name it in logs and messages.
pub struct Objects {
    pub store: Arc<dyn ObjectStore>,
    pub name: String,
    /// The directory of a directory store: `object_store` does not fsync
    /// what it writes there, so a writer that needs an object durable syncs
    /// it itself ([`Objects::sync`]).
    pub local_root: Option<PathBuf>,
}

impl Objects {
    /// Makes the object `key` durable: in a directory store, fsyncs its
    /// file and every directory from it up to the root; an S3 store has
    /// already made it durable when the upload completed.
    pub fn sync(&self, key: &str) -> std::io::Result<()> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let file = root.join(key);
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(root)) {
            std::fs::File::open(d)?.sync_all()?;
            dir = d.parent();
        }
        Ok(())
    }
}

impl S3Bucket {
    /// A client for the bucket (no request is made yet).
    pub fn open(&self) -> Result<Objects, String> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| format!("s3 bucket {} at {}: {e}", self.bucket, self.endpoint))?;
        let name = format!("s3 bucket {} at {}", self.bucket, self.endpoint);
        Ok(Objects { store: Arc::new(store), name, local_root: None })
    }
}

/// A directory as an object store (created if missing).
pub fn open_dir(dir: &Path) -> Result<Objects, String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| format!("directory {shown}: {e}"))?;
    let store =
        LocalFileSystem::new_with_prefix(dir).map_err(|e| format!("directory {shown}: {e}"))?;
    let local_root = Some(dir.to_path_buf());
    Ok(Objects { store: Arc::new(store), name: format!("directory {shown}"), local_root })
}
