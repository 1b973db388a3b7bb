//! A three-member group in one process, on port-0 listeners: bootstrap, writes
//! and linearizable reads through the shared `MetadataClient`, a domain refusal,
//! leader failover, a restart that catches up by snapshot, and a restart of all.

use anyhow::{bail, Context, Result};
use cairn_core::command::{Command, CommandOutput, MetaError, Query, QueryOutput};
use cairn_core::ids::VolumeId;
use cairn_core::records::{ChunkNodeInfo, Volume, VolumeState, RECORD_VERSION};
use cairn_metadata_node::{MetadataConfig, MetadataNode, NodeId};
use cairn_proto::pb::metadata_client::MetadataClient as PbMetadataClient;
use cairn_proto::pb::{InitRequest, MemberInfo, StatusRequest};
use cairn_proto::MetadataClient;
use openraft::ServerState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(15);

fn config(id: NodeId, dir: &Path) -> MetadataConfig {
    MetadataConfig {
        // Snapshot often and keep no log below it, so a member that was down
        // for a few writes must be sent a snapshot.
        snapshot_logs: 10,
        keep_logs_after_snapshot: 0,
        ..MetadataConfig::for_test(id, dir)
    }
}

async fn start(id: NodeId, dir: &Path, listener: TcpListener) -> Result<MetadataNode> {
    Ok(MetadataNode::start(config(id, dir), listener).await?)
}

/// Binds the port a member had before, retrying briefly while the OS releases it.
async fn rebind(addr: SocketAddr) -> Result<TcpListener> {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context(format!("rebinding {addr}")),
        }
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn chunk_node(n: u32) -> ChunkNodeInfo {
    ChunkNodeInfo {
        node_id: format!("chunk-{n}"),
        az: "cairn-1a".into(),
        outpost: None,
        grpc_addr: format!("http://127.0.0.1:{}", 7000 + n),
        nbd_addr: format!("127.0.0.1:{}", 8000 + n),
    }
}

fn volume(size_gib: u64) -> Volume {
    Volume {
        version: RECORD_VERSION,
        id: VolumeId::generate(),
        owner: "000000000000".into(),
        size_gib,
        az: "cairn-1a".into(),
        outpost: None,
        host_node: "chunk-1".into(),
        volume_type: "gp3".into(),
        iops: None,
        throughput: None,
        encrypted: false,
        state: VolumeState::Available,
        create_time_ms: 1,
        snapshot_id: None,
        tags: BTreeMap::new(),
    }
}

/// Creates a volume through the client and returns it as the group stored it.
async fn create_volume(client: &MetadataClient, size_gib: u64) -> Result<Volume> {
    let v = volume(size_gib);
    match client.write(&Command::CreateVolume { volume: v.clone(), client_token: None }).await? {
        Ok(CommandOutput::Volume(stored)) if stored == v => Ok(stored),
        other => bail!("unexpected CreateVolume result {other:?}"),
    }
}

async fn volumes(client: &MetadataClient) -> Result<Vec<Volume>> {
    match client.read(&Query::Volumes).await? {
        QueryOutput::Volumes(v) => Ok(v),
        other => bail!("unexpected query output {other:?}"),
    }
}

/// What a member has applied, as queries see it.
fn local_state(node: &MetadataNode) -> (QueryOutput, QueryOutput, QueryOutput) {
    let r = node.records().read().unwrap_or_else(|e| e.into_inner());
    (r.query(&Query::Nodes), r.query(&Query::Volumes), r.query(&Query::Snapshots))
}

/// Waits until one running member leads and every running member follows it.
async fn wait_leader(nodes: &[Option<MetadataNode>]) -> Result<NodeId> {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics: Vec<_> =
            nodes.iter().flatten().map(|n| n.raft().metrics().borrow().clone()).collect();
        let leader = metrics.iter().find(|m| m.state == ServerState::Leader).map(|m| m.id);
        if let Some(l) = leader {
            if metrics.iter().all(|m| m.current_leader == Some(l)) {
                return Ok(l);
            }
        }
        if Instant::now() > deadline {
            bail!("no stable leader within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every member applied what the leader applied, then checks they
/// all hold the same records.
async fn wait_converged(nodes: &[&MetadataNode], leader: &MetadataNode) -> Result<()> {
    let applied = leader.raft().metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
    for n in nodes {
        n.raft().wait(Some(WAIT)).applied_index_at_least(Some(applied), "caught up").await?;
    }
    let want = local_state(leader);
    for n in nodes {
        assert_eq!(local_state(n), want, "member {} differs from the leader", n.id());
    }
    Ok(())
}

fn node(nodes: &[Option<MetadataNode>], i: usize) -> Result<&MetadataNode> {
    nodes[i].as_ref().context("member is stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_fail_over_and_restart() -> Result<()> {
    let dirs = [TempDir::new()?, TempDir::new()?, TempDir::new()?];
    let mut addrs = Vec::new();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        nodes.push(Some(start(i as NodeId + 1, dir.path(), listener).await?));
    }
    let urls: Vec<String> = addrs.iter().map(|a| url(*a)).collect();
    let members: Vec<(NodeId, String)> =
        urls.iter().enumerate().map(|(i, u)| (i as NodeId + 1, u.clone())).collect();

    node(&nodes, 0)?.initialize(members.clone()).await?;
    let leader = wait_leader(&nodes).await?;
    // Initialize again, through the RPC on another member: harmless.
    let mut rpc = PbMetadataClient::connect(urls[1].clone()).await?;
    let init = members
        .iter()
        .map(|(id, addr)| MemberInfo { node_id: *id, addr: addr.clone(), voter: true })
        .collect();
    rpc.initialize(InitRequest { members: init }).await?;
    let status = rpc.status(StatusRequest {}).await?.into_inner();
    assert_eq!((status.node_id, status.leader_id), (2, leader));
    assert_eq!(status.leader_addr, urls[(leader - 1) as usize]);
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.voter));
    let want_state = if leader == 2 { "leader" } else { "follower" };
    assert_eq!(status.state, want_state);

    let client = MetadataClient::new(urls.clone()).with_deadline(WAIT);
    assert_eq!(client.write(&Command::RegisterNode(chunk_node(1))).await?, Ok(CommandOutput::Done));
    let v1 = create_volume(&client, 8).await?;
    assert_eq!(volumes(&client).await?, vec![v1.clone()]);
    assert_eq!(client.read(&Query::Nodes).await?, QueryOutput::Nodes(vec![chunk_node(1)]));

    // A domain refusal is a result, not a transport error.
    let unknown = VolumeId::generate();
    assert_eq!(
        client.write(&Command::DeleteVolume { id: unknown.clone() }).await?,
        Err(MetaError::VolumeNotFound(unknown.to_string()))
    );

    // Stop the leader; the others elect a new one and the client finds it.
    let old = (leader - 1) as usize;
    let stopped = nodes[old].take().context("leader already stopped")?;
    let stopped_log = stopped.raft().metrics().borrow().last_log_index.unwrap_or(0);
    stopped.shutdown().await;
    let new_leader = wait_leader(&nodes).await?;
    assert_ne!(new_leader, leader);
    let v2 = create_volume(&client, 16).await?;
    // Enough writes that the new leader snapshots and purges past what the
    // stopped member has.
    for n in 2..=25 {
        assert_eq!(
            client.write(&Command::RegisterNode(chunk_node(n))).await?,
            Ok(CommandOutput::Done)
        );
    }
    let new_raft = node(&nodes, (new_leader - 1) as usize)?.raft();
    let applied = new_raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
    new_raft.trigger().purge_log(applied).await?;
    new_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > stopped_log),
            "leader purged the log the stopped member lacks",
        )
        .await?;

    // Restart the stopped member on its old address, from its data: no initialize.
    let listener = rebind(addrs[old]).await?;
    nodes[old] = Some(start(old as NodeId + 1, dirs[old].path(), listener).await?);
    let running: Vec<&MetadataNode> = nodes.iter().flatten().collect();
    wait_converged(&running, node(&nodes, (new_leader - 1) as usize)?).await?;
    // The log it lacked is gone from the leader: it caught up from a snapshot.
    let snap = node(&nodes, old)?.raft().metrics().borrow().snapshot;
    assert!(snap.is_some_and(|s| s.index > stopped_log), "no snapshot on the restarted member");
    let mut want = vec![v1.clone(), v2.clone()];
    want.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    assert_eq!(volumes(&client).await?, want);

    // Stop everyone, start everyone again from disk: the group comes back
    // with every acknowledged write.
    for n in nodes.iter_mut() {
        if let Some(n) = n.take() {
            n.shutdown().await;
        }
    }
    for (i, dir) in dirs.iter().enumerate() {
        let listener = rebind(addrs[i]).await?;
        nodes[i] = Some(start(i as NodeId + 1, dir.path(), listener).await?);
    }
    let leader = wait_leader(&nodes).await?;
    let client = MetadataClient::new(urls).with_deadline(WAIT);
    assert_eq!(volumes(&client).await?, want);
    let v3 = create_volume(&client, 32).await?;
    let running: Vec<&MetadataNode> = nodes.iter().flatten().collect();
    wait_converged(&running, node(&nodes, (leader - 1) as usize)?).await?;
    match client.read(&Query::Volume(v3.id.clone())).await? {
        QueryOutput::Volume(Some(v)) => assert_eq!(v, v3),
        other => bail!("volume {} not found after restart: {other:?}", v3.id),
    }
    assert!(matches!(client.read(&Query::Nodes).await?, QueryOutput::Nodes(n) if n.len() == 25));

    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
    Ok(())
}
