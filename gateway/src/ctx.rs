//! What every handler and job shares: configuration, the metadata client, the
//! chunk node channels, the job set and the background workers; plus typed
//! reads of the records.

use crate::config::GatewayConfig;
use crate::gc_state::Gc;
use crate::nodes::{HostError, NodeClients};
use crate::repair_state::Repair;
use crate::tasks::Jobs;
use cairn_core::command::{Counts, NodeEntry, Page, Query, QueryOutput, SnapshotScan, VolumeScan};
use cairn_core::records::{
    ChunkNodeInfo, CopyJob, Hold, Holder, Snapshot, SnapshotSharing, Volume, VolumeModification,
};
use cairn_core::{SnapshotId, VolumeId};
use cairn_proto::{MetaClientError, MetadataClient};
use cairn_worker::Workers;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Ctx {
    pub config: GatewayConfig,
    pub meta: Arc<MetadataClient>,
    /// How requests are authenticated (both fronts share its key cache).
    pub auth: Arc<crate::http::auth::Authenticator>,
    pub nodes: NodeClients,
    /// One-off jobs (copies, seals, restores), each holding its claim.
    pub jobs: Jobs,
    /// The loops that run as long as the gateway (runner, sweeper, resume,
    /// garbage collector).
    pub workers: Workers,
    /// Garbage collection's requests and last outcome.
    pub gc: Gc,
    /// Re-replication's requests and last outcome.
    pub repair: Repair,
    /// What `/metrics` exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The live progress of the copies this gateway follows.
    pub live: crate::live::LiveCopies,
    /// The archive tier's store, when one is configured.
    pub archive: Option<Arc<crate::archive::handle::Archive>>,
}

/// A metadata answer of the wrong kind: a bug or version skew.
fn unexpected(what: &str) -> MetaClientError {
    MetaClientError::Decode(format!("unexpected metadata answer to {what}"))
}

impl Ctx {
    /// Asks the archive worker to look for work now.
    pub fn archive_wake(&self) {
        if let Some(a) = &self.archive {
            a.wake();
        }
    }

    /// This gateway's name in copy-job leases: the configured `gateway_id`,
    /// or a random one chosen at process start.
    pub fn gateway_id(&self) -> &str {
        if self.config.gateway_id.is_empty() {
            self.jobs.random_id()
        } else {
            &self.config.gateway_id
        }
    }

    /// This gateway's wall clock, in ms since the epoch (shifted by the
    /// test-only `clock_skew_ms`): the times it writes into leases. Nothing
    /// compares it with another gateway's.
    pub fn now_ms(&self) -> u64 {
        cairn_core::time::now_ms().saturating_add_signed(self.config.clock_skew_ms)
    }

    /// Every copy job (one per pending snapshot).
    pub async fn copy_jobs(&self) -> Result<Vec<CopyJob>, MetaClientError> {
        match self.meta.read(&Query::CopyJobs).await? {
            QueryOutput::CopyJobs(j) => Ok(j),
            _ => Err(unexpected("CopyJobs")),
        }
    }

    /// Every volume, read a page at a time (no answer near the message limit).
    pub async fn volumes(&self) -> Result<Vec<Volume>, MetaClientError> {
        self.volumes_where(VolumeScan::default()).await
    }

    /// One page of the volumes `scan` selects.
    pub async fn volume_page(
        &self,
        scan: VolumeScan,
    ) -> Result<Page<Volume, VolumeId>, MetaClientError> {
        match self.meta.read(&Query::VolumeScan(scan)).await? {
            QueryOutput::VolumePage(p) => Ok(p),
            _ => Err(unexpected("VolumePage")),
        }
    }

    /// Every volume `scan` selects, page by page.
    pub async fn volumes_where(&self, scan: VolumeScan) -> Result<Vec<Volume>, MetaClientError> {
        every_page(scan.after.clone(), |after| {
            self.volume_page(VolumeScan { after, ..scan.clone() })
        })
        .await
    }

    /// Volumes and snapshots by state.
    pub async fn counts(&self) -> Result<Counts, MetaClientError> {
        match self.meta.read(&Query::Counts).await? {
            QueryOutput::Counts(c) => Ok(c),
            _ => Err(unexpected("Counts")),
        }
    }

    /// Every volume's last modification.
    pub async fn modifications(&self) -> Result<Vec<VolumeModification>, MetaClientError> {
        match self.meta.read(&Query::VolumeModifications).await? {
            QueryOutput::VolumeModifications(m) => Ok(m),
            _ => Err(unexpected("VolumeModifications")),
        }
    }

    pub async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>, MetaClientError> {
        match self.meta.read(&Query::Volume(id.clone())).await? {
            QueryOutput::Volume(v) => Ok(v),
            _ => Err(unexpected("Volume")),
        }
    }

    /// Every snapshot, read a page at a time (no answer near the message
    /// limit). The pages are read one after another, so they do not show one
    /// instant: passes whose safety needs one (GC's mark) use
    /// [`Ctx::snapshots_at_once`].
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, MetaClientError> {
        self.snapshots_where(SnapshotScan::default()).await
    }

    /// Every snapshot as the leader's records stood at one instant, in one
    /// answer. Garbage collection's mark needs that: between two page reads a
    /// child could complete (releasing its hold on its parent's manifest) and
    /// its parent be deleted, and pages read on either side would show
    /// neither. One answer is bounded by the message limit (64 MiB, a few
    /// hundred thousand snapshots at their usual size).
    pub async fn snapshots_at_once(&self) -> Result<Vec<Snapshot>, MetaClientError> {
        match self.meta.read(&Query::Snapshots).await? {
            QueryOutput::Snapshots(s) => Ok(s),
            _ => Err(unexpected("Snapshots")),
        }
    }

    /// One page of the snapshots `scan` selects.
    pub async fn snapshot_page(
        &self,
        scan: SnapshotScan,
    ) -> Result<Page<Snapshot, SnapshotId>, MetaClientError> {
        match self.meta.read(&Query::SnapshotScan(scan)).await? {
            QueryOutput::SnapshotPage(p) => Ok(p),
            _ => Err(unexpected("SnapshotPage")),
        }
    }

    /// Every snapshot `scan` selects, page by page.
    pub async fn snapshots_where(
        &self,
        scan: SnapshotScan,
    ) -> Result<Vec<Snapshot>, MetaClientError> {
        every_page(scan.after.clone(), |after| {
            self.snapshot_page(SnapshotScan { after, ..scan.clone() })
        })
        .await
    }

    /// The tiering records of `ids` (those that have one), by snapshot.
    pub async fn tierings_of(
        &self,
        ids: Vec<SnapshotId>,
    ) -> Result<BTreeMap<SnapshotId, cairn_core::tiering::SnapshotTiering>, MetaClientError> {
        match self.meta.read(&Query::TieringsOf(ids)).await? {
            QueryOutput::Tierings(t) => {
                Ok(t.into_iter().map(|t| (t.snapshot_id.clone(), t)).collect())
            }
            _ => Err(unexpected("Tierings")),
        }
    }

    /// The sharing of `ids` (those shared with anyone), by snapshot.
    pub async fn sharings_of(
        &self,
        ids: Vec<SnapshotId>,
    ) -> Result<BTreeMap<SnapshotId, SnapshotSharing>, MetaClientError> {
        match self.meta.read(&Query::SharingsOf(ids)).await? {
            QueryOutput::Sharings(s) => {
                Ok(s.into_iter().map(|s| (s.snapshot_id.clone(), s)).collect())
            }
            _ => Err(unexpected("Sharings")),
        }
    }

    pub async fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>, MetaClientError> {
        match self.meta.read(&Query::Snapshot(id.clone())).await? {
            QueryOutput::Snapshot(s) => Ok(s),
            _ => Err(unexpected("Snapshot")),
        }
    }

    /// Who besides its owner may use snapshot `id` (`None`: nobody).
    pub async fn sharing(
        &self,
        id: &SnapshotId,
    ) -> Result<Option<SnapshotSharing>, MetaClientError> {
        match self.meta.read(&Query::Sharing(id.clone())).await? {
            QueryOutput::Sharing(s) => Ok(s),
            _ => Err(unexpected("Sharing")),
        }
    }

    /// Every shared snapshot's sharing, by snapshot id.
    /// Every snapshot's tiering record, by snapshot.
    pub async fn tierings(
        &self,
    ) -> Result<BTreeMap<SnapshotId, cairn_core::tiering::SnapshotTiering>, MetaClientError> {
        match self.meta.read(&Query::Tierings).await? {
            QueryOutput::Tierings(t) => {
                Ok(t.into_iter().map(|t| (t.snapshot_id.clone(), t)).collect())
            }
            _ => Err(unexpected("Tierings")),
        }
    }

    pub async fn sharings(&self) -> Result<BTreeMap<SnapshotId, SnapshotSharing>, MetaClientError> {
        match self.meta.read(&Query::Sharings).await? {
            QueryOutput::Sharings(s) => {
                Ok(s.into_iter().map(|s| (s.snapshot_id.clone(), s)).collect())
            }
            _ => Err(unexpected("Sharings")),
        }
    }

    /// What `holder` keeps from garbage collection, if anything.
    pub async fn hold(&self, holder: &Holder) -> Result<Option<Hold>, MetaClientError> {
        match self.meta.read(&Query::Hold(holder.clone())).await? {
            QueryOutput::Hold(h) => Ok(h),
            _ => Err(unexpected("Hold")),
        }
    }

    /// Every registered node with its state (up, draining, removed, down).
    pub async fn fleet(&self) -> Result<Vec<NodeEntry>, MetaClientError> {
        match self.meta.read(&Query::NodeStates).await? {
            QueryOutput::NodeStates(n) => Ok(n),
            _ => Err(unexpected("NodeStates")),
        }
    }

    /// The nodes placement may pick for new data: those that are up.
    pub async fn placement_nodes(&self) -> Result<Vec<ChunkNodeInfo>, MetaClientError> {
        Ok(self
            .fleet()
            .await?
            .into_iter()
            .filter(|e| e.state.takes_data())
            .map(|e| e.info)
            .collect())
    }

    /// The nodes reads may try: up or draining.
    pub async fn readable_nodes(&self) -> Result<Vec<ChunkNodeInfo>, MetaClientError> {
        Ok(self
            .fleet()
            .await?
            .into_iter()
            .filter(|e| e.state.serves_reads())
            .map(|e| e.info)
            .collect())
    }

    /// Every registered node, whatever its state (to find a volume's host).
    pub async fn node_list(&self) -> Result<Vec<ChunkNodeInfo>, MetaClientError> {
        match self.meta.read(&Query::Nodes).await? {
            QueryOutput::Nodes(n) => Ok(n),
            _ => Err(unexpected("Nodes")),
        }
    }

    /// The registered node named `node_id`.
    pub async fn node(
        &self,
        node_id: &str,
    ) -> Result<Result<ChunkNodeInfo, HostError>, MetaClientError> {
        let nodes = self.node_list().await?;
        Ok(nodes
            .into_iter()
            .find(|n| n.node_id == node_id)
            .ok_or_else(|| HostError::UnknownNode(node_id.to_string())))
    }
}

/// Every item of the pages `fetch` reads, from the one after `after`.
async fn every_page<T, K, Fut>(
    mut after: Option<K>,
    mut fetch: impl FnMut(Option<K>) -> Fut,
) -> Result<Vec<T>, MetaClientError>
where
    Fut: std::future::Future<Output = Result<Page<T, K>, MetaClientError>>,
{
    let mut out = Vec::new();
    loop {
        let page = fetch(after.take()).await?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}
