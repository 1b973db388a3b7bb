//! The gateway's configuration: one serde struct with defaults, read from the
//! process's TOML file (or built with [`GatewayConfig::for_test`]).

use cairn_proto::objects::S3Bucket;
use serde::{Deserialize, Serialize};

/// Everything a gateway needs to know about the region it fronts.
///
/// The region, its AZ names, the account and the replication factor are
/// configuration, not code: people name them after the AWS region their
/// scripts already use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The region name clients sign for (the SigV4 credential scope region).
    pub region: String,
    /// The one account that owns resources while `dev_any_key` is on.
    pub account_id: String,
    /// With `dev_any_key` off: the file holding the cluster key (64 hex
    /// digits) that unseals the access keys' secrets.
    pub cluster_key_file: String,
    /// Directory with the cluster CA and this gateway's certificate
    /// (`ca.pem`, `node.pem`, `node.key`): its calls to the metadata group
    /// and the chunk nodes then use mutual TLS. Empty: clear text.
    pub tls_dir: String,
    /// With `tls_dir`: the NBD door opens volumes only for clients that
    /// started TLS (NBD_OPT_STARTTLS); without, TLS is offered, not required.
    pub nbd_tls_required: bool,
    /// The archive tier's object store as a local directory (`cairn up`
    /// puts it under the data directory). Every gateway must see the same
    /// store: with several gateways on several hosts, use `archive_s3`.
    /// Neither set: the archive tier is not offered.
    pub archive_dir: String,
    /// The archive tier's object store as an S3-compatible service.
    pub archive_s3: Option<S3Bucket>,
    /// The region's availability zones, in order; zone N also has the id `<region>-az<N>`.
    pub availability_zones: Vec<String>,
    /// gRPC URLs of the metadata group's members (`http://host:port`).
    pub metadata: Vec<String>,
    /// Replicas per chunk of a snapshot; placement uses `min(rf, nodes)`.
    pub replication_factor: u32,
    /// Development mode: accept any access key and any signature, and map every
    /// caller to `account_id`. Off: every request's SigV4 signature is checked
    /// against the access keys in the metadata group.
    pub dev_any_key: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests served at once; beyond that the gateway sheds load with
    /// `RequestLimitExceeded` (HTTP 503), which AWS clients retry.
    pub max_concurrent_requests: usize,
    /// Deadline of one HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long one metadata call keeps looking for a leader before the
    /// request is answered as unavailable (HTTP 503), in milliseconds.
    pub metadata_deadline_ms: u64,
    /// This gateway's name in copy-job leases; must be unique among the
    /// gateways running at once. Empty (the default) means a random id per
    /// process start: a restarted gateway then resumes its old jobs only once
    /// their leases lapse. With a fixed id it resumes them at once.
    pub gateway_id: String,
    /// Length of a copy-job lease, in milliseconds. The holder renews it every
    /// third of that; a gateway that stops renewing (killed, hung) loses its
    /// jobs to another gateway once that one watched the lease go unrenewed
    /// this long on its own clock (so at most about this long plus a scan).
    /// Every gateway of a region must use the same length.
    pub job_lease_ms: u64,
    /// How often the job runner looks for jobs to run (unowned, or whose
    /// lease lapsed), in milliseconds.
    pub job_scan_ms: u64,
    /// A copy whose volume host stays unreachable this long ends in `error`
    /// with a StateMessage, in seconds (counted from the first failure, across
    /// gateways). The same limit ends a CopySnapshot whose source (an
    /// unreachable Outpost) or destination cannot be reached.
    pub copy_host_timeout_secs: u64,
    /// A copy stream silent this long (no progress from the host) counts as
    /// a host failure and is retried, in seconds; also the deadline of each
    /// chunk call of a CopySnapshot between the region and an Outpost.
    pub copy_idle_secs: u64,
    /// A garbage collection pass runs this often, in seconds (0: only on
    /// demand, `cairn admin gc`).
    pub gc_interval_secs: u64,
    /// Memory one pass may use for its live filter and the set of manifest
    /// pages walked, in bytes. Past it the pass marks the chunk id space in
    /// partitions (walking the manifests once per partition), so memory is
    /// bounded by this, not by the number of chunks.
    pub gc_memory_bytes: u64,
    /// A chunk node that does not answer this gateway for this long is
    /// declared `down`, in seconds: placement stops picking it and its
    /// chunks are re-replicated from the surviving copies. Keep it below
    /// `copy_host_timeout_secs`, so a copy whose target went down re-places
    /// its chunks before it gives up.
    pub node_down_secs: u64,
    /// A re-replication pass runs this often, in seconds (0: only when asked
    /// for, or when a node is drained, removed, goes down or comes back).
    pub repair_interval_secs: u64,
    /// A volume left `creating` or `deleting` this long (by this gateway's
    /// watch, with no job for it running here) is driven to its end by this
    /// gateway's volume sweep, in milliseconds: the request or job that
    /// started it died with its gateway or gave up. Longer than a request's
    /// own work takes, so the sweep rarely runs beside it (it is harmless if
    /// it does: every step is idempotent).
    pub volume_stall_ms: u64,
    /// For tests only: added to this gateway's wall clock (the times it
    /// writes into leases), to show that no decision trusts clocks to agree.
    pub clock_skew_ms: i64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            region: "cairn-1".into(),
            account_id: "123456789012".into(),
            cluster_key_file: String::new(),
            tls_dir: String::new(),
            archive_dir: String::new(),
            archive_s3: None,
            nbd_tls_required: false,
            availability_zones: vec!["cairn-1a".into(), "cairn-1b".into()],
            metadata: Vec::new(),
            replication_factor: 3,
            dev_any_key: true,
            max_body_bytes: 1 << 20,
            max_concurrent_requests: 256,
            request_timeout_ms: 30_000,
            metadata_deadline_ms: 10_000,
            gateway_id: String::new(),
            job_lease_ms: 30_000,
            job_scan_ms: 5_000,
            copy_host_timeout_secs: 600,
            copy_idle_secs: 120,
            gc_interval_secs: 3600,
            gc_memory_bytes: 64 << 20,
            node_down_secs: 600,
            repair_interval_secs: 3600,
            volume_stall_ms: 60_000,
            clock_skew_ms: 0,
        }
    }
}

/// A configuration the gateway cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("invalid gateway configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl GatewayConfig {
    /// Defaults pointing at the given metadata members, with short deadlines so
    /// tests see failures quickly.
    pub fn for_test(metadata: Vec<String>) -> Self {
        GatewayConfig {
            metadata,
            metadata_deadline_ms: 5_000,
            job_lease_ms: 2_000,
            job_scan_ms: 200,
            copy_host_timeout_secs: 10,
            copy_idle_secs: 5,
            volume_stall_ms: 2_000,
            ..GatewayConfig::default()
        }
    }

    /// Checks what serde cannot: non-empty lists, sane numbers, and that no
    /// unimplemented mode is asked for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: &str| Err(ConfigError { field, reason: reason.to_string() });
        if self.region.is_empty() {
            return err("region", "must not be empty");
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return err("account_id", "must be 12 digits");
        }
        if self.availability_zones.is_empty() {
            return err("availability_zones", "must name at least one zone");
        }
        if self.metadata.is_empty() {
            return err("metadata", "must name at least one metadata member");
        }
        if self.node_down_secs == 0 {
            return err("node_down_secs", "must be at least 1");
        }
        if self.replication_factor == 0 {
            return err("replication_factor", "must be at least 1");
        }
        if !self.dev_any_key && self.cluster_key_file.is_empty() {
            return err(
                "cluster_key_file",
                "must name the cluster key file when dev_any_key is off (signatures are checked)",
            );
        }
        if self.nbd_tls_required && self.tls_dir.is_empty() {
            return err("nbd_tls_required", "needs tls_dir (the certificate the door offers)");
        }
        if self.max_body_bytes == 0 || self.max_concurrent_requests == 0 {
            return err("max_body_bytes/max_concurrent_requests", "must be positive");
        }
        if self.job_lease_ms < 300 {
            return err("job_lease_ms", "must be at least 300 (renewed every third of it)");
        }
        if !(1 << 16..=1 << 30).contains(&self.gc_memory_bytes) {
            return err("gc_memory_bytes", "must be between 64 KiB and 1 GiB");
        }
        if self.job_scan_ms == 0 || self.copy_idle_secs == 0 || self.volume_stall_ms == 0 {
            return err("job_scan_ms/copy_idle_secs/volume_stall_ms", "must be positive");
        }
        if self.gateway_id.len() > 128 || self.gateway_id.chars().any(char::is_whitespace) {
            return err("gateway_id", "must be at most 128 characters, without spaces");
        }
        Ok(())
    }

    /// The AZ id of a zone name (`<region>-az<N>`, N from 1 in list order).
    pub fn az_id(&self, az: &str) -> Option<String> {
        let i = self.availability_zones.iter().position(|z| z == az)?;
        Some(format!("{}-az{}", self.region, i + 1))
    }

    /// The zone name of an AZ id, the inverse of [`GatewayConfig::az_id`].
    pub fn az_by_id(&self, id: &str) -> Option<String> {
        self.availability_zones.iter().find(|z| self.az_id(z).as_deref() == Some(id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: GatewayConfig = serde_json::from_str(r#"{"metadata":["http://m:1"]}"#).unwrap();
        assert_eq!(c.region, "cairn-1");
        assert_eq!(c.availability_zones, vec!["cairn-1a", "cairn-1b"]);
        assert_eq!(c.replication_factor, 3);
        assert!(c.dev_any_key);
        c.validate().unwrap();
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"regoin":"x"}"#).is_err());
    }

    #[test]
    fn validation() {
        let mut c = GatewayConfig::for_test(vec!["http://m:1".into()]);
        c.validate().unwrap();
        c.dev_any_key = false;
        assert_eq!(c.validate().unwrap_err().field, "cluster_key_file");
        c.cluster_key_file = "/etc/cairn/cluster.key".into();
        c.validate().unwrap();
        let c = GatewayConfig::for_test(vec![]);
        assert_eq!(c.validate().unwrap_err().field, "metadata");
        let mut c = GatewayConfig::for_test(vec!["http://m:1".into()]);
        c.job_lease_ms = 10;
        assert_eq!(c.validate().unwrap_err().field, "job_lease_ms");
        c.job_lease_ms = 2_000;
        c.gateway_id = "two words".into();
        assert_eq!(c.validate().unwrap_err().field, "gateway_id");
    }

    #[test]
    fn az_ids() {
        let c = GatewayConfig::for_test(vec!["http://m:1".into()]);
        assert_eq!(c.az_id("cairn-1b").as_deref(), Some("cairn-1-az2"));
        assert_eq!(c.az_by_id("cairn-1-az1").as_deref(), Some("cairn-1a"));
        assert_eq!(c.az_by_id("cairn-1-az9"), None);
    }
}
