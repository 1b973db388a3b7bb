//! `cairn up`'s object stores: the gateway's archive tier (a directory under
//! the data directory unless an S3 bucket is named) and, if asked for, the
//! chunk nodes' capacity tier (sealed packs in a directory or an S3 bucket,
//! each node under its own prefix).

use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct TierArgs {
    /// The archive tier in an S3-compatible bucket at this endpoint (e.g.
    /// `http://127.0.0.1:9000` for MinIO) instead of the default directory
    /// `archive/` under the data directory. Needs --archive-s3-bucket and
    /// the keys in CAIRN_ARCHIVE_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY.
    #[arg(long, requires = "archive_s3_bucket")]
    pub archive_s3_endpoint: Option<String>,
    #[arg(long, requires = "archive_s3_endpoint")]
    pub archive_s3_bucket: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub archive_s3_region: String,
    #[arg(
        long,
        env = "CAIRN_ARCHIVE_S3_ACCESS_KEY_ID",
        default_value = "",
        hide_env_values = true
    )]
    pub archive_s3_access_key_id: String,
    #[arg(
        long,
        env = "CAIRN_ARCHIVE_S3_SECRET_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub archive_s3_secret_access_key: String,
    /// The capacity tier in an S3-compatible bucket at this endpoint: the
    /// chunk nodes keep their sealed packs there (each under its node name)
    /// and only open packs and a read cache on disk. Needs
    /// --capacity-s3-bucket and the keys in CAIRN_CAPACITY_S3_ACCESS_KEY_ID /
    /// _SECRET_ACCESS_KEY.
    #[arg(long, requires = "capacity_s3_bucket", conflicts_with = "capacity_dir")]
    pub capacity_s3_endpoint: Option<String>,
    #[arg(long, requires = "capacity_s3_endpoint")]
    pub capacity_s3_bucket: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub capacity_s3_region: String,
    #[arg(
        long,
        env = "CAIRN_CAPACITY_S3_ACCESS_KEY_ID",
        default_value = "",
        hide_env_values = true
    )]
    pub capacity_s3_access_key_id: String,
    #[arg(
        long,
        env = "CAIRN_CAPACITY_S3_SECRET_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub capacity_s3_secret_access_key: String,
    /// The capacity tier in a directory (a mounted network file system, say)
    /// instead of an S3 bucket.
    #[arg(long)]
    pub capacity_dir: Option<PathBuf>,
    /// MiB of each chunk node's read cache of the capacity tier.
    #[arg(long, default_value_t = 4096)]
    pub capacity_cache_mib: u64,
    /// MiB at which a chunk node seals a pack (and, with a capacity tier,
    /// uploads it).
    #[arg(long, default_value_t = 256)]
    pub pack_mib: u64,
}

impl TierArgs {
    /// The gateway's archive store: the S3 bucket asked for, else a
    /// directory under the data directory.
    pub fn archive_config(&self, data_dir: &Path) -> String {
        match (&self.archive_s3_endpoint, &self.archive_s3_bucket) {
            (Some(endpoint), Some(bucket)) => s3_table(
                "archive_s3",
                endpoint,
                bucket,
                &self.archive_s3_region,
                &self.archive_s3_access_key_id,
                &self.archive_s3_secret_access_key,
            ),
            _ => format!("archive_dir = {:?}\n", data_dir.join("archive").display().to_string()),
        }
    }

    /// A chunk node's pack size and capacity tier (its tables last).
    pub fn chunk_config(&self) -> String {
        let mut config = format!("pack_bytes = {}\n", self.pack_mib << 20);
        let cache = format!("[capacity_tier]\ncache_bytes = {}\n", self.capacity_cache_mib << 20);
        match (&self.capacity_s3_endpoint, &self.capacity_s3_bucket, &self.capacity_dir) {
            (Some(endpoint), Some(bucket), _) => {
                config.push_str(&cache);
                config.push_str(&s3_table(
                    "capacity_tier.s3",
                    endpoint,
                    bucket,
                    &self.capacity_s3_region,
                    &self.capacity_s3_access_key_id,
                    &self.capacity_s3_secret_access_key,
                ));
            }
            (_, _, Some(dir)) => {
                // The nodes run in their own directories.
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                config.push_str(&cache);
                config.push_str(&format!("dir = {:?}\n", dir.display().to_string()));
            }
            _ => {}
        }
        config
    }
}

fn s3_table(
    table: &str,
    endpoint: &str,
    bucket: &str,
    region: &str,
    key: &str,
    secret: &str,
) -> String {
    format!(
        "[{table}]\nendpoint = {endpoint:?}\nbucket = {bucket:?}\nregion = {region:?}\naccess_key_id = {key:?}\nsecret_access_key = {secret:?}\n"
    )
}
