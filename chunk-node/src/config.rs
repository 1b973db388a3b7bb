//! Chunk node configuration: one TOML file per process (see `deploy/`).

use crate::store::TierSettings;
use cairn_proto::objects::{self, S3Bucket};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The capacity tier: where a node's sealed packs go (one of `dir` and
/// `s3`) and how much of them it caches on local disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityTierConfig {
    /// A directory as the object store (a mounted file system, tests).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage).
    #[serde(default)]
    pub s3: Option<S3Bucket>,
    /// Bytes of the local read cache of packs in the store.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Prefix of this node's objects; default: the node id.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_cache_bytes() -> u64 {
    4 << 30
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkNodeConfig {
    /// Stable node name, e.g. `chunk-1a-1`; placement hashes it, so it must
    /// not change across restarts.
    pub node_id: String,
    /// The availability zone the node is in (or its Outpost is anchored to).
    pub az: String,
    /// An Outpost id (`op-...`): the node then stores that Outpost's data.
    pub outpost: Option<String>,
    /// Where chunks, volumes and frozen images live.
    pub data_dir: PathBuf,
    /// gRPC URLs of the metadata group's members. Empty: do not register
    /// (tests that run a chunk node alone).
    pub metadata: Vec<String>,
    /// Host part of the addresses this node registers.
    pub advertise_host: String,
    /// Pace of periodic scrub passes, bytes per second (0: unthrottled).
    pub scrub_bytes_per_sec: u64,
    /// Seconds from the end of one periodic scrub pass to the start of the
    /// next (0: only passes asked for, `cairn admin scrub`).
    pub scrub_interval_secs: u64,
    /// Directory with the cluster CA and this node's certificate (`ca.pem`,
    /// `node.pem`, `node.key`): gRPC in and out, and NBD between the gateway's
    /// door and this node, then use mutual TLS. Absent: clear text.
    pub tls_dir: Option<PathBuf>,
    /// A pack is sealed (and, with a capacity tier, uploaded) once it holds
    /// this many bytes.
    pub pack_bytes: u64,
    /// Keep sealed packs in an object store ([`CapacityTierConfig`]).
    pub capacity_tier: Option<CapacityTierConfig>,
    /// Bytes of block data and encoding buffers the node's snapshot copies
    /// may hold together; it also picks how a copy's pipeline is cut
    /// (`copy/budget.rs`). Default 480 MiB, the fastest cut; the smallest
    /// is 18 MiB (a smaller setting counts as that).
    pub copy_memory_bytes: u64,
    /// Bytes of repeated chunks (a block's content used by several blocks)
    /// each restoring volume keeps between fetches, so each is fetched
    /// once. Default 64 MiB.
    pub restore_cache_bytes: u64,
}

impl Default for ChunkNodeConfig {
    fn default() -> Self {
        ChunkNodeConfig {
            node_id: "chunk-1".into(),
            az: "cairn-1a".into(),
            outpost: None,
            data_dir: PathBuf::from("data/chunk-1"),
            metadata: Vec::new(),
            advertise_host: "127.0.0.1".into(),
            scrub_bytes_per_sec: 8 << 20,
            scrub_interval_secs: 24 * 3600,
            tls_dir: None,
            pack_bytes: 256 << 20,
            capacity_tier: None,
            copy_memory_bytes: crate::copy::budget::DEFAULT_COPY_MEMORY,
            restore_cache_bytes: crate::volume::chunkcache::DEFAULT_BUDGET_BYTES as u64,
        }
    }
}

impl ChunkNodeConfig {
    /// A node that does not register anywhere, storing under `data_dir`.
    pub fn for_test(node_id: &str, az: &str, data_dir: impl Into<PathBuf>) -> Self {
        ChunkNodeConfig {
            node_id: node_id.into(),
            az: az.into(),
            data_dir: data_dir.into(),
            ..ChunkNodeConfig::default()
        }
    }

    /// The capacity tier's store opened, if one is configured.
    pub fn tier_settings(&self) -> Result<Option<TierSettings>, String> {
        let Some(tier) = &self.capacity_tier else { return Ok(None) };
        let objects = match (&tier.s3, &tier.dir) {
            (Some(s3), None) => s3.open()?,
            (None, Some(dir)) => objects::open_dir(dir)?,
            _ => return Err("capacity_tier needs exactly one of dir and s3".into()),
        };
        let prefix = tier.prefix.clone().unwrap_or_else(|| self.node_id.clone());
        Ok(Some(TierSettings { objects, prefix, cache_bytes: tier.cache_bytes }))
    }

    /// The zone this node stores data for: its Outpost, else its AZ.
    pub fn zone(&self) -> String {
        self.outpost.clone().unwrap_or_else(|| self.az.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let c: ChunkNodeConfig =
            toml::from_str("node_id = \"n1\"\noutpost = \"op-0123456789abcdef0\"\n").expect("toml");
        assert_eq!(c.node_id, "n1");
        assert_eq!(c.advertise_host, "127.0.0.1");
        assert_eq!(c.zone(), "op-0123456789abcdef0");
        assert_eq!((c.scrub_bytes_per_sec, c.scrub_interval_secs), (8 << 20, 86_400));
        assert!(toml::from_str::<ChunkNodeConfig>("nodeid = \"n1\"").is_err());
        assert_eq!((c.pack_bytes, c.capacity_tier.as_ref()), (256 << 20, None));
        assert_eq!((c.copy_memory_bytes, c.restore_cache_bytes), (480 << 20, 64 << 20));
    }

    #[test]
    fn a_capacity_tier_names_one_store() {
        let s3 = "[capacity_tier.s3]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"b\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\n";
        let c: ChunkNodeConfig = toml::from_str(s3).expect("toml");
        let tier = c.capacity_tier.as_ref().expect("tier");
        assert_eq!(
            (tier.cache_bytes, tier.s3.as_ref().map(|b| b.region.as_str())),
            (4 << 30, Some("us-east-1"))
        );
        let settings = c.tier_settings().expect("opens").expect("configured");
        assert_eq!(settings.prefix, "chunk-1");
        let neither: ChunkNodeConfig =
            toml::from_str("[capacity_tier]\ncache_bytes = 1\n").expect("toml");
        assert!(neither.tier_settings().is_err());
    }
}
