//! This node's registration with the metadata group: its record (id, zone,
//! addresses) written once at start, retried in the background until the
//! group applies it or the node shuts down.

use cairn_core::backoff::Backoff;
use cairn_core::command::Command;
use cairn_core::records::ChunkNodeInfo;
use cairn_proto::MetadataClient;
use std::time::Duration;
use tokio::sync::watch;

/// Registers `info` with the metadata group, retrying with back-off until it
/// is applied or the node shuts down.
pub async fn register(
    members: Vec<String>,
    info: ChunkNodeInfo,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = MetadataClient::new(members);
    let cmd = Command::RegisterNode(info.clone());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match client.write(&cmd).await {
            Ok(Ok(_)) => {
                tracing::info!(node = %info.node_id, "registered with the metadata group");
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "metadata group refused registration"),
            Err(e) => {
                tracing::warn!(error = %e, "metadata group unavailable; will retry registration")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => return,
        }
    }
}
