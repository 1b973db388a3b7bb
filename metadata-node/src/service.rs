//! The gRPC front of a member: the `Raft` service peers call, and the
//! `Metadata` service clients call. Both are thin: decode, call openraft or the
//! records, encode. Domain refusals (e.g. `VolumeNotFound`) are results inside
//! an ok reply; gRPC errors mean an undecodable request or a node that cannot
//! serve (stopped, no quorum, internal failure), which the client retries elsewhere.

use crate::error::MetadataError;
use crate::network::{decode, encode};
use crate::propose::Proposer;
use crate::state_machine::SharedRecords;
use crate::typ::{ForwardToLeader, InitializeError, Node, NodeId, Raft, RaftError, WriteRequest};
use cairn_core::command::Query;
use cairn_proto::pb::metadata_server::Metadata;
use cairn_proto::pb::raft_server::Raft as RaftRpc;
use cairn_proto::pb::{
    ClientReply, ClientRequest, InitReply, InitRequest, MemberInfo, RaftReply, RaftRequest,
    StatusReply, StatusRequest,
};
use openraft::error::{CheckIsLeaderError, ClientWriteError};
use openraft::ServerState;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use tonic::{Request, Response, Status};

/// Serves `Raft` RPCs from peers by handing them to the local Raft node.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }
}

fn undecodable(what: &str, e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable {what}: {e}"))
}

/// The envelope of a Raft reply: the response, or the Raft error for the caller.
fn raft_reply<T: Serialize, E: Serialize>(
    res: Result<T, E>,
) -> Result<Response<RaftReply>, Status> {
    let reply = match res {
        Ok(v) => RaftReply { data: encode(&v).map_err(internal)?, error: Vec::new() },
        Err(e) => RaftReply { data: Vec::new(), error: encode(&e).map_err(internal)? },
    };
    Ok(Response::new(reply))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("append-entries", e))?;
        raft_reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("vote", e))?;
        raft_reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("install-snapshot", e))?;
        raft_reply(self.raft.install_snapshot(rpc).await)
    }
}

/// Serves the client API: writes through Raft, linearizable reads, bootstrap, status.
pub struct MetadataService {
    raft: Raft,
    records: SharedRecords,
    /// Batches concurrent writes into one Raft proposal.
    proposer: Proposer,
}

impl MetadataService {
    pub fn new(raft: Raft, records: SharedRecords) -> Self {
        let proposer = Proposer::start(raft.clone());
        MetadataService { raft, records, proposer }
    }

    /// The reply that sends the client to the leader (or back off, when unknown).
    fn not_leader(&self, f: &ForwardToLeader) -> Response<ClientReply> {
        let leader_addr = leader_addr(&self.raft, f);
        Response::new(ClientReply { data: Vec::new(), not_leader: true, leader_addr })
    }
}

/// Where a `ForwardToLeader` points: the leader's address, or empty while
/// no leader is known.
pub(crate) fn leader_addr(raft: &Raft, f: &ForwardToLeader) -> String {
    match (&f.leader_node, f.leader_id) {
        (Some(node), _) => node.addr.clone(),
        (None, Some(id)) => member_addr(raft, id).unwrap_or_default(),
        (None, None) => String::new(),
    }
}

/// The address of member `id` in the membership this node knows.
fn member_addr(raft: &Raft, id: NodeId) -> Option<String> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
}

fn ok_reply<T: Serialize>(value: &T) -> Result<Response<ClientReply>, Status> {
    let data = encode(value).map_err(internal)?;
    Ok(Response::new(ClientReply { data, not_leader: false, leader_addr: String::new() }))
}

/// A Raft error that leaves the client nothing to do here but try another member.
fn unavailable<E: std::fmt::Display>(e: &E) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl Metadata for MetadataService {
    async fn write(&self, req: Request<ClientRequest>) -> Result<Response<ClientReply>, Status> {
        let req: WriteRequest =
            decode(&req.into_inner().data).map_err(|e| undecodable("write request", e))?;
        let outcome = self.proposer.write(req).await.map_err(|e| unavailable(&e))?;
        match outcome {
            Ok(result) => ok_reply(&result),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(self.not_leader(&f))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(internal(e))
            }
            Err(RaftError::Fatal(e)) => Err(unavailable(&e)),
        }
    }

    async fn read(&self, req: Request<ClientRequest>) -> Result<Response<ClientReply>, Status> {
        let q: Query = decode(&req.into_inner().data).map_err(|e| undecodable("query", e))?;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                let out = self.records.read().unwrap_or_else(PoisonError::into_inner).query(&q);
                ok_reply(&out)
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Ok(self.not_leader(&f))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(unavailable(&e))
            }
            Err(RaftError::Fatal(e)) => Err(unavailable(&e)),
        }
    }

    async fn initialize(&self, req: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let mut members = Vec::new();
        for m in req.into_inner().members {
            if !m.voter {
                return Err(Status::invalid_argument(format!(
                    "member {} is not a voter: a group is initialized with voters only",
                    m.node_id
                )));
            }
            members.push((m.node_id, m.addr));
        }
        match initialize(&self.raft, members).await {
            Ok(()) => Ok(Response::new(InitReply {})),
            Err(e @ (MetadataError::InvalidMembers(_) | MetadataError::Initialize(_))) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow().clone();
        let membership = m.membership_config.membership();
        let members = members_of(membership);
        let leader_addr = m
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Ok(Response::new(StatusReply {
            node_id: m.id,
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            state: state_name(m.state).to_string(),
        }))
    }
}

/// The members (voters and learners) of `membership`, in id order.
pub(crate) fn members_of(membership: &openraft::Membership<NodeId, Node>) -> Vec<MemberInfo> {
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            node_id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

/// The lower-case name of a Raft role, as `Status` reports it.
pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Learner => "learner",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Leader => "leader",
        ServerState::Shutdown => "shutdown",
    }
}

/// Bootstraps a fresh group with `members` (id, `http://host:port`) as voters.
/// On a node that is already initialized this does nothing and succeeds.
pub(crate) async fn initialize(
    raft: &Raft,
    members: Vec<(NodeId, String)>,
) -> Result<(), MetadataError> {
    if members.is_empty() {
        return Err(MetadataError::InvalidMembers("no members".into()));
    }
    let mut map = BTreeMap::new();
    for (id, addr) in members {
        if !addr.starts_with("http://") && !addr.starts_with("https://") {
            return Err(MetadataError::InvalidMembers(format!(
                "member {id} address {addr:?} is not an http(s):// URL"
            )));
        }
        if map.insert(id, Node { addr }).is_some() {
            return Err(MetadataError::InvalidMembers(format!("member {id} is listed twice")));
        }
    }
    match raft.initialize(map).await {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(reason = %e, "group already initialized; nothing to do");
            Ok(())
        }
        Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
            Err(MetadataError::Initialize(e))
        }
        Err(RaftError::Fatal(e)) => Err(MetadataError::Raft(e)),
    }
}
