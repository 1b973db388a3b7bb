//! cairn-metadata-node: one member of the Raft group that owns every Cairn
//! record. openraft drives consensus; RocksDB holds the log, the vote, the
//! records and the current snapshot; tonic serves the `Raft` service to peers,
//! the `Metadata` service to clients and the `MetadataAdmin` service
//! (membership changes) to operators on one listener.
//!
//! Lifecycle: [`MetadataNode::start`] opens the data directory and serves;
//! [`MetadataNode::initialize`] bootstraps a fresh group once, on one member;
//! a restarted member (same data directory, same address) just starts again
//! and rejoins: it never initializes twice. [`MetadataNode::shutdown`] stops
//! serving and Raft and closes the database.

pub mod admin;
pub mod config;
mod error;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod propose;
pub mod raft_log;
pub mod requests;
pub mod service;
pub mod state_machine;
pub mod store;
pub mod typ;

pub use config::MetadataConfig;
pub use error::MetadataError;
pub use typ::{NodeId, Raft, TypeConfig};

use admin::AdminService;
use cairn_proto::pb::metadata_admin_server::MetadataAdminServer;
use cairn_proto::pb::metadata_server::MetadataServer;
use cairn_proto::pb::raft_server::RaftServer;
use cairn_proto::tls::ClusterTls;
use cairn_proto::MAX_MESSAGE_BYTES;
use log_store::LogStore;
use network::Network;
use service::{MetadataService, RaftService};
use state_machine::{SharedRecords, StateMachine};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::Closed;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// How long [`MetadataNode::shutdown`] waits for in-flight RPCs and for the
/// storage tasks to let go of the database.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running member: Raft plus its gRPC server.
pub struct MetadataNode {
    id: NodeId,
    addr: SocketAddr,
    raft: Raft,
    records: SharedRecords,
    /// Lets shutdown wait until every storage task dropped the database.
    db_closed: Closed,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
}

impl MetadataNode {
    /// Opens (or creates) the member's data directory, starts Raft and serves
    /// both gRPC services on `listener`, which the caller has already bound.
    ///
    /// A fresh member waits, as a learner, for [`MetadataNode::initialize`] on
    /// it or on another member; a member with data resumes where it stopped.
    pub async fn start(
        config: MetadataConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<MetadataNode, MetadataError> {
        let raft_config = Arc::new(config.raft_config()?);
        let addr = listener.local_addr()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let dir = config.data_dir.clone();
        let segment_bytes = config.log_segment_mib.max(1) << 20;
        let (db_closed, sm, log_store) = store::blocking(move || {
            let (db, closed) = store::open_db(&dir)?;
            let sm = StateMachine::open(db.clone())?;
            let log = LogStore::open(db, &dir.join("raft-log"), segment_bytes)?;
            Ok((closed, sm, log))
        })
        .await?;
        let records = sm.records();

        let tls = config.tls_dir.as_deref().map(ClusterTls::load).transpose()?;
        let network = Network::new(tls.clone());
        let raft = Raft::new(config.node_id, raft_config, network, log_store, sm).await?;

        let raft_svc = RaftServer::new(RaftService::new(raft.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let meta_svc = MetadataServer::new(MetadataService::new(raft.clone(), records.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin_svc = MetadataAdminServer::new(AdminService::new(raft.clone()));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = Server::builder();
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.server())?;
        }
        let server = tokio::spawn(
            builder
                .layer(cairn_proto::trace::RequestIdLayer)
                .add_service(raft_svc)
                .add_service(meta_svc)
                .add_service(admin_svc)
                .serve_with_incoming_shutdown(cairn_proto::accept::paced(incoming), async move {
                    // A dropped sender (the node was dropped) stops the server too.
                    let _ = stopped.await;
                }),
        );
        tracing::info!(node_id = config.node_id, %addr, data_dir = %config.data_dir.display(), "metadata node started");
        let leader_changes = metrics::count_leader_changes(&raft);
        Ok(MetadataNode {
            id: config.node_id,
            addr,
            raft,
            records,
            db_closed,
            stop_server,
            server,
            leader_changes,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address the gRPC services listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What an HTTP listener beside the member reports: its metrics and
    /// readiness, readable after the node is moved.
    pub fn observer(&self) -> metrics::Observer {
        metrics::Observer::new(self.raft.clone(), self.leader_changes.clone())
    }

    /// The Raft handle: metrics, waits, triggers.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The records as this member last applied them (not a linearizable read:
    /// for tests and diagnostics; clients use the `Read` RPC).
    pub fn records(&self) -> &SharedRecords {
        &self.records
    }

    /// Bootstraps a fresh group with `members` (`(node_id, "http://host:port")`)
    /// as its voters, this member among them. Call it once, on one member, the
    /// first time the group starts; on an initialized member it does nothing.
    pub async fn initialize(&self, members: Vec<(NodeId, String)>) -> Result<(), MetadataError> {
        service::initialize(&self.raft, members).await
    }

    /// Stops Raft and the gRPC server, then waits until the database is closed,
    /// so the same data directory can be opened again in this process.
    pub async fn shutdown(self) {
        let MetadataNode { id, raft, db_closed, stop_server, mut server, .. } = self;
        // Raft first: RPCs still in flight then fail fast instead of holding
        // the server's graceful shutdown open.
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(node_id = id, error = %e, "raft task ended abnormally");
        }
        let _ = stop_server.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(node_id = id, error = %e, "gRPC server failed"),
            Ok(Err(e)) => tracing::warn!(node_id = id, error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(node_id = id, "gRPC server did not stop in time; aborting it");
                server.abort();
            }
        }
        drop(raft);
        // The state machine worker and snapshot builds hold the database until
        // they notice Raft is gone.
        if tokio::time::timeout(SHUTDOWN_GRACE, db_closed.wait()).await.is_err() {
            tracing::warn!(node_id = id, "database still open after shutdown");
        }
        tracing::info!(node_id = id, "metadata node stopped");
    }
}
