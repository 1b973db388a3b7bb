//! The node's gRPC server: the three services on one listener, with the
//! transport tuning and the message size limits set here, once.

use crate::rpc::chunk_store::ChunkStoreService;
use crate::rpc::staging::StagingService;
use crate::rpc::volume_host::VolumeHostService;
use cairn_proto::pb::chunk_store_server::ChunkStoreServer;
use cairn_proto::pb::snapshot_staging_server::SnapshotStagingServer;
use cairn_proto::pb::volume_host_server::VolumeHostServer;
use cairn_proto::tls::ClusterTls;
use cairn_proto::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

/// The services this node serves.
pub struct Services {
    pub chunks: ChunkStoreService,
    pub volumes: VolumeHostService,
    pub staging: StagingService,
}

/// A generated tonic server with the message size limit, both ways. (The
/// generated servers share no trait that would let a function do this.)
macro_rules! limited {
    ($server:expr) => {
        $server
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
}

/// Serves `services` on `listener` until `shutdown` turns true (or its
/// sender is dropped), then finishes the calls under way.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    tls: Option<ClusterTls>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.server())?;
    }
    // Nagle's algorithm off on every accepted connection. The builder's own
    // `tcp_nodelay` applies only to listeners it binds itself, not to an
    // incoming stream handed to it: with Nagle on, the small tail of a
    // 512 KiB GetChunk reply (its last bytes and the trailers) waited for the
    // client's delayed ACK, up to 40 ms, for some of the demand fetches of a
    // hydrating volume.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .layer(cairn_proto::trace::RequestIdLayer)
        .add_service(limited!(ChunkStoreServer::new(services.chunks)))
        .add_service(limited!(VolumeHostServer::new(services.volumes)))
        .add_service(limited!(SnapshotStagingServer::new(services.staging)))
        .serve_with_incoming_shutdown(cairn_proto::accept::paced(incoming), async move {
            // A dropped sender also means shut down.
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}
