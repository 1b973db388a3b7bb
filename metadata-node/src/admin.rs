//! The `MetadataAdmin` service: adding and removing members of the group.
//!
//! Both verbs run on the leader (a follower answers `not_leader` with the
//! leader's address) and are idempotent, so an operator or a client retrying
//! after a lost answer does no harm. Adding is the safe two-step dance: the
//! new member joins as a learner, the call waits until the leader sees it
//! caught up (from the log, or from a snapshot), and only then is it promoted
//! to voter, so the group's quorum never waits on a member still copying the
//! past. Removing takes the member out of the voters and the group at once.

use crate::service::{leader_addr, members_of};
use crate::typ::{ClientWriteError, Node, NodeId, Raft, RaftError};
use cairn_proto::pb::metadata_admin_server::MetadataAdmin;
use cairn_proto::pb::{AddMemberRequest, MembershipReply, RemoveMemberRequest};
use openraft::error::{ChangeMembershipError, CheckIsLeaderError};
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

pub struct AdminService {
    raft: Raft,
}

impl AdminService {
    pub fn new(raft: Raft) -> Self {
        AdminService { raft }
    }

    /// The membership this member knows, as a reply.
    fn current(&self) -> Response<MembershipReply> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let members = members_of(m.membership_config.membership());
        Response::new(MembershipReply { not_leader: false, leader_addr: String::new(), members })
    }

    /// A reply for a membership the leader just committed.
    fn committed(
        &self,
        membership: Option<openraft::Membership<NodeId, Node>>,
    ) -> Response<MembershipReply> {
        match membership {
            Some(m) => Response::new(MembershipReply {
                not_leader: false,
                leader_addr: String::new(),
                members: members_of(&m),
            }),
            None => self.current(),
        }
    }

    /// Succeeds on the leader; otherwise the reply that redirects the caller.
    async fn on_leader(&self) -> Result<Option<Response<MembershipReply>>, Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(None),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Ok(Some(not_leader(leader_addr(&self.raft, &f))))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(Status::unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Maps a failed membership write to a reply or a gRPC status.
    fn write_failed(
        &self,
        e: RaftError<ClientWriteError>,
    ) -> Result<Response<MembershipReply>, Status> {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                Ok(not_leader(leader_addr(&self.raft, &f)))
            }
            // Another change is still being committed: retry shortly.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                e @ ChangeMembershipError::InProgress(_),
            )) => Err(Status::unavailable(e.to_string())),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            RaftError::Fatal(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

fn not_leader(leader_addr: String) -> Response<MembershipReply> {
    Response::new(MembershipReply { not_leader: true, leader_addr, members: Vec::new() })
}

#[tonic::async_trait]
impl MetadataAdmin for AdminService {
    async fn add_member(
        &self,
        req: Request<AddMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let AddMemberRequest { node_id, addr } = req.into_inner();
        if node_id == 0 {
            return Err(Status::invalid_argument("node id 0 is reserved"));
        }
        if !addr.starts_with("http://") && !addr.starts_with("https://") {
            return Err(Status::invalid_argument(format!(
                "member address {addr:?} is not an http(s):// URL"
            )));
        }
        if let Some(redirect) = self.on_leader().await? {
            return Ok(redirect);
        }
        let (known_addr, is_voter) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let known = membership.get_node(&node_id).map(|n| n.addr.clone());
            (known, membership.voter_ids().any(|v| v == node_id))
        };
        if let Some(known) = &known_addr {
            if *known != addr {
                return Err(Status::failed_precondition(format!(
                    "member {node_id} is already in the group at {known}; remove it first"
                )));
            }
            if is_voter {
                return Ok(self.current());
            }
        }
        tracing::info!(node_id, %addr, "adding a metadata member as learner");
        if let Err(e) = self.raft.add_learner(node_id, Node { addr: addr.clone() }, true).await {
            return self.write_failed(e);
        }
        tracing::info!(node_id, %addr, "learner caught up; promoting it to voter");
        let voters = BTreeSet::from([node_id]);
        match self.raft.change_membership(ChangeMembers::AddVoterIds(voters), false).await {
            Ok(resp) => Ok(self.committed(resp.membership)),
            Err(e) => self.write_failed(e),
        }
    }

    async fn remove_member(
        &self,
        req: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let node_id = req.into_inner().node_id;
        if let Some(redirect) = self.on_leader().await? {
            return Ok(redirect);
        }
        let (is_node, is_voter) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (membership.get_node(&node_id).is_some(), membership.voter_ids().any(|v| v == node_id))
        };
        let ids = BTreeSet::from([node_id]);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(ids)
        } else if is_node {
            ChangeMembers::RemoveNodes(ids)
        } else {
            return Ok(self.current());
        };
        tracing::info!(node_id, "removing a metadata member");
        match self.raft.change_membership(change, false).await {
            Ok(resp) => Ok(self.committed(resp.membership)),
            Err(e) => self.write_failed(e),
        }
    }
}
