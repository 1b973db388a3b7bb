//! `cairn init-cluster`: bootstraps a fresh metadata group from the outside,
//! as a one-shot step of a deployment (deploy/'s `init` service).
//!
//! Members are given in node-id order: the first address is node 1, the second
//! node 2, and so on, which must match each member's configured `node_id`.
//! The verb waits until every member answers, then initializes the group on
//! the first one, unless some member already belongs to a group. It is safe to
//! run on every start of a deployment: on an initialized group it only waits
//! for a leader and says so.

use crate::up::credentials;
use anyhow::{bail, Context};
use cairn_core::command::{Query, QueryOutput};
use cairn_proto::pb::metadata_client::MetadataClient as PbMetaClient;
use cairn_proto::pb::{InitRequest, MemberInfo, StatusReply};
use cairn_proto::tls::{self, ClusterTls};
use cairn_proto::MetadataClient;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Metadata member addresses (`http://host:port`), in node-id order
    /// (first = node 1). Raft stores them, so they must be stable names.
    #[arg(long, value_delimiter = ',', required = true)]
    pub metadata: Vec<String>,
    /// How long to wait for the members to answer and elect a leader, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// TLS directory (`ca.pem`, `node.pem`, `node.key`) when the members use
    /// mutual TLS.
    #[arg(long)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Where the gateways' cluster key and the first account's key pair
    /// live: created there on the first run (`cluster.key`, `credentials`,
    /// and `env` to source), kept after. The gateways then check signatures
    /// with `cluster_key_file = "<dir>/cluster.key"`.
    #[arg(long)]
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The first account's 12-digit id (with --secrets-dir).
    #[arg(long, env = "CAIRN_ACCOUNT_ID", default_value = "123456789012")]
    pub account_id: String,
}

/// How often unanswered members are asked again while waiting.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let addrs = args.metadata;
    let tls = args.tls_dir.as_deref().map(ClusterTls::load).transpose()?;
    let client = MetadataClient::new(addrs.clone())
        .with_deadline(Duration::from_secs(5))
        .with_tls(tls.clone());

    let statuses = wait_all_answer(&client, &addrs, deadline).await?;
    for (i, (addr, s)) in addrs.iter().zip(&statuses).enumerate() {
        let want = i as u64 + 1;
        if s.node_id != want {
            bail!(
                "{addr} is node {} but is listed at position {want}; list members in node-id order",
                s.node_id
            );
        }
    }

    if let Some((addr, s)) = addrs.iter().zip(&statuses).find(|(_, s)| !s.members.is_empty()) {
        eprintln!(
            "cairn: metadata group already initialized ({addr} knows {} members); nothing to do",
            s.members.len()
        );
    } else {
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| MemberInfo { node_id: i as u64 + 1, addr: a.clone(), voter: true })
            .collect();
        let channel = tls::endpoint(&addrs[0], tls.as_ref())?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", addrs[0]))?;
        let mut c = PbMetaClient::new(channel);
        // The member answers success if another run initialized it meanwhile.
        c.initialize(InitRequest { members })
            .await
            .with_context(|| format!("initializing the group on {}", addrs[0]))?;
        eprintln!("cairn: metadata group initialized with {} members", addrs.len());
    }

    loop {
        if let Ok(QueryOutput::Nodes(_)) = client.read(&Query::Nodes).await {
            break;
        }
        if Instant::now() > deadline {
            bail!("the metadata group elected no leader in time");
        }
        tokio::time::sleep(POLL).await;
    }
    println!("metadata group ready: {} members, leader elected", addrs.len());
    if let Some(dir) = &args.secrets_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = credentials::cluster_key(dir)?;
        let c = credentials::first_key(&client, dir, &args.account_id, &key).await?;
        credentials::write_private(
            &dir.join("env"),
            format!(
                "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\n",
                c.access_key_id, c.secret_access_key
            )
            .as_bytes(),
        )?;
        println!("account {}: key pair in {}", args.account_id, dir.join("env").display());
    }
    Ok(())
}

/// Polls every member's status until all answer, or fails at `deadline`
/// naming the members that never did.
async fn wait_all_answer(
    client: &MetadataClient,
    addrs: &[String],
    deadline: Instant,
) -> anyhow::Result<Vec<StatusReply>> {
    let mut answers: Vec<Option<StatusReply>> = vec![None; addrs.len()];
    loop {
        for (addr, slot) in addrs.iter().zip(answers.iter_mut()) {
            if slot.is_none() {
                *slot = client.status(addr).await.ok();
            }
        }
        if answers.iter().all(Option::is_some) {
            return Ok(answers.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            let missing: Vec<&str> = addrs
                .iter()
                .zip(&answers)
                .filter(|(_, s)| s.is_none())
                .map(|(a, _)| a.as_str())
                .collect();
            bail!("metadata members did not answer in time: {}", missing.join(", "));
        }
        tokio::time::sleep(POLL).await;
    }
}
