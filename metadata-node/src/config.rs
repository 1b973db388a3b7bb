//! Configuration of one metadata member: who it is, where it keeps its data,
//! and the Raft timers tuned for a LAN.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One member of the metadata group. Read from the process's TOML file; every
/// field but `node_id` and `data_dir` has a default suited to a LAN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Stable Raft id of this member; never reused for another data directory.
    pub node_id: u64,
    /// Where RocksDB keeps the state machine, the vote and the current
    /// snapshot, and `raft-log/` the Raft log's entries.
    pub data_dir: PathBuf,
    /// Leader heartbeat interval (also the AppendEntries RPC timeout), in ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Election timeout range, in ms: `heartbeat_ms < election_min_ms < election_max_ms`.
    #[serde(default = "default_election_min_ms")]
    pub election_min_ms: u64,
    #[serde(default = "default_election_max_ms")]
    pub election_max_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// Timeout of one snapshot chunk transfer (and of the final install), in ms.
    #[serde(default = "default_install_snapshot_timeout_ms")]
    pub install_snapshot_timeout_ms: u64,
    /// Log entries kept below the last snapshot, so a briefly lagging member
    /// catches up from the log instead of receiving a whole snapshot.
    #[serde(default = "default_keep_logs_after_snapshot")]
    pub keep_logs_after_snapshot: u64,
    /// Length of one Raft log segment file, in MiB. Two are on disk at
    /// least (the one being written and a zeroed spare); a longer one means
    /// fewer switches (a rename and a directory sync each).
    #[serde(default = "default_log_segment_mib")]
    pub log_segment_mib: u64,
    /// Directory with the cluster CA and this member's certificate
    /// (`ca.pem`, `node.pem`, `node.key`): Raft and client traffic then use
    /// mutual TLS. Absent: clear text (in-process test clusters).
    #[serde(default)]
    pub tls_dir: Option<PathBuf>,
}

fn default_heartbeat_ms() -> u64 {
    100
}
fn default_election_min_ms() -> u64 {
    500
}
fn default_election_max_ms() -> u64 {
    1000
}
fn default_snapshot_logs() -> u64 {
    5000
}
fn default_install_snapshot_timeout_ms() -> u64 {
    10_000
}
fn default_keep_logs_after_snapshot() -> u64 {
    1000
}
fn default_log_segment_mib() -> u64 {
    16
}

impl MetadataConfig {
    /// A member with the default (LAN) timers.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        MetadataConfig {
            node_id,
            data_dir: data_dir.into(),
            heartbeat_ms: default_heartbeat_ms(),
            election_min_ms: default_election_min_ms(),
            election_max_ms: default_election_max_ms(),
            snapshot_logs: default_snapshot_logs(),
            install_snapshot_timeout_ms: default_install_snapshot_timeout_ms(),
            keep_logs_after_snapshot: default_keep_logs_after_snapshot(),
            log_segment_mib: default_log_segment_mib(),
            tls_dir: None,
        }
    }

    /// Faster timers for in-process test clusters on loopback.
    pub fn for_test(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        MetadataConfig {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            log_segment_mib: 2,
            ..MetadataConfig::new(node_id, data_dir)
        }
    }

    /// The openraft configuration these settings stand for, validated.
    pub fn raft_config(&self) -> Result<openraft::Config, Box<openraft::ConfigError>> {
        let snapshot_logs = self.snapshot_logs.max(1);
        openraft::Config {
            cluster_name: "cairn-metadata".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
            // Must exceed the snapshot policy, or a lagging follower is always
            // sent a snapshot rather than logs.
            replication_lag_threshold: snapshot_logs.saturating_mul(2),
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 64,
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            // Purge at least once per snapshot, so a small snapshot interval
            // really compacts the log.
            purge_batch_size: snapshot_logs.min(256),
            ..Default::default()
        }
        .validate()
        .map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn defaults_fill_missing_fields() {
        let c: MetadataConfig =
            toml::from_str("node_id = 3\ndata_dir = \"/var/lib/cairn/meta\"\n").expect("parse");
        assert_eq!(c, MetadataConfig::new(3, "/var/lib/cairn/meta"));
        assert!(c.raft_config().is_ok());
        assert!(MetadataConfig::for_test(1, Path::new("/x")).raft_config().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<MetadataConfig, _> =
            toml::from_str("node_id = 1\ndata_dir = \"/x\"\nheartbeat = 5\n");
        assert!(r.is_err());
    }

    #[test]
    fn inconsistent_timers_are_refused() {
        let mut c = MetadataConfig::for_test(1, Path::new("/x"));
        c.election_min_ms = c.heartbeat_ms;
        assert!(c.raft_config().is_err());
    }
}
