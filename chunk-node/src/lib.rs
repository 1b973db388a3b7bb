//! cairn-chunk-node: the chunk store of a zone, the volume host (NBD,
//! freeze), the copy executor (frozen image -> chunk stores, with manifest)
//! and the restore (manifest -> new volume).
//!
//! [`ChunkNode`] owns the lifecycle: it opens the stores, serves gRPC and NBD
//! on listeners the caller bound (port 0 in tests), registers itself with the
//! metadata group in the background, and shuts everything down. Its
//! background work (registration, the hydrators) runs as one set of
//! [`cairn_worker`] workers, which [`ChunkNode::workers`] lists.
//!
//! Folders, each importing only those after it: [`rpc`] (the gRPC services)
//! -> [`copy`], [`restore`], [`staging`] -> [`volume`] -> [`peers`] ->
//! [`store`] -> [`disk`]. [`nbd_server`] serves the volumes over NBD;
//! [`config`] and [`error`] are used by all.

pub mod config;
pub mod copy;
pub mod disk;
pub mod error;
pub mod metrics;
pub mod nbd_server;
pub mod peers;
mod register;
pub mod restore;
pub mod rpc;
pub mod scrub;
pub mod staging;
pub mod store;
pub mod volume;

pub use config::ChunkNodeConfig;
pub use error::ChunkNodeError;
pub use scrub::{Scrub, ScrubStatus};
pub use store::{ChunkStore, CompactReport, StoreStats, SweepReport};
pub use volume::{FreezeInfo, VolumeHost, VolumeStats};

use crate::staging::StagingStore;
use cairn_core::records::ChunkNodeInfo;
use cairn_core::OutpostId;
use cairn_proto::tls::ClusterTls;
use cairn_worker::{WorkerStatus, Workers};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running chunk node.
pub struct ChunkNode {
    info: ChunkNodeInfo,
    grpc_addr: SocketAddr,
    nbd_addr: SocketAddr,
    store: ChunkStore,
    scrub: Scrub,
    host: VolumeHost,
    shutdown: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    nbd_task: JoinHandle<()>,
    workers: Workers,
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
        let tls = match &config.tls_dir {
            Some(dir) => {
                Some(ClusterTls::load(dir).map_err(|e| ChunkNodeError::Tls(e.to_string()))?)
            }
            None => None,
        };
        peers::use_tls(tls.clone());
        let tier = config.tier_settings().map_err(ChunkNodeError::Tier)?;
        let store = ChunkStore::open_with(&config.data_dir, config.pack_bytes, tier).await?;
        let local = store::LocalStore { node_id: config.node_id.clone(), store: store.clone() };
        let workers = Workers::new();
        let sources = scrub::Sources::Metadata {
            client: Box::new(
                cairn_proto::MetadataClient::new(config.metadata.clone()).with_tls(tls.clone()),
            ),
            node_id: config.node_id.clone(),
            outpost: outpost.clone(),
        };
        let scrub_config = scrub::ScrubConfig {
            bytes_per_sec: config.scrub_bytes_per_sec,
            interval_secs: config.scrub_interval_secs,
        };
        let scrub = Scrub::start(&store, &config.data_dir, scrub_config, sources, &workers)?;
        let host = VolumeHost::open_with(
            &config.data_dir,
            config.metadata.clone(),
            tls.clone(),
            Some(local.clone()),
            workers.clone(),
            config.restore_cache_bytes as usize,
        )
        .await?;
        let info = ChunkNodeInfo {
            node_id: config.node_id.clone(),
            az: config.az.clone(),
            outpost,
            grpc_addr: format!("http://{}:{}", config.advertise_host, grpc_addr.port()),
            nbd_addr: format!("{}:{}", config.advertise_host, nbd_addr.port()),
        };

        let (shutdown, rx) = watch::channel(false);
        let services = rpc::Services {
            chunks: rpc::ChunkStoreService {
                store: store.clone(),
                node_id: config.node_id.clone(),
                zone: info.zone(),
                scrub: scrub.clone(),
            },
            volumes: rpc::VolumeHostService {
                host: host.clone(),
                local: Some(local),
                copies: Default::default(),
                copy_memory: copy::CopyMemory::new(config.copy_memory_bytes),
            },
            staging: rpc::StagingService { store: StagingStore::new(&config.data_dir) },
        };
        let grpc_task = tokio::spawn(rpc::serve(grpc, services, tls.clone(), rx.clone()));
        let nbd_tls = match &tls {
            Some(t) => Some(cairn_nbd::TlsOffer {
                acceptor: tokio_rustls::TlsAcceptor::from(
                    t.rustls_server(true).map_err(|e| ChunkNodeError::Tls(e.to_string()))?,
                ),
                required: true,
            }),
            None => None,
        };
        let nbd_task = tokio::spawn(nbd_server::serve(nbd, host.clone(), nbd_tls, rx.clone()));
        if !config.metadata.is_empty() {
            workers.spawn(register::Registration::new(
                config.metadata.clone(),
                tls.clone(),
                info.clone(),
                rx,
            ));
        }
        tracing::info!(
            node = %info.node_id, zone = %info.zone(), grpc = %info.grpc_addr, nbd = %info.nbd_addr,
            "chunk node started"
        );
        Ok(ChunkNode {
            info,
            grpc_addr,
            nbd_addr,
            store,
            scrub,
            host,
            shutdown,
            grpc_task,
            nbd_task,
            workers,
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

    /// The scrubber and repairer of this node's store.
    pub fn scrub(&self) -> &Scrub {
        &self.scrub
    }

    pub fn volumes(&self) -> &VolumeHost {
        &self.host
    }

    /// What an HTTP listener beside the node reports: its metrics and
    /// readiness, readable after the node is moved.
    pub fn observer(&self) -> metrics::Observer {
        metrics::Observer::new(self.store.clone(), self.host.clone(), self.workers.clone())
    }

    /// The node's background workers (registration, hydrators), by name.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.workers.list()
    }

    /// Stops serving, waits for the servers to finish, and closes the volume
    /// host cleanly (workers stopped, volumes fsynced, change tracking
    /// saved).
    pub async fn shutdown(self) {
        let host = self.host.clone();
        let store = self.store.clone();
        self.stop().await;
        if let Err(e) = host.close().await {
            tracing::error!(error = %e, "volume host did not close cleanly; tracking will be unknown");
        }
        // Last: the next start trusts the sealed packs' headers.
        if let Err(e) = store.close() {
            tracing::error!(error = %e, "chunk store not marked closed; the next start verifies it");
        }
    }

    /// Stops serving and aborts background work but saves nothing, as a
    /// SIGKILL would: the next start finds no clean-shutdown marker. For
    /// tests.
    pub async fn kill_for_test(self) {
        let host = self.host.clone();
        self.stop().await;
        host.stop_tasks().await;
    }

    async fn stop(self) {
        // Receivers may all be gone already; that is a shutdown too. The
        // registration worker starts no attempt after this; the host's
        // close or stop joins it.
        let _ = self.shutdown.send(true);
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
