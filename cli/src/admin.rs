//! `cairn admin`: operator verbs: the metadata group's status, adding or
//! removing one of its members, garbage collection and snapshot usage
//! (those two in [`crate::gc`]), scrub ([`crate::scrub`]) and chunk nodes
//! that leave ([`crate::nodes`]).

use crate::gc::GatewayArgs;
use crate::group::GroupArgs;
use cairn_proto::pb::MemberInfo;

#[derive(clap::Subcommand, Debug)]
pub enum AdminCmd {
    /// The cluster at a glance: a health verdict with its reasons, the
    /// metadata members (state, term, leader, log positions, lag), the chunk
    /// nodes by zone (state, chunks, bytes, free disk, backlog) and the
    /// gateway's workers.
    Status {
        #[command(flatten)]
        group: GroupArgs,
        /// The gateway's HTTP address (host:port); by default read from --data-dir.
        #[arg(long)]
        gateway: Option<String>,
        /// `text` (tables) or `json` (one object, for scripts).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Add a member to the metadata group: it joins as a learner, catches up,
    /// then becomes a voter. Start it first (`cairn metadata-node` with a fresh
    /// data directory and this id); do not initialize it.
    AddMember {
        #[command(flatten)]
        group: GroupArgs,
        /// The new member's Raft id (unique, never reused).
        #[arg(long)]
        id: u64,
        /// The new member's gRPC address, http://host:port.
        #[arg(long)]
        addr: String,
    },
    /// Remove a member from the metadata group (stop its process afterwards).
    RemoveMember {
        #[command(flatten)]
        group: GroupArgs,
        #[arg(long)]
        id: u64,
    },
    /// Run a garbage collection pass now: chunks no snapshot or holder needs
    /// are deleted and pack files compacted.
    Gc {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Wait for the pass to end and print what it examined and freed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Run a scrub pass now on every chunk node: every stored chunk is re-read
    /// and checked against its hash; a corrupt copy is rebuilt from a replica.
    Scrub {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Wait for the passes to end and print per node what they checked,
        /// found and repaired.
        #[arg(long)]
        wait: bool,
        /// Pace of the pass in bytes per second (0: as fast as the disks go).
        #[arg(long, default_value_t = 0)]
        bytes_per_sec: u64,
        /// With --wait: give up waiting after this many seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        timeout_secs: u64,
    },
    /// Chunk nodes: list them, drain one, remove one.
    Node {
        #[command(subcommand)]
        cmd: crate::nodes::NodeCmd,
    },
    /// Accounts: create one (prints its id), list them.
    Account {
        #[command(subcommand)]
        cmd: crate::accounts::AccountCmd,
    },
    /// Access keys: create one (prints the pair), list, revoke.
    Key {
        #[command(subcommand)]
        cmd: crate::accounts::KeyCmd,
    },
    /// Create a cluster CA (if the directory has none) and certificates
    /// signed by it for the named processes, for deployments `cairn up` does
    /// not manage.
    Tls(crate::tls::TlsArgs),
    /// How many bytes deleting a snapshot would free now, and how many it shares.
    SnapshotUsage {
        /// The snapshot id (snap-...).
        snapshot: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Status { group, gateway, output } => {
            let client = group.client()?;
            // Members the group has now, not only the ones given.
            let addrs = client.refresh_members().await.unwrap_or_else(|_| client.addrs());
            let gateway = gateway.or_else(|| {
                let file = crate::process::addr_file(&group.data_dir().join("gateway"));
                crate::process::read_addrs(&file).map(|a| a.main)
            });
            let overview = crate::status::gather(&client, &addrs, gateway).await;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&overview.json())?);
            } else {
                overview.print();
            }
            Ok(())
        }
        AdminCmd::AddMember { group, id, addr } => {
            let client = group.client()?;
            let members = client.add_member(id, &addr).await?;
            eprintln!("cairn: member {id} ({addr}) added");
            print_members(&members);
            Ok(())
        }
        AdminCmd::RemoveMember { group, id } => {
            let client = group.client()?;
            let members = client.remove_member(id).await?;
            eprintln!("cairn: member {id} removed; its process can be stopped");
            print_members(&members);
            Ok(())
        }
        AdminCmd::Gc { gateway, wait, timeout_secs } => {
            crate::gc::gc(gateway, wait, std::time::Duration::from_secs(timeout_secs)).await
        }
        AdminCmd::Scrub { gateway, wait, bytes_per_sec, timeout_secs } => {
            let timeout = std::time::Duration::from_secs(timeout_secs);
            crate::scrub::scrub(gateway, wait, bytes_per_sec, timeout).await
        }
        AdminCmd::Node { cmd } => crate::nodes::run(cmd).await,
        AdminCmd::Account { cmd } => crate::accounts::run_account(cmd).await,
        AdminCmd::Key { cmd } => crate::accounts::run_key(cmd).await,
        AdminCmd::Tls(args) => crate::tls::run(args),
        AdminCmd::SnapshotUsage { snapshot, gateway } => {
            crate::gc::snapshot_usage(gateway, &snapshot).await
        }
    }
}

fn print_members(members: &[MemberInfo]) {
    println!("{:<6} {:<28} role", "id", "address");
    for m in members {
        println!("{:<6} {:<28} {}", m.node_id, m.addr, if m.voter { "voter" } else { "learner" });
    }
}
