//! cairn-chunk-node: the chunk store of a zone, the volume host (NBD,
//! freeze), the copy executor (frozen image -> chunk stores, with manifest)
//! and the restore (manifest -> new volume).
//!
//! [`ChunkNode`] owns the lifecycle: it opens the stores, serves gRPC and NBD
//! on listeners the caller bound (port 0 in tests), registers itself with the
//! metadata group in the background, and shuts everything down.

pub mod config;
pub mod copy;
pub mod disk;
pub mod error;
pub mod nbd_server;
pub mod peers;
pub mod restore;
pub mod rpc;
pub mod staging;
pub mod store;
pub mod volume;

pub use config::ChunkNodeConfig;
pub use error::ChunkNodeError;
pub use store::{ChunkStore, StoreStats};
pub use volume::{FreezeInfo, VolumeHost, VolumeStats};

use cairn_core::command::Command;
use cairn_core::records::ChunkNodeInfo;
use cairn_core::OutpostId;
use cairn_proto::pb::chunk_store_server::ChunkStoreServer;
use cairn_proto::pb::volume_host_server::VolumeHostServer;
use cairn_proto::{
    MetadataClient, CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running chunk node.
pub struct ChunkNode {
    info: ChunkNodeInfo,
    grpc_addr: SocketAddr,
    nbd_addr: SocketAddr,
    store: ChunkStore,
    host: VolumeHost,
    shutdown: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    nbd_task: JoinHandle<()>,
    register_task: Option<JoinHandle<()>>,
}

impl ChunkNode {
    /// Opens the node's stores under `config.data_dir` and starts serving gRPC
    /// on `grpc` and NBD on `nbd`. With metadata members configured, the node
    /// registers itself in the background, retrying until the group answers.
    pub async fn start(
        config: ChunkNodeConfig,
        grpc: TcpListener,
        nbd: TcpListener,
    ) -> Result<ChunkNode, ChunkNodeError> {
        if config.node_id.is_empty() || config.az.is_empty() {
            return Err(ChunkNodeError::Config("node_id and az must be set"));
        }
        let outpost = match &config.outpost {
            Some(op) => Some(OutpostId::parse(op).ok_or(ChunkNodeError::Config(
                "outpost must be an Outpost id (op- and 17 hex digits)",
            ))?),
            None => None,
        };
        let grpc_addr =
            grpc.local_addr().map_err(|e| ChunkNodeError::io("address of", "grpc listener", e))?;
        let nbd_addr =
            nbd.local_addr().map_err(|e| ChunkNodeError::io("address of", "nbd listener", e))?;
        let store = ChunkStore::open(&config.data_dir).await?;
        let local = store::LocalStore { node_id: config.node_id.clone(), store: store.clone() };
        let host =
            VolumeHost::open_with(&config.data_dir, config.metadata.clone(), Some(local.clone()))
                .await?;
        let info = ChunkNodeInfo {
            node_id: config.node_id.clone(),
            az: config.az.clone(),
            outpost,
            grpc_addr: format!("http://{}:{}", config.advertise_host, grpc_addr.port()),
            nbd_addr: format!("{}:{}", config.advertise_host, nbd_addr.port()),
        };

        let (shutdown, rx) = watch::channel(false);
        let chunk_svc = rpc::ChunkStoreService {
            store: store.clone(),
            node_id: config.node_id.clone(),
            zone: info.zone(),
        };
        let volume_svc = rpc::VolumeHostService { host: host.clone(), local: Some(local) };
        let mut grpc_rx = rx.clone();
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .add_service(
                    ChunkStoreServer::new(chunk_svc)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    VolumeHostServer::new(volume_svc)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(staging::service(&config.data_dir))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc),
                    async move {
                        // A dropped sender also means shut down.
                        let _ = grpc_rx.wait_for(|s| *s).await;
                    },
                ),
        );
        let nbd_task = tokio::spawn(nbd_server::serve(nbd, host.clone(), rx.clone()));
        let register_task = (!config.metadata.is_empty())
            .then(|| tokio::spawn(register(config.metadata.clone(), info.clone(), rx)));
        tracing::info!(
            node = %info.node_id, zone = %info.zone(), grpc = %info.grpc_addr, nbd = %info.nbd_addr,
            "chunk node started"
        );
        Ok(ChunkNode {
            info,
            grpc_addr,
            nbd_addr,
            store,
            host,
            shutdown,
            grpc_task,
            nbd_task,
            register_task,
        })
    }

    /// The local address gRPC is served on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The gRPC URL this node registers (`http://<advertise_host>:<port>`).
    pub fn grpc_url(&self) -> &str {
        &self.info.grpc_addr
    }

    /// The local address NBD is served on.
    pub fn nbd_addr(&self) -> SocketAddr {
        self.nbd_addr
    }

    /// The record this node registers with the metadata group.
    pub fn info(&self) -> &ChunkNodeInfo {
        &self.info
    }

    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    pub fn volumes(&self) -> &VolumeHost {
        &self.host
    }

    /// Stops serving, waits for the servers to finish, and closes the volume
    /// host cleanly (volumes fsynced, change tracking saved).
    pub async fn shutdown(self) {
        let host = self.host.clone();
        self.stop().await;
        if let Err(e) = host.close().await {
            tracing::error!(error = %e, "volume host did not close cleanly; tracking will be unknown");
        }
    }

    /// Stops serving and background work but saves nothing, as a SIGKILL
    /// would: the next start finds no clean-shutdown marker. For tests.
    pub async fn kill_for_test(self) {
        let host = self.host.clone();
        self.stop().await;
        host.stop_tasks().await;
    }

    async fn stop(self) {
        // Receivers may all be gone already; that is a shutdown too.
        let _ = self.shutdown.send(true);
        if let Some(t) = self.register_task {
            t.abort();
            // An aborted registration loop has nothing to report.
            let _ = t.await;
        }
        match self.grpc_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "grpc server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "grpc server task failed"),
        }
        if let Err(e) = self.nbd_task.await {
            tracing::warn!(error = %e, "nbd server task failed");
        }
        tracing::info!(node = %self.info.node_id, "chunk node stopped");
    }
}

/// Registers `info` with the metadata group, retrying with back-off until it
/// is applied or the node shuts down.
async fn register(members: Vec<String>, info: ChunkNodeInfo, mut shutdown: watch::Receiver<bool>) {
    let client = MetadataClient::new(members);
    let cmd = Command::RegisterNode(info.clone());
    let mut backoff = Duration::from_millis(200);
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
            _ = tokio::time::sleep(backoff) => {}
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
