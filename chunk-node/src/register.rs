//! This node's registration with the metadata group: its record (id, zone,
//! addresses) written once at start by a [`Worker`] that retries with
//! back-off until the group applies it or the node shuts down.

use cairn_core::command::Command;
use cairn_core::records::ChunkNodeInfo;
use cairn_proto::tls::ClusterTls;
use cairn_proto::MetadataClient;
use cairn_worker::{Backoff, Progress, Stop, Worker};
use std::time::Duration;
use tokio::sync::watch;

/// Registers a node's record; one attempt per step, done once applied.
pub struct Registration {
    client: MetadataClient,
    cmd: Command,
    node_id: String,
    /// Flips when the node stops serving: no attempt starts after that.
    shutdown: watch::Receiver<bool>,
}

impl Registration {
    /// Registers `info` with the metadata group at `members` until the node
    /// shuts down.
    pub fn new(
        members: Vec<String>,
        tls: Option<ClusterTls>,
        info: ChunkNodeInfo,
        shutdown: watch::Receiver<bool>,
    ) -> Registration {
        Registration {
            client: MetadataClient::new(members).with_tls(tls),
            node_id: info.node_id.clone(),
            cmd: Command::RegisterNode(info),
            shutdown,
        }
    }
}

impl Worker for Registration {
    type Error = String;

    fn name(&self) -> String {
        format!("registration {}", self.node_id)
    }

    async fn work(&mut self, stop: &mut Stop) -> Result<Progress, String> {
        if *self.shutdown.borrow() {
            return Ok(Progress::Done);
        }
        let written = tokio::select! {
            written = self.client.write(&self.cmd) => written,
            _ = stop.wait() => return Ok(Progress::Done),
            _ = self.shutdown.wait_for(|s| *s) => return Ok(Progress::Done),
        };
        match written {
            Ok(Ok(_)) => {
                tracing::info!(node = %self.node_id, "registered with the metadata group");
                Ok(Progress::Done)
            }
            Ok(Err(e)) => Err(format!("metadata group refused registration: {e}")),
            Err(e) => Err(format!("metadata group unavailable; will retry registration: {e}")),
        }
    }

    /// Never idle: a step registers or fails.
    fn idle_wait(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}
