//! The gRPC client of one remote chunk store, which verifies every chunk it
//! receives, and the placement candidates and replication factor requests
//! name.

use crate::error::ChunkNodeError;
use bytes::Bytes;
use cairn_core::placement::Candidate;
use cairn_core::ChunkId;
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_proto::pb::{GetChunkRequest, HasChunksRequest, PutChunkRequest, StoreNode};
use cairn_proto::tls::ClusterTls;
use cairn_proto::Channel;
use cairn_proto::{chunk_node_channel, MAX_MESSAGE_BYTES};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;
use tonic::Code;

/// Default replication factor when a request leaves it at 0.
pub const DEFAULT_RF: usize = 3;
/// How long one call to a peer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One remote chunk store.
#[derive(Clone)]
pub struct Peer {
    pub node: StoreNode,
    client: ChunkStoreClient<Channel>,
}

/// The replication factor a request asks for (0 means the default).
pub fn replication_factor(rf: u32) -> usize {
    if rf == 0 {
        DEFAULT_RF
    } else {
        rf as usize
    }
}

/// The TLS this process's chunk node talks to its peers with. A process runs
/// one chunk node with one certificate (in-process test clusters run none),
/// so it is set once at start rather than carried through every copy,
/// restore, hydration and repair that opens peer channels.
static PEER_TLS: RwLock<Option<ClusterTls>> = RwLock::new(None);

/// Peers are reached over mutual TLS with `tls` from now on.
pub fn use_tls(tls: Option<ClusterTls>) {
    *PEER_TLS.write().unwrap_or_else(PoisonError::into_inner) = tls;
}

/// Lazily connected clients for `nodes`, in the same order.
pub fn connect(nodes: &[StoreNode]) -> Result<Vec<Peer>, ChunkNodeError> {
    let tls = PEER_TLS.read().unwrap_or_else(PoisonError::into_inner).clone();
    nodes
        .iter()
        .map(|n| {
            let ch = chunk_node_channel(&n.grpc_addr, Some(CALL_TIMEOUT), tls.as_ref())
                .map_err(|e| ChunkNodeError::BadAddress { addr: e.addr, reason: e.reason })?;
            let client = ChunkStoreClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Ok(Peer { node: n.clone(), client })
        })
        .collect()
}

/// Placement candidates of `peers`, index for index.
pub fn candidates(peers: &[Peer]) -> Vec<Candidate> {
    peers.iter().map(|p| Candidate::from(&p.node)).collect()
}

impl Peer {
    fn remote(&self, status: tonic::Status) -> ChunkNodeError {
        ChunkNodeError::Remote { node: self.node.node_id.clone(), status }
    }

    pub async fn has(&self, ids: &[ChunkId]) -> Result<Vec<bool>, ChunkNodeError> {
        let req = HasChunksRequest { ids: ids.iter().map(|i| i.0.to_vec()).collect() };
        let reply = self.client.clone().has_chunks(req).await.map_err(|s| self.remote(s))?;
        let present = reply.into_inner().present;
        if present.len() != ids.len() {
            let status =
                tonic::Status::internal("HasChunks answered for a different number of ids");
            return Err(self.remote(status));
        }
        Ok(present)
    }

    pub async fn put(&self, id: ChunkId, data: Bytes) -> Result<bool, ChunkNodeError> {
        let req = PutChunkRequest { id: id.0.to_vec(), data };
        let reply = self.client.clone().put_chunk(req).await.map_err(|s| self.remote(s))?;
        Ok(reply.into_inner().stored_new)
    }

    /// The verified bytes of `id`, or `None` when this peer lacks it or sent
    /// bytes that do not hash to it.
    pub async fn get(&self, id: ChunkId) -> Result<Option<Bytes>, ChunkNodeError> {
        match self.client.clone().get_chunk(GetChunkRequest { id: id.0.to_vec() }).await {
            Ok(r) => {
                let data = r.into_inner().data;
                if ChunkId::of(&data) == id {
                    Ok(Some(data))
                } else {
                    tracing::error!(chunk = %id, node = %self.node.node_id, "peer sent corrupt bytes");
                    Ok(None)
                }
            }
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.remote(s)),
        }
    }
}
