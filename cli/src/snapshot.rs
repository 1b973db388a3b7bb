//! `cairn snapshot create|list|delete|restore|wait`: EC2 snapshots through
//! the gateway's EC2 API, signed like any AWS client; `--wait` follows the
//! work with a progress bar ([`crate::watch`]).

use crate::ec2::records::{snapshot_id, volume_id, SnapshotRow};
use crate::ec2::{param, ApiArgs};
use crate::volume::NewVolume;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Snapshot a volume at this instant.
    Create {
        volume: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Follow the copy to its end: percent, MiB/s, ETA, bytes sent after dedup.
        #[arg(long)]
        wait: bool,
    },
    /// List snapshots (all, those of one volume, or the ids given).
    List {
        ids: Vec<String>,
        /// Only the snapshots of this volume.
        #[arg(long)]
        volume: Option<String>,
    },
    /// Delete a snapshot.
    Delete { snapshot: String },
    /// Create a volume from a snapshot.
    Restore {
        snapshot: String,
        /// Availability zone (default: the cluster's first zone).
        #[arg(long)]
        zone: Option<String>,
        /// Size in GiB (default: the snapshot's).
        #[arg(long)]
        size: Option<u64>,
        #[arg(long, default_value = "gp3")]
        volume_type: String,
        /// Follow the volume until it is available and all local (hydrated).
        #[arg(long)]
        wait: bool,
    },
    /// Follow a snapshot until it is completed (exit 1 if it fails).
    Wait { snapshot: String },
}

pub async fn run(cmd: SnapshotCmd, api: ApiArgs) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Create { volume, description, wait } => {
            let vid = volume_id(&volume)?;
            let client = api.client()?;
            let mut params = vec![param("VolumeId", &vid)];
            if !description.is_empty() {
                params.push(param("Description", description));
            }
            let root = client.call("CreateSnapshot", &params).await?;
            let row = SnapshotRow::from_xml(&root);
            if wait {
                if !api.json() {
                    eprintln!("{} of {vid} started", row.snapshot_id);
                }
                let done = crate::watch::snapshot(&client, &row.snapshot_id, api.json()).await?;
                if !api.json() {
                    println!("{}", done.snapshot_id);
                }
            } else {
                show_one(&api, &row)?;
            }
            Ok(())
        }
        SnapshotCmd::List { ids, volume } => {
            let mut params = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                params.push(param(&format!("SnapshotId.{}", i + 1), snapshot_id(id)?));
            }
            if let Some(v) = volume {
                params.push(param("Filter.1.Name", "volume-id"));
                params.push(param("Filter.1.Value.1", volume_id(&v)?));
            }
            let client = api.client()?;
            let items = client.describe("DescribeSnapshots", &params, "snapshotSet").await?;
            let rows: Vec<SnapshotRow> = items.iter().map(SnapshotRow::from_xml).collect();
            if api.json() {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
            Ok(())
        }
        SnapshotCmd::Delete { snapshot } => {
            let id = snapshot_id(&snapshot)?;
            api.client()?.call("DeleteSnapshot", &[param("SnapshotId", &id)]).await?;
            if api.json() {
                println!("{}", serde_json::json!({ "snapshot_id": id, "deleted": true }));
            } else {
                println!("{id} deleted");
            }
            Ok(())
        }
        SnapshotCmd::Restore { snapshot, zone, size, volume_type, wait } => {
            let new = NewVolume { size, zone, snapshot: Some(snapshot), volume_type, name: None };
            crate::volume::create_and_show(&api, new, wait).await
        }
        SnapshotCmd::Wait { snapshot } => {
            let id = snapshot_id(&snapshot)?;
            let client = api.client()?;
            let row = crate::watch::snapshot(&client, &id, api.json()).await?;
            if !api.json() {
                println!("{}", row.snapshot_id);
            }
            Ok(())
        }
    }
}

fn show_one(api: &ApiArgs, row: &SnapshotRow) -> anyhow::Result<()> {
    if api.json() {
        println!("{}", serde_json::to_string_pretty(row)?);
    } else {
        println!("{}", row.snapshot_id);
    }
    Ok(())
}

fn print_table(rows: &[SnapshotRow]) {
    let header = ["SNAPSHOT", "VOLUME", "STATE", "PROGRESS", "SIZE", "STARTED", "DESCRIPTION"];
    let mut t = crate::table::new(&header);
    for r in rows {
        let state = match &r.state_message {
            Some(m) if r.state == "error" => format!("error: {m}"),
            _ => r.state.clone(),
        };
        t.add_row(vec![
            r.snapshot_id.clone(),
            r.volume_id.clone(),
            state,
            format!("{}%", r.progress),
            format!("{} GiB", r.volume_size_gib),
            r.start_time.clone(),
            r.description.clone(),
        ]);
    }
    println!("{t}");
}
