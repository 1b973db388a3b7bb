//! The gateway's lifecycle: [`Gateway::start`] serves the HTTP application
//! and the NBD front door on listeners it is given and starts the background
//! workers; [`Gateway::shutdown`] stops them all.

use crate::app::app;
use crate::config::{ConfigError, GatewayConfig};
use crate::ctx::Ctx;
use crate::ebs;
use crate::gc;
use crate::gc_state::Gc;
use crate::http::auth::Authenticator;
use crate::http::keys::KeyRing;
use crate::jobs;
use crate::nbd_door::DoorTls;
use crate::nodes::NodeClients;
use crate::repair;
use crate::repair_state::Repair;
use crate::tasks::Jobs;
use axum::serve::ListenerExt;
use cairn_core::accounts::ClusterKey;
use cairn_proto::tls::ClusterTls;
use cairn_proto::MetadataClient;
use cairn_worker::{WorkerStatus, Workers};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster key file {path}: {reason}")]
    ClusterKey { path: String, reason: String },
    #[error("{0}")]
    Tls(#[from] cairn_proto::tls::TlsError),
    #[error("archive store: {0}")]
    Archive(String),
    #[error("dev_any_key accepts any access key, so every listener must be on loopback, not {0}")]
    OpenOffLoopback(SocketAddr),
}

/// How requests are authenticated, as configured.
fn authenticator(
    config: &GatewayConfig,
    meta: &Arc<MetadataClient>,
) -> Result<Authenticator, GatewayError> {
    if config.dev_any_key {
        return Ok(Authenticator::DevAnyKey {
            account_id: config.account_id.clone(),
            region: config.region.clone(),
        });
    }
    let path = &config.cluster_key_file;
    let bad = |reason: String| GatewayError::ClusterKey { path: path.clone(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let key = ClusterKey::from_hex(&text).map_err(|e| bad(e.to_string()))?;
    Ok(Authenticator::Verify {
        region: config.region.clone(),
        keys: Arc::new(KeyRing::new(meta.clone(), key)),
    })
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] leaves its
/// tasks running until the runtime stops.
pub struct Gateway {
    http_addr: SocketAddr,
    nbd_addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    nbd: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Serves the EC2 Query API on `http` and the NBD front door on `nbd`, and
    /// resumes the jobs earlier gateways left unfinished.
    pub async fn start(
        config: GatewayConfig,
        http: TcpListener,
        nbd: TcpListener,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let http_addr = http.local_addr()?;
        let nbd_addr = nbd.local_addr()?;
        if config.dev_any_key {
            if let Some(open) = [http_addr, nbd_addr].into_iter().find(|a| !a.ip().is_loopback()) {
                return Err(GatewayError::OpenOffLoopback(open));
            }
        }
        let tls = match config.tls_dir.as_str() {
            "" => None,
            dir => Some(ClusterTls::load(Path::new(dir))?),
        };
        let meta = Arc::new(
            MetadataClient::new(config.metadata.clone())
                .with_deadline(Duration::from_millis(config.metadata_deadline_ms))
                .with_tls(tls.clone()),
        );
        let auth = Arc::new(authenticator(&config, &meta)?);
        let archive = crate::archive::open(&config).map_err(GatewayError::Archive)?;
        let ctx = Arc::new(Ctx {
            auth,
            config,
            meta,
            nodes: NodeClients::new(tls.clone()),
            jobs: Jobs::default(),
            workers: Workers::new(),
            gc: Gc::default(),
            repair: Repair::default(),
            metrics: Arc::default(),
            live: Default::default(),
            archive,
        });
        let (stop, stopped) = watch::channel(false);
        let signal = move |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which is a stop too.
            let _ = rx.wait_for(|s| *s).await;
        };

        let app = app(ctx.clone());
        let http_signal = signal(stopped.clone());
        let http = tokio::spawn(async move {
            // Nagle off: a reply's last small segment must not wait for the
            // client's delayed ACK (up to 40 ms per EBS direct call).
            let http = http.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not turn Nagle's algorithm off");
                }
            });
            axum::serve(http, app.into_make_service()).with_graceful_shutdown(http_signal).await
        });
        let door_tls = DoorTls::from_cluster(tls.as_ref(), ctx.config.nbd_tls_required)?;
        let nbd = spawn_nbd(nbd, ctx.meta.clone(), door_tls, signal(stopped));
        ebs::spawn_background(&ctx);
        jobs::spawn_workers(&ctx);
        gc::spawn(&ctx);
        repair::spawn(&ctx);
        if let Some(a) = &ctx.archive {
            crate::archive::spawn(&ctx, a);
        }
        tracing::info!(%http_addr, %nbd_addr, region = %ctx.config.region, "gateway started");
        Ok(Gateway { http_addr, nbd_addr, ctx, stop, http, nbd })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn nbd_addr(&self) -> SocketAddr {
        self.nbd_addr
    }

    /// The background workers (copy job runner, EBS staging sweeper, volume
    /// sweep) and what each is doing, by name.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.ctx.workers.list()
    }

    /// Stops serving, stops the workers (each ends its step in flight) and
    /// then the jobs they started (those resume on the next start).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.ctx.workers.shutdown().await;
        self.ctx.jobs.shutdown().await;
        for (name, task) in [("http", self.http), ("nbd", self.nbd)] {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(server = name, error = %e, "server ended with an error")
                }
                Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!(server = name, "server did not stop within 10s; aborting");
                    abort.abort();
                }
            }
        }
        tracing::info!(http_addr = %self.http_addr, "gateway stopped");
    }
}

/// Serves the NBD front door until `shutdown`.
fn spawn_nbd(
    listener: TcpListener,
    meta: Arc<MetadataClient>,
    tls: DoorTls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(crate::nbd_door::serve(listener, meta, tls, shutdown))
}
