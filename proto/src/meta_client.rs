//! The one metadata client: finds the leader, follows redirects, retries a
//! bounded number of times. Every process that talks to the metadata group
//! (gateway, chunk nodes, the CLI) goes through it.
//!
//! Exactly-once writes: every [`MetadataClient::write`] gets a [`RequestId`]
//! that stays the same across the client's internal retries. The metadata
//! group remembers the result of recent request ids in its replicated state,
//! so a write that was committed but whose answer was lost (the leader died,
//! the connection broke) is answered from that table when retried, on any
//! member that becomes leader, and is never applied twice.
//!
//! Membership: the client starts from the configured addresses and learns
//! the group's current members from the leader's `Status` (every few seconds,
//! after a sweep that found no leader, and after a membership change), so
//! members added later are found and removed ones are no longer tried.

use crate::channel::MAX_MESSAGE_BYTES;
use crate::pb::metadata_admin_client::MetadataAdminClient;
use crate::pb::metadata_client::MetadataClient as PbClient;
use crate::pb::{
    AddMemberRequest, ClientReply, ClientRequest, MemberInfo, MembershipReply, RemoveMemberRequest,
    StatusReply, StatusRequest,
};
use crate::tls::{self, ClusterTls};
use crate::trace::{passing_request_id, Channel};
use cairn_core::command::{Command, CommandResult, Query, QueryOutput};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often a client re-reads the group's membership from the leader.
const REFRESH_MEMBERS_EVERY: Duration = Duration::from_secs(5);
/// How long one `Status` call may take when refreshing the membership.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one RPC of the client API (a write waits for commit and apply).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one membership RPC (adding a member waits for it to catch up).
const ADMIN_RPC_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum MetaClientError {
    /// No leader answered within the deadline: the caller should answer "retry later".
    #[error("metadata group unavailable: {0}")]
    Unavailable(String),
    /// A reply could not be decoded: a bug or version skew, never retried.
    #[error("metadata reply could not be decoded: {0}")]
    Decode(String),
}

/// Why a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Client(#[from] MetaClientError),
    /// The leader refused the change (e.g. it would leave no voter, or the
    /// address is not a URL); retrying does not help.
    #[error("membership change refused: {0}")]
    Refused(String),
}

/// Identifies one write across its retries: a random id of the client that
/// made it and a sequence number within that client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

/// A write as the client sends it and as a Raft log entry carries it: the
/// command and the id that makes a retry of it idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub request_id: RequestId,
    pub command: Command,
}

/// What one attempt on one member came to.
enum Routed<T> {
    Done(T),
    /// The member is not the leader; the leader's address, or empty when unknown.
    NotLeader(String),
}

/// Why routing a call failed.
enum RouteError {
    Unavailable(String),
    /// The member refused the request itself (invalid, impossible): final.
    Refused(String),
}

pub struct MetadataClient {
    /// The group's members as last learned (the configured seeds at first).
    addrs: Mutex<Vec<String>>,
    deadline: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    leader: Mutex<Option<String>>,
    /// Random per client, so request ids of different clients never collide.
    client_id: u64,
    next_seq: AtomicU64,
    last_refresh: Mutex<Instant>,
    tls: Option<ClusterTls>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// gRPC codes that say the request itself is wrong; anything else may work on
/// another member or later.
fn is_final(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
    )
}

impl MetadataClient {
    /// `addrs` are the members' gRPC endpoints (`http://host:port`).
    pub fn new(addrs: Vec<String>) -> Self {
        MetadataClient {
            addrs: Mutex::new(addrs),
            deadline: Duration::from_secs(15),
            channels: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
            client_id: rand::random(),
            next_seq: AtomicU64::new(1),
            last_refresh: Mutex::new(Instant::now()),
            tls: None,
        }
    }

    /// Talks to the members over mutual TLS with `tls` (`None`: clear text).
    pub fn with_tls(mut self, tls: Option<ClusterTls>) -> Self {
        self.tls = tls;
        self
    }

    /// How long one call keeps retrying before it gives up as unavailable.
    pub fn with_deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// The members' addresses as this client currently knows them.
    pub fn addrs(&self) -> Vec<String> {
        lock(&self.addrs).clone()
    }

    fn channel(&self, addr: &str) -> Result<Channel, MetaClientError> {
        let mut map = lock(&self.channels);
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = passing_request_id(
            tls::endpoint(addr, self.tls.as_ref())
                .map_err(|e| MetaClientError::Unavailable(format!("bad address {addr}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy(),
        );
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    fn client(&self, addr: &str) -> Result<PbClient<Channel>, MetaClientError> {
        Ok(PbClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A fresh request id of this client.
    pub fn next_request_id(&self) -> RequestId {
        RequestId { client: self.client_id, seq: self.next_seq.fetch_add(1, Ordering::Relaxed) }
    }

    /// Applies `cmd` through Raft and returns its result. Retries (after a
    /// lost answer, a leader change) carry the same request id, so the
    /// command is applied at most once.
    pub async fn write(&self, cmd: &Command) -> Result<CommandResult, MetaClientError> {
        let req = WriteRequest { request_id: self.next_request_id(), command: cmd.clone() };
        self.write_request(&req).await
    }

    /// Sends `req` as is: a caller that retries a write itself, across calls,
    /// keeps it exactly-once by sending the same request again.
    pub async fn write_request(
        &self,
        req: &WriteRequest,
    ) -> Result<CommandResult, MetaClientError> {
        let data = bincode::serialize(req).map_err(|e| MetaClientError::Decode(e.to_string()))?;
        let reply = self.data_call(data, true).await?;
        bincode::deserialize(&reply).map_err(|e| MetaClientError::Decode(e.to_string()))
    }

    /// A linearizable read.
    pub async fn read(&self, q: &Query) -> Result<QueryOutput, MetaClientError> {
        let data = bincode::serialize(q).map_err(|e| MetaClientError::Decode(e.to_string()))?;
        let reply = self.data_call(data, false).await?;
        bincode::deserialize(&reply).map_err(|e| MetaClientError::Decode(e.to_string()))
    }

    /// Status of one member.
    pub async fn status(&self, addr: &str) -> Result<StatusReply, MetaClientError> {
        let mut c = self.client(addr)?;
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(STATUS_TIMEOUT);
        match tokio::time::timeout(STATUS_TIMEOUT, c.status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(e)) => Err(MetaClientError::Unavailable(e.to_string())),
            Err(_) => Err(MetaClientError::Unavailable(format!("{addr} did not answer"))),
        }
    }

    /// Adds member `node_id` at `addr` (already running, not initialized):
    /// as a learner first, then, once it caught up, as a voter. Returns the
    /// new membership; the client then knows the new member's address.
    pub async fn add_member(
        &self,
        node_id: u64,
        addr: &str,
    ) -> Result<Vec<MemberInfo>, MembershipError> {
        let req = AddMemberRequest { node_id, addr: addr.to_string() };
        let members = self
            .admin_call(move |mut c| {
                let req = req.clone();
                async move { c.add_member(admin_request(req)).await }
            })
            .await?;
        self.learn(&members);
        Ok(members)
    }

    /// Removes member `node_id` from the group. Returns the new membership.
    pub async fn remove_member(&self, node_id: u64) -> Result<Vec<MemberInfo>, MembershipError> {
        let members = self
            .admin_call(move |mut c| async move {
                c.remove_member(admin_request(RemoveMemberRequest { node_id })).await
            })
            .await?;
        self.learn(&members);
        Ok(members)
    }

    async fn admin_call<F, Fut>(&self, f: F) -> Result<Vec<MemberInfo>, MembershipError>
    where
        F: Fn(MetadataAdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<MembershipReply>, tonic::Status>>,
    {
        let routed = self
            .route(ADMIN_RPC_TIMEOUT, |addr| {
                let client = self.channel(addr).map(MetadataAdminClient::new);
                let fut = client.map(&f);
                async move {
                    let MembershipReply { not_leader, leader_addr, members } =
                        fut?.await.map_err(Attempt::Status)?.into_inner();
                    Ok(if not_leader {
                        Routed::NotLeader(leader_addr)
                    } else {
                        Routed::Done(members)
                    })
                }
            })
            .await;
        match routed {
            Ok(m) => Ok(m),
            Err(RouteError::Unavailable(e)) => Err(MetaClientError::Unavailable(e).into()),
            Err(RouteError::Refused(e)) => Err(MembershipError::Refused(e)),
        }
    }

    /// Replaces the known addresses with `members` (in id order).
    fn learn(&self, members: &[MemberInfo]) {
        if members.is_empty() {
            return;
        }
        let mut sorted: Vec<&MemberInfo> = members.iter().collect();
        sorted.sort_by_key(|m| m.node_id);
        let addrs: Vec<String> = sorted.iter().map(|m| m.addr.clone()).collect();
        let mut known = lock(&self.addrs);
        if *known != addrs {
            tracing::info!(members = ?addrs, "metadata membership learned");
            *known = addrs;
        }
        *lock(&self.last_refresh) = Instant::now();
    }

    /// Reads the membership from the leader and remembers its members'
    /// addresses. Asks the cached leader first, then every known member (a
    /// follower sends it to the leader).
    pub async fn refresh_members(&self) -> Result<Vec<String>, MetaClientError> {
        *lock(&self.last_refresh) = Instant::now();
        let mut candidates = self.addrs();
        if let Some(l) = lock(&self.leader).clone() {
            candidates.insert(0, l);
        }
        for addr in candidates {
            let Ok(s) = self.status(&addr).await else { continue };
            let from_leader = if s.leader_id != 0 && s.leader_id == s.node_id {
                Some(s)
            } else if !s.leader_addr.is_empty() {
                self.status(&s.leader_addr).await.ok().filter(|l| l.leader_id == l.node_id)
            } else {
                None
            };
            if let Some(leader) = from_leader {
                self.learn(&leader.members);
                return Ok(self.addrs());
            }
        }
        Err(MetaClientError::Unavailable("no member knows a leader".into()))
    }

    /// Refreshes the membership when the last refresh is old enough.
    async fn refresh_if_stale(&self) {
        let stale = lock(&self.last_refresh).elapsed() >= REFRESH_MEMBERS_EVERY;
        if stale {
            if let Err(e) = self.refresh_members().await {
                tracing::debug!(error = %e, "metadata membership not refreshed");
            }
        }
    }

    /// A call of the client API (`Write` or `Read`) routed to the leader.
    async fn data_call(&self, data: Vec<u8>, write: bool) -> Result<Vec<u8>, MetaClientError> {
        let routed = self
            .route(RPC_TIMEOUT, |addr| {
                let client = self.client(addr);
                let data = data.clone();
                async move {
                    let mut c = client?;
                    let mut req = tonic::Request::new(ClientRequest { data });
                    req.set_timeout(RPC_TIMEOUT);
                    let res = if write { c.write(req).await } else { c.read(req).await };
                    let ClientReply { data, not_leader, leader_addr } =
                        res.map_err(Attempt::Status)?.into_inner();
                    Ok(if not_leader { Routed::NotLeader(leader_addr) } else { Routed::Done(data) })
                }
            })
            .await;
        match routed {
            Ok(d) => Ok(d),
            Err(RouteError::Unavailable(e)) => Err(MetaClientError::Unavailable(e)),
            // The member could not decode what this build sent: version skew.
            Err(RouteError::Refused(e)) => Err(MetaClientError::Decode(e)),
        }
    }

    /// Sends one call to the leader: follows redirects, tries the members in
    /// turn while no leader is known, backs off, and gives up after the deadline.
    async fn route<T, F, Fut>(&self, timeout: Duration, attempt: F) -> Result<T, RouteError>
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = Result<Routed<T>, Attempt>>,
    {
        self.refresh_if_stale().await;
        let start = Instant::now();
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last_err = String::from("no member answered");
        loop {
            if start.elapsed() > self.deadline {
                return Err(RouteError::Unavailable(last_err));
            }
            let cached = lock(&self.leader).clone();
            let target = match cached {
                Some(l) => l,
                None => {
                    let addrs = self.addrs();
                    if addrs.is_empty() {
                        return Err(RouteError::Unavailable("no metadata member is known".into()));
                    }
                    if next > 0 && next.is_multiple_of(addrs.len()) {
                        // A whole sweep found no leader: the membership may
                        // have changed under us.
                        let _ = self.refresh_members().await;
                    }
                    let a = addrs[next % addrs.len()].clone();
                    next += 1;
                    a
                }
            };
            // The server enforces the timeout too; this one also covers a
            // member that accepts connections but answers nothing (stopped).
            let outcome = match tokio::time::timeout(timeout, attempt(&target)).await {
                Ok(o) => o,
                Err(_) => Err(Attempt::Client(MetaClientError::Unavailable(format!(
                    "{target} did not answer within {timeout:?}"
                )))),
            };
            match outcome {
                Ok(Routed::Done(v)) => {
                    *lock(&self.leader) = Some(target);
                    return Ok(v);
                }
                Ok(Routed::NotLeader(leader_addr)) => {
                    last_err = format!("{target} is not the leader");
                    let mut l = lock(&self.leader);
                    if !leader_addr.is_empty() && leader_addr != target {
                        let mut addrs = lock(&self.addrs);
                        if !addrs.contains(&leader_addr) {
                            addrs.push(leader_addr.clone());
                        }
                        *l = Some(leader_addr);
                        continue;
                    }
                    *l = None;
                }
                Err(Attempt::Status(status)) if is_final(status.code()) => {
                    return Err(RouteError::Refused(format!("{target}: {}", status.message())));
                }
                Err(Attempt::Status(status)) => {
                    last_err = format!("{target}: {}", status.message());
                    *lock(&self.leader) = None;
                }
                Err(Attempt::Client(e)) => {
                    last_err = e.to_string();
                    *lock(&self.leader) = None;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// Why one attempt failed before a reply.
enum Attempt {
    Status(tonic::Status),
    Client(MetaClientError),
}

impl From<MetaClientError> for Attempt {
    fn from(e: MetaClientError) -> Self {
        Attempt::Client(e)
    }
}

fn admin_request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(ADMIN_RPC_TIMEOUT);
    req
}
