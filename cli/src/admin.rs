//! `cairn admin`: operator verbs.

use anyhow::Context;
use cairn_proto::MetadataClient;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// Members of the metadata group: id, address, state, term, leader, log positions.
    Status {
        /// Data directory of a `cairn up` cluster (its metadata addresses are read from it).
        #[arg(long, default_value = "./cairn-data")]
        data_dir: PathBuf,
        /// Metadata member addresses (http://host:port), instead of --data-dir.
        #[arg(long, value_delimiter = ',')]
        metadata: Vec<String>,
    },
}

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Status { data_dir, metadata } => {
            let addrs = if metadata.is_empty() { addrs_from(&data_dir)? } else { metadata };
            let client = MetadataClient::new(addrs.clone());
            println!(
                "{:<6} {:<28} {:<10} {:>6} {:>7} {:>10} {:>10}",
                "id", "address", "state", "term", "leader", "last_log", "applied"
            );
            for a in &addrs {
                match client.status(a).await {
                    Ok(s) => println!(
                        "{:<6} {:<28} {:<10} {:>6} {:>7} {:>10} {:>10}",
                        s.node_id,
                        a,
                        s.state,
                        s.term,
                        s.leader_id,
                        s.last_log_index,
                        s.last_applied
                    ),
                    Err(e) => println!("{:<6} {:<28} {:<10} ({e})", "?", a, "down"),
                }
            }
            Ok(())
        }
    }
}

fn addrs_from(data_dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
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
