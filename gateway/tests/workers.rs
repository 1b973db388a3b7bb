//! The gateway's background workers: a started gateway lists its three
//! (copy job runner, EBS staging sweeper, volume sweep), the volume sweep
//! runs again and again (it is not a one-off pass at start), and keeps
//! retrying while it cannot read the volumes. The metadata group here is a stand-in that answers every read
//! with nothing (no volumes, no jobs, no snapshots, no nodes).

use cairn_core::command::{Query, Records};
use cairn_gateway::{Gateway, GatewayConfig};
use cairn_proto::pb::metadata_server::{Metadata, MetadataServer};
use cairn_proto::pb::{
    ClientReply, ClientRequest, InitReply, InitRequest, StatusReply, StatusRequest,
};
use cairn_worker::{WorkerState, WorkerStatus};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

const SWEEP: &str = "volume sweep";

/// A metadata group with no records that refuses writes.
struct EmptyGroup;

#[tonic::async_trait]
impl Metadata for EmptyGroup {
    async fn write(&self, _: Request<ClientRequest>) -> Result<Response<ClientReply>, Status> {
        Err(Status::unavailable("this group takes no writes"))
    }

    async fn read(&self, req: Request<ClientRequest>) -> Result<Response<ClientReply>, Status> {
        let q: Query = bincode::deserialize(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // What a group without records answers.
        let out = Records::default().query(&q);
        let data = bincode::serialize(&out).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ClientReply { data, not_leader: false, leader_addr: String::new() }))
    }

    async fn initialize(&self, _: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        Err(Status::unimplemented("initialize"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        Err(Status::unimplemented("status"))
    }
}

/// Serves [`EmptyGroup`] on a port-0 listener; returns its address.
async fn empty_group() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetadataServer::new(EmptyGroup))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

async fn start(metadata: String) -> Gateway {
    let mut config = GatewayConfig::for_test(vec![metadata]);
    config.metadata_deadline_ms = 1500;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nbd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Gateway::start(config, http, nbd).await.unwrap()
}

/// Polls `f` every 10 ms until it holds (at most 20 s).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn worker<'a>(all: &'a [WorkerStatus], name: &str) -> &'a WorkerStatus {
    all.iter().find(|w| w.name == name).unwrap_or_else(|| panic!("no worker {name}: {all:?}"))
}

/// The body of `GET path`.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[tokio::test]
async fn a_started_gateway_lists_its_workers_and_the_volume_sweep_keeps_sweeping() {
    let gw = start(empty_group().await).await;
    let mut names: Vec<String> = gw.workers().into_iter().map(|w| w.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "copy job runner",
            "ebs staging sweeper",
            "garbage collector",
            "node watch",
            "re-replication",
            SWEEP
        ]
    );

    until("the sweep ran twice", || worker(&gw.workers(), SWEEP).steps >= 2).await;
    let sweep = worker(&gw.workers(), SWEEP).clone();
    assert_eq!(sweep.errors, 0, "{sweep:?}");
    assert_ne!(sweep.state, WorkerState::Stopped, "{sweep:?}");
    until("the runner scanned", || worker(&gw.workers(), "copy job runner").steps >= 1).await;
    let runner = worker(&gw.workers(), "copy job runner").clone();
    assert_ne!(runner.state, WorkerState::Stopped, "{runner:?}");

    // The health answer lists them too.
    let body = get(gw.http_addr(), "/_cairn/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    let listed = health["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{body}");
    let sweep = listed.iter().find(|w| w["name"] == SWEEP).unwrap();
    assert_ne!(sweep["state"], "stopped", "{body}");

    gw.shutdown().await;
}

#[tokio::test]
async fn the_volume_sweep_retries_while_the_metadata_group_is_missing() {
    // Port 1 refuses connections: the metadata group is unreachable.
    let gw = start("http://127.0.0.1:1".into()).await;
    until("a failed sweep step", || worker(&gw.workers(), SWEEP).errors >= 1).await;
    let sweep = worker(&gw.workers(), SWEEP).clone();
    assert_ne!(sweep.state, WorkerState::Stopped, "{sweep:?}");
    let error = sweep.last_error.unwrap_or_default();
    assert!(error.contains("cannot read volumes to sweep"), "{error}");
    // Shutdown stops it mid-retry.
    gw.shutdown().await;
}
