//! Where the metadata group is, for the admin verbs that talk to it: a
//! `cairn up` data directory (the addresses its members bound), or
//! addresses given.

use anyhow::Context;
use cairn_proto::tls::ClusterTls;
use cairn_proto::MetadataClient;
use std::path::{Path, PathBuf};

/// Where the metadata group is: a `cairn up` data directory, or addresses.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// Data directory of a `cairn up` cluster (its metadata addresses are read from it).
    #[arg(long, default_value = "./cairn-data")]
    data_dir: PathBuf,
    /// Metadata member addresses (http://host:port), instead of --data-dir.
    #[arg(long, value_delimiter = ',')]
    metadata: Vec<String>,
    /// TLS directory (`ca.pem`, `node.pem`, `node.key`) of a certificate the
    /// cluster CA signed. Default: `<data-dir>/tls/admin` when it exists
    /// (clear text otherwise).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

impl GroupArgs {
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A client of the group.
    pub fn client(&self) -> anyhow::Result<MetadataClient> {
        Ok(MetadataClient::new(self.addrs()?).with_tls(self.tls()?))
    }

    /// The TLS identity the verbs present, if the cluster uses TLS.
    pub fn tls(&self) -> anyhow::Result<Option<ClusterTls>> {
        let dir = match &self.tls_dir {
            Some(d) => d.clone(),
            None => {
                let d = self.data_dir.join("tls").join(crate::tls::ADMIN);
                if !d.exists() {
                    return Ok(None);
                }
                d
            }
        };
        Ok(Some(ClusterTls::load(&dir)?))
    }

    pub fn addrs(&self) -> anyhow::Result<Vec<String>> {
        if self.metadata.is_empty() {
            addrs_from(&self.data_dir)
        } else {
            Ok(self.metadata.clone())
        }
    }
}

/// The members of a `cairn up` cluster: the addresses they bound (their
/// `addr.toml`, on whatever `--host` was), else the ports `cluster.toml`
/// keeps, on loopback.
fn addrs_from(data_dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let bound: Vec<String> = (1..=3)
        .filter_map(|i| {
            let file = crate::process::addr_file(&data_dir.join(format!("meta-{i}")));
            crate::process::read_addrs(&file).map(|a| format!("http://{}", a.main))
        })
        .collect();
    if !bound.is_empty() {
        return Ok(bound);
    }
    let text = std::fs::read_to_string(data_dir.join("cluster.toml"))
        .with_context(|| format!("no cluster in {}", data_dir.display()))?;
    let v: toml::Value = toml::from_str(&text)?;
    let ports = v
        .get("metadata_ports")
        .and_then(|p| p.as_array())
        .context("cluster.toml has no metadata_ports")?;
    Ok(ports
        .iter()
        .filter_map(|p| p.as_integer())
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect())
}
