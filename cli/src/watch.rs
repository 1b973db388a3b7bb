//! Following work to its end: a snapshot's copy (`cairn snapshot wait`,
//! `create --wait`) and a restored volume becoming available and local
//! (`restore --wait`). On a terminal a progress bar (percent, MiB/s, ETA,
//! and for a snapshot the bytes sent after deduplication); with `--output
//! json` one object per change, for scripts. The state comes from the EC2
//! API; the finer figures from the gateway's operator endpoints
//! (`/_cairn/snapshots/{id}/progress`, `/_cairn/volumes/{id}/hydration`),
//! which a watch does without when they do not answer.

use crate::ec2::records::{SnapshotRow, VolumeRow};
use crate::ec2::{param, Client};
use anyhow::{bail, Context};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(250);

/// A progress display: a bar on stderr, or JSON lines on stdout.
struct Meter {
    bar: Option<ProgressBar>,
    /// The first position seen and when: the rate is measured from it.
    first: Option<(Instant, u64)>,
    last: Option<Value>,
}

impl Meter {
    fn new(json: bool, prefix: &str) -> Self {
        let bar = (!json).then(|| {
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}% {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            let bar = ProgressBar::new(0).with_style(style).with_prefix(prefix.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Meter { bar, first: None, last: None }
    }

    /// Shows `pos` of `total` bytes; `fields` go into the JSON line.
    fn update(&mut self, pos: u64, total: u64, msg: String, mut fields: Value) {
        let now = Instant::now();
        let (t0, p0) = *self.first.get_or_insert((now, pos));
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(pos);
            bar.set_message(msg);
            return;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = if secs > 0.0 { (pos.saturating_sub(p0)) as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0).then(|| (total.saturating_sub(pos)) as f64 / rate);
        let percent = pos.saturating_mul(100).checked_div(total).unwrap_or(0);
        fields["percent"] = json!(percent);
        fields["bytes_per_second"] = json!(rate.round() as u64);
        fields["eta_seconds"] = json!(eta.map(|e| e.round() as u64));
        // One line per change (the rate alone changing is not news).
        let mut key = fields.clone();
        key["bytes_per_second"] = Value::Null;
        key["eta_seconds"] = Value::Null;
        if self.last.as_ref() != Some(&key) {
            println!("{fields}");
            self.last = Some(key);
        }
    }

    fn finish(&self, msg: String) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(msg);
        }
    }
}

/// The snapshot `id` as DescribeSnapshots shows it.
pub async fn describe_snapshot(client: &Client, id: &str) -> anyhow::Result<SnapshotRow> {
    let items =
        client.describe("DescribeSnapshots", &[param("SnapshotId.1", id)], "snapshotSet").await?;
    let item = items.first().with_context(|| format!("the snapshot {id} was not found"))?;
    Ok(SnapshotRow::from_xml(item))
}

/// The volume `id` as DescribeVolumes shows it.
pub async fn describe_volume(client: &Client, id: &str) -> anyhow::Result<VolumeRow> {
    let items = client.describe("DescribeVolumes", &[param("VolumeId.1", id)], "volumeSet").await?;
    let item = items.first().with_context(|| format!("the volume {id} was not found"))?;
    Ok(VolumeRow::from_xml(item))
}

/// Waits until the snapshot `id` is completed (Ok) or in error (Err with
/// its message), showing its progress.
pub async fn snapshot(client: &Client, id: &str, json: bool) -> anyhow::Result<SnapshotRow> {
    let mut meter = Meter::new(json, id);
    let started = Instant::now();
    loop {
        let row = describe_snapshot(client, id).await?;
        let live = client.operator(&format!("/_cairn/snapshots/{id}/progress")).await.ok();
        let live = live.as_ref().map(|l| &l["live"]).filter(|l| l.is_object());
        let total = row.volume_size_gib << 30;
        let live_percent = live.and_then(|l| l["percent"].as_u64()).unwrap_or(0).min(99);
        let percent = match row.state.as_str() {
            "completed" => 100,
            _ => u64::from(row.progress).max(live_percent),
        };
        let sent = live.and_then(|l| l["bytes_sent"].as_u64());
        let read = live.and_then(|l| l["bytes_read"].as_u64());
        let msg = match sent {
            Some(s) => format!("{} sent after dedup", HumanBytes(s)),
            None => row.state.clone(),
        };
        let fields = json!({
            "snapshot_id": id, "state": row.state, "bytes_read": read, "bytes_sent": sent,
        });
        meter.update(percent * total / 100, total, msg, fields);
        match row.state.as_str() {
            "completed" => {
                let took = started.elapsed().as_secs_f64();
                let sent = sent.map(|s| format!(", {} sent after dedup", HumanBytes(s)));
                meter.finish(format!("completed in {took:.1} s{}", sent.unwrap_or_default()));
                return Ok(row);
            }
            "error" => {
                meter.finish("error".into());
                bail!(
                    "the snapshot {id} failed: {}",
                    row.state_message.as_deref().unwrap_or("no reason given")
                );
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until the volume `id` is available, then until its host holds all
/// of it (a volume restored from a snapshot fills in the background).
pub async fn volume(client: &Client, id: &str, json: bool) -> anyhow::Result<VolumeRow> {
    let mut meter = Meter::new(json, id);
    let row = loop {
        let row = describe_volume(client, id).await?;
        let total = row.size_gib << 30;
        let fields = json!({"volume_id": id, "state": row.state, "hydrated_bytes": 0});
        meter.update(0, total, row.state.clone(), fields);
        match row.state.as_str() {
            "available" | "in-use" => break row,
            "creating" => tokio::time::sleep(POLL).await,
            other => bail!("the volume {id} is {other}, not becoming available"),
        }
    };
    loop {
        let h = match client.operator(&format!("/_cairn/volumes/{id}/hydration")).await {
            Ok(h) => h,
            Err(e) => {
                meter.finish("available".into());
                eprintln!("cairn: {id} is available; its hydration cannot be followed: {e:#}");
                return Ok(row);
            }
        };
        let total = h["total_bytes"].as_u64().unwrap_or(0);
        let hydrated = h["hydrated_bytes"].as_u64().unwrap_or(0);
        let fields = json!({"volume_id": id, "state": h["state"], "hydrated_bytes": hydrated});
        meter.update(hydrated, total, "hydrated".into(), fields);
        if h["done"].as_bool() == Some(true) {
            meter.finish(format!("available, {} local", HumanBytes(total)));
            return Ok(row);
        }
        tokio::time::sleep(POLL).await;
    }
}
