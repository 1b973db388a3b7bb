//! A write workload for the metadata fault tests: many clients, each on its
//! own volume, run CreateSnapshot, CreateTags and DeleteTags through the
//! gateways with raw EC2 calls, and record every answer. Afterwards
//! [`verify`] checks the records against the answers: every call answered
//! 200 is present exactly once, a tag call is retried (like botocore does)
//! until it succeeds so the final tags are known, and every failure was a
//! retryable 503.

use crate::{http, xml_text, REGION};
use anyhow::{bail, Context};
use cairn_core::command::{Query, QueryOutput};
use cairn_core::VolumeId;
use cairn_proto::MetadataClient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The error codes a client may see while the metadata group fails over:
/// retried by AWS SDKs.
pub const RETRYABLE_CODES: [&str; 3] =
    ["RequestLimitExceeded", "Unavailable", "ServiceUnavailable"];

/// One call of one client.
#[derive(Clone, Debug)]
pub enum Op {
    /// CreateSnapshot with a description unique to the call.
    Snapshot {
        description: String,
    },
    Tag {
        key: String,
        value: String,
    },
    Untag {
        key: String,
    },
}

/// What a client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub volume: String,
    /// Calls answered 200, in order; snapshot calls with the id they got.
    pub succeeded: Vec<(Op, Option<String>)>,
    /// Snapshot calls answered with a retryable error (their outcome is unknown).
    pub failed_snapshots: Vec<String>,
    /// Every failed answer: status and AWS error code.
    pub failures: Vec<(u16, String)>,
}

/// Snapshots a client creates at most: under the volume's limit of 5 pending
/// ones even when no copy finishes meanwhile.
const MAX_SNAPSHOTS: usize = 3;

/// The op number `i` of a client: a snapshot every fourth call (the first
/// [`MAX_SNAPSHOTS`] times), tags otherwise.
fn op(client: usize, i: usize) -> Op {
    match i % 4 {
        0 if i / 4 < MAX_SNAPSHOTS => Op::Snapshot { description: format!("c{client}-op{i}") },
        3 => Op::Untag { key: format!("k{}", (i + 1) % 3) },
        _ => Op::Tag { key: format!("k{}", i % 3), value: format!("v{i}") },
    }
}

/// Creates one volume per client through `gateway`.
pub async fn create_volumes(gateway: SocketAddr, clients: usize) -> anyhow::Result<Vec<String>> {
    let mut vols = Vec::new();
    for _ in 0..clients {
        let form = [
            ("Action", "CreateVolume"),
            ("Version", "2016-11-15"),
            ("AvailabilityZone", "cairn-1a"),
            ("Size", "1"),
        ];
        let (status, body) = http::post_form(gateway, &form, REGION).await?;
        if status != 200 {
            bail!("CreateVolume answered {status}: {body}");
        }
        vols.push(xml_text(&body, "volumeId").context("no volumeId")?);
    }
    Ok(vols)
}

/// Runs client `client` against `gateways` (round robin per call) on `volume`:
/// `ops` calls, or until `stop` is set. `done` counts finished calls of all clients.
pub async fn run_client(
    gateways: Vec<SocketAddr>,
    client: usize,
    volume: String,
    ops: usize,
    stop: &AtomicBool,
    done: &AtomicUsize,
) -> anyhow::Result<ClientLog> {
    let mut log = ClientLog { volume: volume.clone(), ..ClientLog::default() };
    for i in 0..ops {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let op = op(client, i);
        let mut attempt = 0usize;
        loop {
            let gateway = gateways[(i + attempt) % gateways.len()];
            attempt += 1;
            let mut form: Vec<(&str, &str)> =
                vec![("Version", "2016-11-15"), ("ResourceId.1", &volume)];
            match &op {
                Op::Snapshot { description } => {
                    form = vec![
                        ("Action", "CreateSnapshot"),
                        ("Version", "2016-11-15"),
                        ("VolumeId", &volume),
                        ("Description", description),
                    ];
                }
                Op::Tag { key, value } => form.extend([
                    ("Action", "CreateTags"),
                    ("Tag.1.Key", key),
                    ("Tag.1.Value", value),
                ]),
                Op::Untag { key } => form.extend([("Action", "DeleteTags"), ("Tag.1.Key", key)]),
            }
            let (status, body) = match http::post_form(gateway, &form, REGION).await {
                Ok(r) => r,
                // A gateway that cannot be reached at all is not what these tests break.
                Err(e) => bail!("client {client}: gateway {gateway} unreachable: {e}"),
            };
            if status == 200 {
                let id = xml_text(&body, "snapshotId");
                log.succeeded.push((op.clone(), id));
                break;
            }
            let code = xml_text(&body, "Code").unwrap_or_default();
            log.failures.push((status, code));
            match &op {
                // No ClientToken on CreateSnapshot: a retry could create a
                // second snapshot, so an unanswered one is not retried.
                Op::Snapshot { description } => {
                    log.failed_snapshots.push(description.clone());
                    break;
                }
                _ if attempt < 100 => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => bail!("client {client}: {op:?} kept failing: {status} {body}"),
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(log)
}

/// What [`verify`] found, for the test's assertions and messages.
#[derive(Debug, Default)]
pub struct Verified {
    pub calls_ok: usize,
    pub failures: usize,
    pub snapshots: usize,
}

/// Checks the records against what the clients saw (see the module doc).
pub async fn verify(meta: &MetadataClient, logs: &[ClientLog]) -> anyhow::Result<Verified> {
    let mut v = Verified::default();
    let QueryOutput::Snapshots(all) = meta.read(&Query::Snapshots).await? else {
        bail!("unexpected answer to Snapshots");
    };
    let mut by_description: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &all {
        by_description.entry(s.description.as_str()).or_default().push(s.id.to_string());
    }
    for log in logs {
        for (status, code) in &log.failures {
            if *status != 503 || !RETRYABLE_CODES.contains(&code.as_str()) {
                bail!(
                    "volume {}: a call failed with {status} {code}, not a retryable 503",
                    log.volume
                );
            }
        }
        v.failures += log.failures.len();
        let mut tags = BTreeMap::new();
        for (op, id) in &log.succeeded {
            v.calls_ok += 1;
            match op {
                Op::Snapshot { description } => {
                    let found =
                        by_description.get(description.as_str()).cloned().unwrap_or_default();
                    if found.len() != 1 || Some(&found[0]) != id.as_ref() {
                        bail!(
                            "snapshot {description:?} answered {id:?} but the group has {found:?}"
                        );
                    }
                    v.snapshots += 1;
                }
                Op::Tag { key, value } => {
                    tags.insert(key.clone(), value.clone());
                }
                Op::Untag { key } => {
                    tags.remove(key);
                }
            }
        }
        for description in &log.failed_snapshots {
            let found = by_description.get(description.as_str()).map_or(0, Vec::len);
            if found > 1 {
                bail!("snapshot {description:?} was created {found} times");
            }
        }
        let id = VolumeId::parse(&log.volume).context("volume id")?;
        let QueryOutput::Volume(Some(vol)) = meta.read(&Query::Volume(id)).await? else {
            bail!("volume {} is gone", log.volume);
        };
        if vol.tags != tags {
            bail!("volume {} has tags {:?}, the clients last set {tags:?}", log.volume, vol.tags);
        }
    }
    Ok(v)
}
