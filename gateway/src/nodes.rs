//! The chunk nodes as the gateway sees them: which nodes a snapshot or a
//! volume lives on (pure functions, table-tested), and cached gRPC channels to
//! their `VolumeHost` and `ChunkStore` services.

use cairn_core::placement::{place, Candidate};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::{ChunkId, OutpostId, VolumeId};
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_proto::pb::volume_host_client::VolumeHostClient;
use cairn_proto::tls::ClusterTls;
use cairn_proto::Channel;
use cairn_proto::{BadAddress, ChunkChannels, MAX_MESSAGE_BYTES};
use std::time::Duration;
use tonic::Code;

/// The nodes that store snapshots of a destination: the region's nodes (no
/// Outpost) for a regional snapshot, that Outpost's nodes for a local one.
/// Sorted by node id, so requests built from them are deterministic.
pub fn destination_nodes(
    nodes: &[ChunkNodeInfo],
    outpost: Option<&OutpostId>,
) -> Vec<ChunkNodeInfo> {
    let mut out: Vec<ChunkNodeInfo> =
        nodes.iter().filter(|n| n.outpost.as_ref() == outpost).cloned().collect();
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    out
}

/// The node that hosts a new volume: one of the nodes of its AZ (and of its
/// Outpost, or of no Outpost), chosen by rendezvous hashing on the volume id
/// so that the choice is deterministic and spreads volumes evenly.
pub fn choose_host(
    nodes: &[ChunkNodeInfo],
    az: &str,
    outpost: Option<&OutpostId>,
    volume: &VolumeId,
) -> Option<ChunkNodeInfo> {
    let eligible: Vec<&ChunkNodeInfo> =
        nodes.iter().filter(|n| n.az == az && n.outpost.as_ref() == outpost).collect();
    let candidates: Vec<Candidate> = eligible
        .iter()
        .map(|n| Candidate { node_id: n.node_id.clone(), az: n.az.clone() })
        .collect();
    let key = ChunkId::of(volume.as_str().as_bytes());
    let first = *place(&key, &candidates, 1).first()?;
    eligible.get(first).map(|n| (*n).clone())
}

/// Why a call to a chunk node failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("chunk node {0} is not registered")]
    UnknownNode(String),
    #[error("chunk node address {addr} is invalid: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("{node}: {status}")]
    Rpc { node: String, status: Box<tonic::Status> },
    #[error("{node}: no answer within {secs}s")]
    Timeout { node: String, secs: u64 },
    #[error("{0}")]
    Protocol(String),
    /// A stream stopped early (the node restarted, the connection dropped).
    #[error("{0}")]
    Interrupted(String),
    #[error("metadata: {0}")]
    Metadata(#[from] cairn_proto::MetaClientError),
}

impl From<BadAddress> for HostError {
    fn from(e: BadAddress) -> Self {
        HostError::BadAddress { addr: e.addr, reason: e.reason }
    }
}

impl HostError {
    pub fn rpc(node: &str, status: tonic::Status) -> Self {
        HostError::Rpc { node: node.to_string(), status: Box::new(status) }
    }

    /// True when trying again later may succeed (node down, overloaded, restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            HostError::Timeout { .. } | HostError::Interrupted(_) => true,
            HostError::Metadata(e) => matches!(e, cairn_proto::MetaClientError::Unavailable(_)),
            HostError::Rpc { status, .. } => matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::ResourceExhausted
                    | Code::Unknown
                    | Code::Cancelled
            ),
            HostError::UnknownNode(_) | HostError::BadAddress { .. } | HostError::Protocol(_) => {
                false
            }
        }
    }

    /// True when the volume host refused a copy because a newer job epoch
    /// called it for the snapshot: another gateway holds the job now.
    pub fn is_superseded(&self) -> bool {
        matches!(self, HostError::Rpc { status, .. }
            if status.code() == Code::FailedPrecondition
                && status.message().starts_with("superseded by epoch"))
    }

    /// True when the volume host answered that it does not hold the volume
    /// at all (`volume ... does not exist`): its disk was lost or replaced.
    pub fn is_volume_gone(&self) -> bool {
        matches!(self, HostError::Rpc { status, .. }
            if status.code() == Code::NotFound
                && status.message().starts_with("volume ")
                && status.message().ends_with(" does not exist"))
    }

    /// The gRPC code, when the node answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            HostError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Lazily connected channels, one per chunk node address.
#[derive(Default)]
pub struct NodeClients {
    channels: ChunkChannels,
}

impl NodeClients {
    /// Channels over mutual TLS with `tls` (`None`: clear text).
    pub fn new(tls: Option<ClusterTls>) -> Self {
        NodeClients { channels: ChunkChannels::new(tls) }
    }

    /// The TLS these channels use.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.channels.tls()
    }

    fn channel(&self, addr: &str) -> Result<Channel, HostError> {
        Ok(self.channels.get(addr)?)
    }

    pub fn volume_host(
        &self,
        node: &ChunkNodeInfo,
    ) -> Result<VolumeHostClient<Channel>, HostError> {
        Ok(VolumeHostClient::new(self.channel(&node.grpc_addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn chunk_store(
        &self,
        node: &ChunkNodeInfo,
    ) -> Result<ChunkStoreClient<Channel>, HostError> {
        Ok(ChunkStoreClient::new(self.channel(&node.grpc_addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Runs one unary call with a deadline, mapping failures to [`HostError`].
pub async fn call<T>(
    node: &str,
    secs: u64,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, HostError> {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(HostError::rpc(node, status)),
        Err(_) => Err(HostError::Timeout { node: node.to_string(), secs }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn node(id: &str, az: &str, outpost: Option<&OutpostId>) -> ChunkNodeInfo {
        ChunkNodeInfo {
            node_id: id.into(),
            az: az.into(),
            outpost: outpost.cloned(),
            grpc_addr: format!("http://{id}:1"),
            nbd_addr: format!("{id}:2"),
        }
    }

    #[test]
    fn a_host_without_the_volume_is_told_from_one_without_the_freeze() {
        let gone = HostError::rpc("n1", tonic::Status::not_found("volume vol-1 does not exist"));
        let not_frozen = HostError::rpc(
            "n1",
            tonic::Status::not_found("snapshot snap-1 is not frozen on this node"),
        );
        assert!(gone.is_volume_gone());
        assert!(!not_frozen.is_volume_gone());
        assert_eq!(not_frozen.code(), Some(Code::NotFound));
    }

    #[test]
    fn destinations() {
        let op = OutpostId::parse("op-0123456789abcdef0").unwrap();
        let nodes = vec![
            node("b1", "cairn-1b", None),
            node("a1", "cairn-1a", None),
            node("o1", "cairn-1a", Some(&op)),
        ];
        let ids = |v: Vec<ChunkNodeInfo>| v.into_iter().map(|n| n.node_id).collect::<Vec<_>>();
        assert_eq!(ids(destination_nodes(&nodes, None)), ["a1", "b1"]);
        assert_eq!(ids(destination_nodes(&nodes, Some(&op))), ["o1"]);
        let other = OutpostId::parse("op-0123456789abcdef1").unwrap();
        assert!(destination_nodes(&nodes, Some(&other)).is_empty());
    }

    #[test]
    fn host_choice_is_zonal_and_deterministic() {
        let op = OutpostId::parse("op-0123456789abcdef0").unwrap();
        let nodes = vec![
            node("a1", "cairn-1a", None),
            node("a2", "cairn-1a", None),
            node("b1", "cairn-1b", None),
            node("o1", "cairn-1a", Some(&op)),
        ];
        let mut counts = HashMap::new();
        for _ in 0..200 {
            let v = VolumeId::generate();
            let h = choose_host(&nodes, "cairn-1a", None, &v).unwrap();
            assert!(h.node_id == "a1" || h.node_id == "a2");
            let mut rev = nodes.clone();
            rev.reverse();
            assert_eq!(choose_host(&rev, "cairn-1a", None, &v).unwrap().node_id, h.node_id);
            *counts.entry(h.node_id).or_insert(0) += 1;
            let o = choose_host(&nodes, "cairn-1a", Some(&op), &v).unwrap();
            assert_eq!(o.node_id, "o1");
        }
        assert_eq!(counts.len(), 2, "both nodes get volumes: {counts:?}");
        let v = VolumeId::generate();
        assert!(choose_host(&nodes, "cairn-1c", None, &v).is_none());
        assert!(choose_host(&nodes, "cairn-1b", Some(&op), &v).is_none());
    }

    #[test]
    fn transient_classification() {
        let t = |c: Code| HostError::rpc("n", tonic::Status::new(c, "x")).is_transient();
        assert!(t(Code::Unavailable));
        assert!(t(Code::DeadlineExceeded));
        assert!(!t(Code::FailedPrecondition));
        assert!(!t(Code::NotFound));
        assert!(!t(Code::InvalidArgument));
        assert!(HostError::Timeout { node: "n".into(), secs: 1 }.is_transient());
        assert!(!HostError::UnknownNode("n".into()).is_transient());
    }
}
