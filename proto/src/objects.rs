//! The one way a process opens an object store: a local directory or an
//! S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage). The gateway's
//! archive tier and a chunk node's capacity tier both name a store this way.

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use std::path::Path;
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
        Ok(Objects { store: Arc::new(store), name })
    }
}

/// A directory as an object store (created if missing).
pub fn open_dir(dir: &Path) -> Result<Objects, String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| format!("directory {shown}: {e}"))?;
    let store =
        LocalFileSystem::new_with_prefix(dir).map_err(|e| format!("directory {shown}: {e}"))?;
    Ok(Objects { store: Arc::new(store), name: format!("directory {shown}") })
}
