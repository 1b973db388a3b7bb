//! The staging logs of pending EBS-direct snapshots: the block map a
//! snapshot's puts build, kept on the RF regional nodes placement picks for
//! the snapshot id (never in Raft), through the chunk nodes' staging service.

use super::chunks::{Region, CALL_SECS};
use super::error::EbsError;
use crate::nodes::{call, HostError};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::ChunkId;
use cairn_proto::pb::snapshot_staging_client::SnapshotStagingClient;
use cairn_proto::pb::{self, StagingKind};
use cairn_proto::tls::ClusterTls;
use cairn_proto::Channel;
use cairn_proto::{ChunkChannels, MAX_MESSAGE_BYTES};
use futures::future::join_all;
use std::collections::BTreeMap;
use std::time::Duration;

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

    /// The staged block map: the union of the replicas' logs, the latest
    /// write of each block winning (by acceptance time, then log order).
    /// Every acknowledged write is on every replica, so any one answering
    /// replica has them all; the union covers replicas that missed
    /// unacknowledged ones.
    pub async fn block_map(
        &self,
        region: &Region,
        snapshot: &str,
    ) -> Result<BTreeMap<u64, Staged>, EbsError> {
        let key = staging_key(snapshot);
        let reads = region.replicas(&key).into_iter().map(|node| async move {
            let mut c = self.client(node)?;
            let req = pb::StagingEntriesRequest { snapshot_id: snapshot.to_string() };
            let mut stream = call(&node.node_id, CALL_SECS, c.entries(req)).await?;
            let mut all = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(CALL_SECS), stream.message()).await {
                    Err(_) => {
                        return Err(HostError::Timeout {
                            node: node.node_id.clone(),
                            secs: CALL_SECS,
                        })
                    }
                    Ok(Err(s)) => return Err(HostError::rpc(&node.node_id, s)),
                    Ok(Ok(None)) => return Ok(all),
                    Ok(Ok(Some(m))) => all.extend(m.entries),
                }
            }
        });
        let mut logs = Vec::new();
        let mut last_err = None;
        for r in join_all(reads).await {
            match r {
                Ok(l) => logs.push(l),
                Err(e) => last_err = Some(e),
            }
        }
        if logs.is_empty() {
            return Err(match last_err {
                Some(e) => e.into(),
                None => EbsError::Internal("no staging replica".into()),
            });
        }
        merge_logs(&logs)
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

/// One staged block: its chunk (`None`: all zero) and the SHA-256 the
/// client sent for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    pub chunk: Option<ChunkId>,
    pub sha256: [u8; 32],
    at_ms: u64,
}

/// Merges staging logs (see [`StagingClients::block_map`]).
pub fn merge_logs(logs: &[Vec<pb::StagingEntry>]) -> Result<BTreeMap<u64, Staged>, EbsError> {
    let mut map: BTreeMap<u64, Staged> = BTreeMap::new();
    for log in logs {
        for e in log {
            let chunk = match StagingKind::try_from(e.kind) {
                Ok(StagingKind::Block) => {
                    Some(ChunkId::from_slice(&e.chunk_id).ok_or_else(|| {
                        EbsError::Internal(format!(
                            "staging entry of block {} has a bad chunk id",
                            e.block_index
                        ))
                    })?)
                }
                Ok(StagingKind::Zero) => None,
                _ => continue,
            };
            let sha256: [u8; 32] = e.sha256.as_slice().try_into().map_err(|_| {
                EbsError::Internal(format!(
                    "staging entry of block {} has a bad checksum",
                    e.block_index
                ))
            })?;
            let staged = Staged { chunk, sha256, at_ms: e.at_ms };
            match map.get(&e.block_index) {
                Some(prev) if prev.at_ms > e.at_ms => {}
                _ => {
                    map.insert(e.block_index, staged);
                }
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: StagingKind, idx: u64, fill: u8, at: u64) -> pb::StagingEntry {
        pb::StagingEntry {
            kind: kind as i32,
            block_index: idx,
            chunk_id: if kind == StagingKind::Block { vec![fill; 32] } else { Vec::new() },
            sha256: vec![fill; 32],
            at_ms: at,
            value: 0,
        }
    }

    #[test]
    fn union_last_write_wins() {
        let open =
            pb::StagingEntry { kind: StagingKind::Open as i32, value: 60, ..Default::default() };
        let a = vec![
            open.clone(),
            entry(StagingKind::Block, 1, 1, 10),
            entry(StagingKind::Block, 2, 2, 10),
            entry(StagingKind::Zero, 2, 3, 20),
        ];
        // A replica that missed the zero write and saw a later rewrite of 1.
        let b =
            vec![open, entry(StagingKind::Block, 1, 9, 30), entry(StagingKind::Block, 2, 2, 10)];
        let m = merge_logs(&[a, b]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&1].chunk, Some(ChunkId([9; 32])));
        assert_eq!(m[&2].chunk, None);
        assert_eq!(m[&2].sha256, [3; 32]);
        let bad = vec![pb::StagingEntry {
            kind: StagingKind::Block as i32,
            chunk_id: vec![1; 3],
            ..Default::default()
        }];
        assert!(merge_logs(&[bad]).is_err());
    }

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
