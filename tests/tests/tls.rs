//! A closed cluster network: a metadata member and a chunk node that use
//! mutual TLS with certificates from `cairn admin tls`. Holders of a
//! certificate the cluster CA signed read and write; a client in clear
//! text, or one whose certificate another CA signed, can neither read the
//! metadata group, nor register a chunk node with it, nor put or get a chunk.

use cairn_chunk_node::{ChunkNode, ChunkNodeConfig};
use cairn_core::command::{Command, Query, QueryOutput};
use cairn_core::records::ChunkNodeInfo;
use cairn_core::ChunkId;
use cairn_metadata_node::{MetadataConfig, MetadataNode};
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_proto::pb::{GetChunkRequest, PutChunkRequest};
use cairn_proto::tls::ClusterTls;
use cairn_proto::{chunk_node_channel, MetadataClient};
use cairn_tests::procs::cairn_bin;
use cairn_tests::wait_for;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// Runs `cairn admin tls --ca-dir DIR NAMES...`: the real CA tooling.
fn issue(ca_dir: &Path, names: &[&str]) {
    let out = std::process::Command::new(cairn_bin())
        .args(["admin", "tls", "--ca-dir"])
        .arg(ca_dir)
        .args(names)
        .output()
        .expect("cairn admin tls runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn client(addr: &str, tls: Option<ClusterTls>) -> MetadataClient {
    MetadataClient::new(vec![addr.to_string()]).with_deadline(Duration::from_secs(2)).with_tls(tls)
}

fn intruder_node() -> ChunkNodeInfo {
    ChunkNodeInfo {
        node_id: "intruder".into(),
        az: "cairn-1a".into(),
        outpost: None,
        grpc_addr: "http://127.0.0.1:1".into(),
        nbd_addr: "127.0.0.1:1".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_a_cluster_certificate_join_read_or_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, rogue) = (tmp.path().join("ca"), tmp.path().join("rogue"));
    issue(&ca, &["meta-1", "chunk-1", "admin"]);
    issue(&rogue, &["intruder"]);
    let tls = |dir: &Path, name: &str| ClusterTls::load(&dir.join(name)).unwrap();

    let mut mc = MetadataConfig::new(1, tmp.path().join("meta"));
    mc.tls_dir = Some(ca.join("meta-1"));
    let listener = bind().await;
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let member = MetadataNode::start(mc, listener).await.unwrap();
    member.initialize(vec![(1, addr.clone())]).await.unwrap();

    let admin = client(&addr, Some(tls(&ca, "admin")));
    wait_for("a leader over TLS", Duration::from_secs(30), || async {
        matches!(admin.read(&Query::Nodes).await, Ok(QueryOutput::Nodes(_)))
    })
    .await
    .unwrap();

    // No certificate, or one of another CA: no read, no registration.
    for (what, stranger) in [
        ("clear text", client(&addr, None)),
        ("another CA", client(&addr, Some(tls(&rogue, "intruder")))),
    ] {
        assert!(stranger.read(&Query::Nodes).await.is_err(), "{what} read the group");
        let joined = stranger.write(&Command::RegisterNode(intruder_node())).await;
        assert!(joined.is_err(), "{what} registered a node: {joined:?}");
    }

    // A chunk node with a cluster certificate registers over TLS.
    let mut cc = ChunkNodeConfig::for_test("chunk-1", "cairn-1a", tmp.path().join("chunk"));
    cc.metadata = vec![addr.clone()];
    cc.tls_dir = Some(ca.join("chunk-1"));
    let chunk = ChunkNode::start(cc, bind().await, bind().await).await.unwrap();
    wait_for("the chunk node registers over TLS", Duration::from_secs(30), || async {
        matches!(admin.read(&Query::Nodes).await,
            Ok(QueryOutput::Nodes(n)) if n.iter().any(|n| n.node_id == "chunk-1"))
    })
    .await
    .unwrap();
    let QueryOutput::Nodes(nodes) = admin.read(&Query::Nodes).await.unwrap() else { panic!() };
    assert!(nodes.iter().all(|n| n.node_id != "intruder"), "{nodes:?}");
    let grpc = nodes.iter().find(|n| n.node_id == "chunk-1").unwrap().grpc_addr.clone();

    // Chunk traffic: a cluster certificate puts and gets; the others do neither.
    let data = vec![7u8; 4096];
    let id = ChunkId::of(&data);
    let store = |tls: Option<ClusterTls>| {
        ChunkStoreClient::new(
            chunk_node_channel(&grpc, Some(Duration::from_secs(5)), tls.as_ref()).unwrap(),
        )
    };
    let put = |id: &ChunkId| PutChunkRequest { id: id.0.to_vec(), data: data.clone().into() };
    for (what, tls) in [("clear text", None), ("another CA", Some(tls(&rogue, "intruder")))] {
        let mut s = store(tls);
        assert!(s.put_chunk(put(&id)).await.is_err(), "{what} put a chunk");
        let got = s.get_chunk(GetChunkRequest { id: id.0.to_vec() }).await;
        assert!(got.is_err(), "{what} reached the chunk store");
    }
    let mut s = store(Some(tls(&ca, "admin")));
    assert!(s.put_chunk(put(&id)).await.unwrap().into_inner().stored_new);
    let got = s.get_chunk(GetChunkRequest { id: id.0.to_vec() }).await.unwrap();
    assert_eq!(got.into_inner().data, data);

    chunk.shutdown().await;
    member.shutdown().await;
}
