//! `cairn admin account create` and `cairn admin key create|list|revoke`:
//! accounts and access keys in the metadata group. A new key's secret is
//! sealed here with the cluster key (`cluster.key` in a `cairn up` data
//! directory, or `--cluster-key-file`) before it is proposed, and printed
//! once, as `AWS_ACCESS_KEY_ID=` and `AWS_SECRET_ACCESS_KEY=` lines to paste
//! into an env file. Nothing else ever shows the secret again.

use crate::group::GroupArgs;
use anyhow::{bail, Context};
use cairn_core::accounts::{
    new_access_key_id, new_account_id, new_secret_key, valid_account_id, valid_account_name,
    AccessKey, Account, ClusterKey, KeyState,
};
use cairn_core::command::{Command, CommandOutput, Query, QueryOutput};
use cairn_core::records::RECORD_VERSION;
use cairn_core::time::now_ms;
use cairn_proto::MetadataClient;
use std::path::{Path, PathBuf};

/// The name of the cluster key file in a `cairn up` data directory.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

#[derive(clap::Subcommand, Debug)]
pub enum AccountCmd {
    /// Create an account; prints its 12-digit id.
    Create {
        /// A name unique in the cluster (3 to 63 of a-z, 0-9 and -).
        name: String,
        /// Choose the id instead of a random one.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        group: GroupArgs,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        group: GroupArgs,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an access key for ACCOUNT (its id or name); prints the pair.
    Create {
        account: String,
        #[command(flatten)]
        group: GroupArgs,
        /// The cluster key file (default: cluster.key in --data-dir).
        #[arg(long)]
        cluster_key_file: Option<PathBuf>,
    },
    /// List access keys (never their secrets).
    List {
        /// Only this account's (id or name).
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        group: GroupArgs,
    },
    /// Revoke an access key: every gateway refuses it within seconds.
    Revoke {
        key: String,
        #[command(flatten)]
        group: GroupArgs,
    },
}

fn output(
    r: Result<cairn_core::command::CommandResult, cairn_proto::MetaClientError>,
) -> anyhow::Result<CommandOutput> {
    Ok(r.context("the metadata group did not answer")??)
}

pub async fn accounts(meta: &MetadataClient) -> anyhow::Result<Vec<Account>> {
    match meta.read(&Query::Accounts).await? {
        QueryOutput::Accounts(a) => Ok(a),
        other => bail!("unexpected metadata answer: {other:?}"),
    }
}

/// The account named by `who` (an id or a name).
async fn find_account(meta: &MetadataClient, who: &str) -> anyhow::Result<Account> {
    accounts(meta)
        .await?
        .into_iter()
        .find(|a| a.id == who || a.name == who)
        .with_context(|| format!("no account has the id or name {who:?}"))
}

/// Creates an account named `name` (with `id`, or a random one).
pub async fn create_account(
    meta: &MetadataClient,
    name: &str,
    id: Option<String>,
) -> anyhow::Result<Account> {
    if !valid_account_name(name) {
        bail!("{name:?} is not an account name (3 to 63 of a-z, 0-9 and -, not starting or ending with -)");
    }
    let id = id.unwrap_or_else(new_account_id);
    if !valid_account_id(&id) {
        bail!("{id:?} is not an account id (12 digits)");
    }
    let a = Account { version: RECORD_VERSION, id, name: name.to_string(), created_ms: now_ms() };
    match output(meta.write(&Command::CreateAccount(a)).await)? {
        CommandOutput::Account(a) => Ok(a),
        other => bail!("unexpected metadata answer: {other:?}"),
    }
}

/// Creates an access key for `account_id`; the id and the secret.
pub async fn create_key(
    meta: &MetadataClient,
    cluster_key: &ClusterKey,
    account_id: &str,
) -> anyhow::Result<(String, String)> {
    let id = new_access_key_id();
    let secret = new_secret_key();
    let key = AccessKey {
        version: RECORD_VERSION,
        id: id.clone(),
        account_id: account_id.to_string(),
        sealed_secret: cluster_key.seal(&id, &secret),
        state: KeyState::Active,
        created_ms: now_ms(),
        revoked_ms: None,
    };
    output(meta.write(&Command::CreateAccessKey(key)).await)?;
    Ok((id, secret))
}

pub async fn keys(meta: &MetadataClient) -> anyhow::Result<Vec<AccessKey>> {
    match meta.read(&Query::AccessKeys).await? {
        QueryOutput::AccessKeys(k) => Ok(k),
        other => bail!("unexpected metadata answer: {other:?}"),
    }
}

/// Reads the cluster key from `path`.
pub fn read_cluster_key(path: &Path) -> anyhow::Result<ClusterKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the cluster key {}", path.display()))?;
    ClusterKey::from_hex(&text).with_context(|| format!("{}", path.display()))
}

pub async fn run_account(cmd: AccountCmd) -> anyhow::Result<()> {
    match cmd {
        AccountCmd::Create { name, id, group } => {
            let meta = group.client()?;
            let a = create_account(&meta, &name, id).await?;
            println!("{}", a.id);
        }
        AccountCmd::List { group } => {
            let meta = group.client()?;
            let mut t = crate::table::new(&["ACCOUNT", "NAME"]);
            for a in accounts(&meta).await? {
                t.add_row(vec![a.id, a.name]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

pub async fn run_key(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create { account, group, cluster_key_file } => {
            let file = cluster_key_file.unwrap_or_else(|| group.data_dir().join(CLUSTER_KEY_FILE));
            let cluster_key = read_cluster_key(&file)?;
            let meta = group.client()?;
            let a = find_account(&meta, &account).await?;
            let (id, secret) = create_key(&meta, &cluster_key, &a.id).await?;
            println!("AWS_ACCESS_KEY_ID={id}");
            println!("AWS_SECRET_ACCESS_KEY={secret}");
        }
        KeyCmd::List { account, group } => {
            let meta = group.client()?;
            let only = match account {
                Some(who) => Some(find_account(&meta, &who).await?.id),
                None => None,
            };
            let mut t = crate::table::new(&["ACCESS KEY", "ACCOUNT", "STATE"]);
            for k in keys(&meta).await? {
                if only.as_ref().is_none_or(|a| *a == k.account_id) {
                    t.add_row(vec![k.id, k.account_id, k.state.as_str().to_string()]);
                }
            }
            println!("{t}");
        }
        KeyCmd::Revoke { key, group } => {
            let meta = group.client()?;
            output(
                meta.write(&Command::RevokeAccessKey { id: key.clone(), at_ms: now_ms() }).await,
            )?;
            println!("{key} revoked");
        }
    }
    Ok(())
}
