//! The staging logs of pending EBS-direct snapshots: the block map a
//! snapshot's puts build, kept on the RF regional nodes placement picks for
//! the snapshot id (never in Raft), through the chunk nodes' staging service.

use super::blockmap::{Batches, StagedBlocks};
use super::chunks::{Region, CALL_SECS};
use super::error::EbsError;
use crate::nodes::{call, HostError};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::ChunkId;
use cairn_proto::pb;
use cairn_proto::pb::snapshot_staging_client::SnapshotStagingClient;
use cairn_proto::tls::ClusterTls;
use cairn_proto::Channel;
use cairn_proto::{ChunkChannels, MAX_MESSAGE_BYTES};
use futures::future::join_all;
use futures::StreamExt;
use std::time::Duration;

/// How long a replica may sort its log before the first batch of its block
/// map: a fully written 16 TiB volume's log is 2.9 GiB to read, sort in runs
/// and merge.
const FIRST_BATCH_SECS: u64 = 600;

/// The placement key of a snapshot's staging log.
pub fn staging_key(snapshot: &str) -> ChunkId {
    ChunkId::of(format!("ebs-staging/{snapshot}").as_bytes())
}

/// gRPC channels to the staging service, one per node address. (The shared
/// `NodeClients` only hands out chunk-store and volume-host clients.)
#[derive(Default)]
pub struct StagingClients {
    channels: ChunkChannels,
}

impl StagingClients {
    /// Channels over mutual TLS with `tls` (`None`: clear text).
    pub fn new(tls: Option<ClusterTls>) -> Self {
        StagingClients { channels: ChunkChannels::new(tls) }
    }

    fn client(&self, node: &ChunkNodeInfo) -> Result<SnapshotStagingClient<Channel>, HostError> {
        let ch = self.channels.get(&node.grpc_addr)?;
        Ok(SnapshotStagingClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Appends `entries` to the snapshot's log on every staging replica; done
    /// (durable at RF) when all have them. A log that already holds COMPLETE
    /// refuses blocks: that is `Ok(false)`.
    pub async fn append(
        &self,
        region: &Region,
        snapshot: &str,
        entries: Vec<pb::StagingEntry>,
    ) -> Result<bool, EbsError> {
        let key = staging_key(snapshot);
        let appends = region.replicas(&key).into_iter().map(|node| {
            let req = pb::StagingAppendRequest {
                snapshot_id: snapshot.to_string(),
                entries: entries.clone(),
            };
            async move {
                let mut c = self.client(node)?;
                call(&node.node_id, CALL_SECS, c.append(req)).await.map(|_| ())
            }
        });
        let mut open = true;
        for r in join_all(appends).await {
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => open = false,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(open)
    }

    /// The merged summary of the snapshot's logs on the replicas that answer.
    pub async fn stat(
        &self,
        region: &Region,
        snapshot: &str,
    ) -> Result<pb::StagingStatReply, EbsError> {
        let key = staging_key(snapshot);
        let stats = region.replicas(&key).into_iter().map(|node| async move {
            let mut c = self.client(node)?;
            let req = pb::StagingStatRequest { snapshot_id: snapshot.to_string() };
            call(&node.node_id, CALL_SECS, c.stat(req)).await
        });
        let mut out = pb::StagingStatReply::default();
        let mut answered = 0;
        let mut last_err = None;
        for r in join_all(stats).await {
            match r {
                Ok(s) => {
                    answered += 1;
                    if !s.exists {
                        continue;
                    }
                    out.exists = true;
                    out.completed |= s.completed;
                    out.changed_blocks_count = out.changed_blocks_count.max(s.changed_blocks_count);
                    out.timeout_minutes = out.timeout_minutes.max(s.timeout_minutes);
                    out.opened_ms = if out.opened_ms == 0 {
                        s.opened_ms
                    } else {
                        out.opened_ms.min(s.opened_ms.max(1))
                    };
                    out.last_activity_ms = out.last_activity_ms.max(s.last_activity_ms);
                    out.entries = out.entries.max(s.entries);
                }
                Err(e) => last_err = Some(e),
            }
        }
        match (answered, last_err) {
            (0, Some(e)) => Err(e.into()),
            _ => Ok(out),
        }
    }

    /// The staged block map: the replicas' maps merged as they stream
    /// (`blockmap.rs`), the latest write of each block winning.
    pub async fn block_map(
        &self,
        region: &Region,
        snapshot: &str,
    ) -> Result<StagedBlocks, EbsError> {
        let key = staging_key(snapshot);
        let opens = region.replicas(&key).into_iter().map(|node| async move {
            let mut c = self.client(node)?;
            let req = pb::StagingBlockMapRequest { snapshot_id: snapshot.to_string() };
            let stream = call(&node.node_id, CALL_SECS, c.block_map(req)).await?;
            Ok::<_, HostError>((node.node_id.clone(), batches(node.node_id.clone(), stream)))
        });
        let mut sources = Vec::new();
        let mut failure = None;
        for r in join_all(opens).await {
            match r {
                Ok(s) => sources.push(s),
                Err(e) => failure = Some(e.into()),
            }
        }
        StagedBlocks::start(sources, failure).await
    }

    /// Deletes the snapshot's logs (best effort: a leftover log is garbage,
    /// never read again once the snapshot left `pending`).
    pub async fn remove(&self, region: &Region, snapshot: &str) {
        let key = staging_key(snapshot);
        for node in region.replicas(&key) {
            let r = match self.client(node) {
                Ok(mut c) => {
                    let req = pb::StagingRemoveRequest { snapshot_id: snapshot.to_string() };
                    call(&node.node_id, CALL_SECS, c.remove(req)).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::warn!(snapshot, node = %node.node_id, error = %e, "staging log not removed");
            }
        }
    }
}

/// A replica's map stream as batches, ending after the reply marked `last`
/// (a stream that ends without it is an error). The node sorts the whole log
/// before its first batch, so that one may take [`FIRST_BATCH_SECS`]; each
/// later one [`CALL_SECS`].
fn batches(node: String, stream: tonic::Streaming<pb::StagingBlockMapReply>) -> Batches {
    futures::stream::unfold(Some((stream, FIRST_BATCH_SECS)), move |state| {
        let node = node.clone();
        async move {
            let (mut stream, secs) = state?;
            let read = match tokio::time::timeout(Duration::from_secs(secs), stream.message()).await
            {
                Err(_) => Err(HostError::Timeout { node, secs }),
                Ok(Err(s)) => Err(HostError::rpc(&node, s)),
                // A map sent whole ends with its `last` reply: this one was
                // cut short (the node stopped or gave up on a slow reader).
                Ok(Ok(None)) => Err(HostError::Interrupted(format!(
                    "{node}: the staged block map ended before its last batch"
                ))),
                Ok(Ok(Some(m))) if m.last => return Some((Ok(m.entries), None)),
                Ok(Ok(Some(m))) => Ok(m.entries),
            };
            match read {
                Ok(entries) => Some((Ok(entries), Some((stream, CALL_SECS)))),
                // The stream ends after its error.
                Err(e) => Some((Err(e.into()), None)),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_placement_is_per_snapshot_and_spread() {
        let nodes: Vec<ChunkNodeInfo> = ["a1", "a2", "b1", "b2"]
            .iter()
            .map(|n| ChunkNodeInfo {
                node_id: n.to_string(),
                az: format!("cairn-1{}", &n[..1]),
                outpost: None,
                grpc_addr: format!("http://{n}:1"),
                nbd_addr: String::new(),
            })
            .collect();
        let region = Region { nodes, also_read: Vec::new(), rf: 3 };
        let r = region.replicas(&staging_key("snap-0123456789abcdef0"));
        assert_eq!(r.len(), 3);
        let azs: std::collections::BTreeSet<&str> = r.iter().map(|n| n.az.as_str()).collect();
        assert_eq!(azs.len(), 2, "replicas span both AZs");
        assert_eq!(region.search_order(&staging_key("x")).len(), 4);
    }
}
