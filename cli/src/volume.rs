//! `cairn volume create|list|delete|attach`: EC2 volumes through the
//! gateway's EC2 API, signed like any AWS client.

use crate::ec2::records::{size_gib, snapshot_id, volume_id, VolumeRow};
use crate::ec2::{param, ApiArgs, Client};
use anyhow::{bail, Context};

#[derive(clap::Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume: empty (--size), or from a snapshot (--snapshot).
    Create {
        /// Size in GiB (default: the snapshot's size, when from a snapshot).
        #[arg(long)]
        size: Option<u64>,
        /// Availability zone (default: the cluster's first zone).
        #[arg(long)]
        zone: Option<String>,
        /// A snapshot to restore (the volume fills in the background).
        #[arg(long)]
        snapshot: Option<String>,
        /// gp2, gp3, io1, io2, st1, sc1 or standard.
        #[arg(long, default_value = "gp3")]
        volume_type: String,
        /// A Name tag.
        #[arg(long)]
        name: Option<String>,
        /// Wait until it is available (and, from a snapshot, all local).
        #[arg(long)]
        wait: bool,
    },
    /// List volumes (all, or the ids given).
    List { ids: Vec<String> },
    /// Delete a volume.
    Delete { volume: String },
    /// Print the NBD URL of a volume and the commands that use it.
    Attach {
        volume: String,
        /// The NBD front door (host:port); default $CAIRN_NBD, else the cluster's.
        #[arg(long)]
        nbd: Option<String>,
    },
}

/// What CreateVolume is asked for.
pub struct NewVolume {
    pub size: Option<u64>,
    pub zone: Option<String>,
    pub snapshot: Option<String>,
    pub volume_type: String,
    pub name: Option<String>,
}

pub async fn run(cmd: VolumeCmd, api: ApiArgs) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create { size, zone, snapshot, volume_type, name, wait } => {
            let new = NewVolume { size, zone, snapshot, volume_type, name };
            create_and_show(&api, new, wait).await
        }
        VolumeCmd::List { ids } => {
            let ids: Vec<String> = ids.iter().map(|i| volume_id(i)).collect::<Result<_, _>>()?;
            let client = api.client()?;
            let params: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| param(&format!("VolumeId.{}", i + 1), id))
                .collect();
            let items = client.describe("DescribeVolumes", &params, "volumeSet").await?;
            let rows: Vec<VolumeRow> = items.iter().map(VolumeRow::from_xml).collect();
            if api.json() {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
            Ok(())
        }
        VolumeCmd::Delete { volume } => {
            let id = volume_id(&volume)?;
            api.client()?.call("DeleteVolume", &[param("VolumeId", &id)]).await?;
            if api.json() {
                println!("{}", serde_json::json!({ "volume_id": id, "deleted": true }));
            } else {
                println!("{id} deleted");
            }
            Ok(())
        }
        VolumeCmd::Attach { volume, nbd } => attach(&api, &volume, nbd).await,
    }
}

/// Creates the volume, prints it, and with `wait` follows it to available.
pub async fn create_and_show(api: &ApiArgs, new: NewVolume, wait: bool) -> anyhow::Result<()> {
    let client = api.client()?;
    let row = create(&client, new).await?;
    if wait {
        if !api.json() {
            eprintln!("{} created in {}", row.volume_id, row.availability_zone);
        }
        let row = crate::watch::volume(&client, &row.volume_id, api.json()).await?;
        if !api.json() {
            println!("{}", row.volume_id);
        }
    } else if api.json() {
        println!("{}", serde_json::to_string_pretty(&row)?);
    } else {
        println!("{}", row.volume_id);
    }
    Ok(())
}

/// CreateVolume, after checking what can be checked here.
pub async fn create(client: &Client, new: NewVolume) -> anyhow::Result<VolumeRow> {
    let mut params = Vec::new();
    match (&new.snapshot, new.size) {
        (None, None) => {
            bail!("say how large the volume is (--size GiB) or which snapshot it restores")
        }
        (Some(s), _) => params.push(param("SnapshotId", snapshot_id(s)?)),
        _ => {}
    }
    if let Some(size) = new.size {
        params.push(param("Size", size_gib(size)?));
    }
    let zone = match new.zone {
        Some(z) => z,
        None => first_zone(client)?,
    };
    params.push(param("AvailabilityZone", zone));
    params.push(param("VolumeType", new.volume_type));
    if let Some(name) = new.name {
        params.push(param("TagSpecification.1.ResourceType", "volume"));
        params.push(param("TagSpecification.1.Tag.1.Key", "Name"));
        params.push(param("TagSpecification.1.Tag.1.Value", name));
    }
    let root = client.call("CreateVolume", &params).await?;
    Ok(VolumeRow::from_xml(&root))
}

fn first_zone(client: &Client) -> anyhow::Result<String> {
    client
        .zones
        .as_deref()
        .and_then(|z| z.split(',').map(str::trim).find(|z| !z.is_empty()))
        .map(str::to_string)
        .context("say which availability zone (--zone): the cluster's zones are not known here")
}

async fn attach(api: &ApiArgs, volume: &str, nbd: Option<String>) -> anyhow::Result<()> {
    let id = volume_id(volume)?;
    let client = api.client()?;
    let row = crate::watch::describe_volume(&client, &id).await?;
    if !matches!(row.state.as_str(), "available" | "in-use") {
        bail!("the volume {id} is {}; it can be attached once it is available", row.state);
    }
    let nbd = nbd
        .or(client.nbd.clone())
        .context("the NBD front door is not known here: pass --nbd host:port or set CAIRN_NBD")?;
    let (host, port) = nbd.rsplit_once(':').context("--nbd is host:port")?;
    let url = format!("nbd://{nbd}/{id}");
    let qemu = format!("qemu-img info -f raw {url}");
    let nbd_client = format!("sudo nbd-client {host} {port} /dev/nbd0 -N {id}");
    if api.json() {
        let body = serde_json::json!({"volume_id": id, "nbd_url": url, "qemu_img": qemu, "nbd_client": nbd_client});
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!("{url}");
        println!("  {qemu}");
        println!("  {nbd_client}");
    }
    Ok(())
}

fn print_table(rows: &[VolumeRow]) {
    let mut t = crate::table::new(&[
        "VOLUME", "NAME", "ZONE", "SIZE", "STATE", "TYPE", "SNAPSHOT", "CREATED",
    ]);
    for r in rows {
        t.add_row(vec![
            r.volume_id.clone(),
            r.name.clone().unwrap_or_default(),
            r.availability_zone.clone(),
            format!("{} GiB", r.size_gib),
            r.state.clone(),
            r.volume_type.clone(),
            r.snapshot_id.clone().unwrap_or_default(),
            r.create_time.clone(),
        ]);
    }
    println!("{t}");
}
