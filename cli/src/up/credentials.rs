//! Who may call a `cairn up` cluster. Unless `--open`, the gateway checks
//! every signature: `cluster.key` (created once, mode 0600) seals the
//! secrets in the metadata group, and the first account (the cluster's
//! account id, named `default`) gets an access key on the first start,
//! kept in `credentials` (0600) so that later starts write the same pair
//! into `env`. A key revoked meanwhile is replaced by a new one.
//! `--open` is development mode (any key, any signature): only on loopback.

use crate::accounts::{create_account, create_key, read_cluster_key, CLUSTER_KEY_FILE};
use crate::hint::Hinted;
use crate::process::write_atomic;
use anyhow::Context;
use cairn_core::accounts::{ClusterKey, KeyState};
use cairn_core::command::{Query, QueryOutput};
use cairn_proto::MetadataClient;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The key pair `env` exports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Credentials {
    /// What `--open` hands out: any pair works, this one is easy to type.
    pub fn open() -> Self {
        Credentials { access_key_id: "cairn".into(), secret_access_key: "cairn-dev-secret".into() }
    }
}

const CREDENTIALS_FILE: &str = "credentials";

pub fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_atomic(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

/// The data directory's cluster key, created the first time.
pub fn cluster_key(data_dir: &Path) -> anyhow::Result<ClusterKey> {
    let path = data_dir.join(CLUSTER_KEY_FILE);
    if path.exists() {
        return read_cluster_key(&path);
    }
    let key = ClusterKey::generate();
    write_private(&path, format!("{}\n", key.to_hex()).as_bytes())?;
    Ok(key)
}

/// `--open` accepts anyone: refused unless `host` is a loopback address.
pub fn check_open(host: &str) -> anyhow::Result<()> {
    let loopback =
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(Hinted::new(
        format!("--open accepts any access key, so every listener must be on loopback, not {host}"),
        "drop --open (the cluster then checks signatures with the key pair in its env file), or use --host 127.0.0.1",
    )
    .into())
}

/// The first account's key pair: the one kept in `credentials` while it
/// is active, else a new one (the account created if missing).
pub async fn first_key(
    meta: &MetadataClient,
    data_dir: &Path,
    account_id: &str,
    cluster_key: &ClusterKey,
) -> anyhow::Result<Credentials> {
    let path = data_dir.join(CREDENTIALS_FILE);
    if let Some(c) =
        std::fs::read_to_string(&path).ok().and_then(|t| toml::from_str::<Credentials>(&t).ok())
    {
        match meta.read(&Query::AccessKey(c.access_key_id.clone())).await? {
            QueryOutput::AccessKey(Some(k)) if k.state == KeyState::Active => return Ok(c),
            _ => eprintln!("cairn: the key in {} is revoked; making a new one", path.display()),
        }
    }
    let accounts = crate::accounts::accounts(meta).await?;
    if !accounts.iter().any(|a| a.id == account_id) {
        let name = if accounts.iter().any(|a| a.name == "default") { "first" } else { "default" };
        create_account(meta, name, Some(account_id.to_string())).await?;
    }
    let (access_key_id, secret_access_key) = create_key(meta, cluster_key, account_id).await?;
    let c = Credentials { access_key_id, secret_access_key };
    write_private(&path, toml::to_string(&c)?.as_bytes())?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_only_on_loopback() {
        for host in ["127.0.0.1", "::1", "localhost", "127.0.0.2"] {
            assert!(check_open(host).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "10.0.0.5", "example.com"] {
            assert!(check_open(host).is_err(), "{host}");
        }
    }

    #[test]
    fn the_cluster_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = cluster_key(dir.path()).expect("made");
        assert_eq!(cluster_key(dir.path()).expect("read"), k);
        let mode = std::fs::metadata(dir.path().join(CLUSTER_KEY_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
