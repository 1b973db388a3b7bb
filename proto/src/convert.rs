//! Conversions between wire messages and domain types.

use crate::pb;
use cairn_core::placement::Candidate;
use cairn_core::records::ChunkNodeInfo;

impl From<&ChunkNodeInfo> for pb::StoreNode {
    fn from(n: &ChunkNodeInfo) -> Self {
        pb::StoreNode {
            node_id: n.node_id.clone(),
            az: n.az.clone(),
            grpc_addr: n.grpc_addr.clone(),
        }
    }
}

impl From<&pb::StoreNode> for Candidate {
    fn from(n: &pb::StoreNode) -> Self {
        Candidate { node_id: n.node_id.clone(), az: n.az.clone() }
    }
}
