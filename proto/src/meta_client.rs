//! The one metadata client: finds the leader, follows redirects, retries a
//! bounded number of times. Every process that talks to the metadata group
//! (gateway, chunk nodes, the CLI) goes through it.

use crate::pb::metadata_client::MetadataClient as PbClient;
use crate::pb::{ClientReply, ClientRequest, StatusReply, StatusRequest};
use crate::MAX_MESSAGE_BYTES;
use cairn_core::command::{Command, CommandResult, Query, QueryOutput};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum MetaClientError {
    /// No leader answered within the deadline: the caller should answer "retry later".
    #[error("metadata group unavailable: {0}")]
    Unavailable(String),
    /// A reply could not be decoded: a bug or version skew, never retried.
    #[error("metadata reply could not be decoded: {0}")]
    Decode(String),
}

pub struct MetadataClient {
    addrs: Vec<String>,
    deadline: Duration,
    channels: Mutex<HashMap<String, PbClient<Channel>>>,
    leader: Mutex<Option<String>>,
}

enum Kind {
    Write,
    Read,
}

impl MetadataClient {
    /// `addrs` are the members' gRPC endpoints (`http://host:port`).
    pub fn new(addrs: Vec<String>) -> Self {
        MetadataClient {
            addrs,
            deadline: Duration::from_secs(15),
            channels: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
        }
    }

    /// How long one call keeps retrying before it gives up as unavailable.
    pub fn with_deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn client(&self, addr: &str) -> Result<PbClient<Channel>, MetaClientError> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(addr.to_string())
            .map_err(|e| MetaClientError::Unavailable(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        let c = PbClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Applies `cmd` through Raft and returns its result.
    pub async fn write(&self, cmd: &Command) -> Result<CommandResult, MetaClientError> {
        let data = bincode::serialize(cmd).map_err(|e| MetaClientError::Decode(e.to_string()))?;
        let reply = self.call(Kind::Write, data).await?;
        bincode::deserialize(&reply).map_err(|e| MetaClientError::Decode(e.to_string()))
    }

    /// A linearizable read.
    pub async fn read(&self, q: &Query) -> Result<QueryOutput, MetaClientError> {
        let data = bincode::serialize(q).map_err(|e| MetaClientError::Decode(e.to_string()))?;
        let reply = self.call(Kind::Read, data).await?;
        bincode::deserialize(&reply).map_err(|e| MetaClientError::Decode(e.to_string()))
    }

    /// Status of one member.
    pub async fn status(&self, addr: &str) -> Result<StatusReply, MetaClientError> {
        let mut c = self.client(addr)?;
        c.status(StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| MetaClientError::Unavailable(e.to_string()))
    }

    async fn call(&self, kind: Kind, data: Vec<u8>) -> Result<Vec<u8>, MetaClientError> {
        let start = Instant::now();
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last_err = String::from("no member answered");
        loop {
            if start.elapsed() > self.deadline {
                return Err(MetaClientError::Unavailable(last_err));
            }
            let target = {
                let cached = self.leader.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match cached {
                    Some(l) => l,
                    None => {
                        let a = self.addrs[next % self.addrs.len()].clone();
                        next += 1;
                        a
                    }
                }
            };
            let mut c = self.client(&target)?;
            let req = ClientRequest { data: data.clone() };
            let res = match kind {
                Kind::Write => c.write(req).await,
                Kind::Read => c.read(req).await,
            };
            match res {
                Ok(r) => {
                    let ClientReply { data, not_leader, leader_addr } = r.into_inner();
                    if !not_leader {
                        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
                        return Ok(data);
                    }
                    last_err = format!("{target} is not the leader");
                    let mut l = self.leader.lock().unwrap_or_else(|e| e.into_inner());
                    if !leader_addr.is_empty() && leader_addr != target {
                        *l = Some(leader_addr);
                        continue;
                    }
                    *l = None;
                }
                Err(status) => {
                    last_err = format!("{target}: {}", status.message());
                    *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}
