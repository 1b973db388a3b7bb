//! Chunk node configuration: one TOML file per process (see `deploy/`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    }
}
