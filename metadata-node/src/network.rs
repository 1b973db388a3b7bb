//! Raft transport: openraft requests travel bincode-encoded in the `Raft` gRPC
//! service's `RaftRequest{data}`; replies come back as `RaftReply{data, error}`
//! where `error` holds the bincode of the remote `RaftError`.
//!
//! One lazy tonic `Channel` per peer address is cached and shared by every
//! client openraft asks for, so `new_client` never connects and a peer that is
//! down costs nothing until an RPC is actually sent.

use crate::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, Node, NodeId, RPCError, RaftError, TypeConfig, VoteRequest,
    VoteResponse,
};
use cairn_proto::pb::raft_client::RaftClient;
use cairn_proto::pb::{RaftReply, RaftRequest};
use cairn_proto::tls::{self, ClusterTls};
use cairn_proto::MAX_MESSAGE_BYTES;
use openraft::error::{NetworkError, PayloadTooLarge, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tonic::transport::Channel;

/// How long establishing a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Encodes an envelope body (request, reply or error).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

/// Decodes an envelope body.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

/// Hands out one client per replication stream or election, all sharing the
/// cached channel of their peer's address.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClusterTls>,
}

impl Network {
    /// Peers reached over mutual TLS with `tls` (`None`: clear text).
    pub fn new(tls: Option<ClusterTls>) -> Self {
        Network { channels: Arc::default(), tls }
    }

    /// The cached lazy channel to `addr`, created on first use.
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = tls::endpoint(addr, self.tls.as_ref())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        let client = self.channel(&node.addr).map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        if let Err(e) = &client {
            tracing::warn!(target, addr = %node.addr, error = %e, "peer address is not usable");
        }
        PeerClient { target, node: node.clone(), client: client.map_err(Arc::new) }
    }
}

/// The transport to one peer.
pub struct PeerClient {
    target: NodeId,
    node: Node,
    /// An error when the peer's address cannot be parsed: every RPC then
    /// reports the peer unreachable.
    client: Result<RaftClient<Channel>, Arc<tonic::transport::Error>>,
}

/// Which RPC is sent: the envelope is the same for all three.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerClient {
    /// Sends `req` as the `rpc` envelope and decodes the reply or the remote error.
    /// `entries` is the number of log entries in `req`, to hint a smaller batch
    /// when the message was too large.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        entries: u64,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e.as_ref()))),
        };
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = RaftRequest { data };
        let res = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let RaftReply { data, error } =
            res.map_err(|status| status_error(&status, entries))?.into_inner();
        if !error.is_empty() {
            let remote: RaftError<E> =
                decode(&error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            return Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            )));
        }
        decode(&data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// A transport failure as openraft should treat it: a peer that cannot be
/// reached is backed off from; a batch of entries too large for one message
/// is resent halved; anything else is retried.
fn status_error<E: std::error::Error>(status: &tonic::Status, entries: u64) -> RPCError<E> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted if entries > 1 => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let entries = rpc.entries.len() as u64;
        self.call(Rpc::AppendEntries, &rpc, entries).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, 0).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.call(Rpc::Vote, &rpc, 0).await
    }
}
