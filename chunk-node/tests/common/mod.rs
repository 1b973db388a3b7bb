//! Shared harness for the chunk node's integration tests: nodes on port-0
//! listeners in temp dirs, gRPC clients, and real NBD clients (qemu-utils).

#![allow(dead_code)]

use cairn_chunk_node::{ChunkNode, ChunkNodeConfig};
use cairn_proto::pb;
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_proto::pb::volume_host_client::VolumeHostClient;
use std::path::Path;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct TestNode {
    pub node: ChunkNode,
    pub dir: tempfile::TempDir,
}

pub async fn start(node_id: &str, az: &str) -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let nbd = TcpListener::bind("127.0.0.1:0").await?;
    let config = ChunkNodeConfig::for_test(node_id, az, dir.path());
    let node = ChunkNode::start(config, grpc, nbd).await?;
    Ok(TestNode { node, dir })
}

impl TestNode {
    pub async fn volumes(&self) -> anyhow::Result<VolumeHostClient<Channel>> {
        let ch = Channel::from_shared(self.node.grpc_url().to_string())?.connect().await?;
        Ok(VolumeHostClient::new(ch).max_decoding_message_size(cairn_proto::MAX_MESSAGE_BYTES))
    }

    pub async fn chunks(&self) -> anyhow::Result<ChunkStoreClient<Channel>> {
        let ch = Channel::from_shared(self.node.grpc_url().to_string())?.connect().await?;
        Ok(ChunkStoreClient::new(ch)
            .max_decoding_message_size(cairn_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(cairn_proto::MAX_MESSAGE_BYTES))
    }

    pub fn store_node(&self) -> pb::StoreNode {
        pb::StoreNode::from(self.node.info())
    }

    pub fn nbd_url(&self, volume: &str) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.node.nbd_addr().port(), volume)
    }

    pub async fn stats(&self) -> anyhow::Result<pb::ChunkStatsReply> {
        Ok(self.chunks().await?.stats(pb::ChunkStatsRequest {}).await?.into_inner())
    }
}

/// Runs a command; returns (exit code, stdout + stderr).
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = tokio::process::Command::new(program).args(args).output().await?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Runs a command that must succeed.
pub async fn ok(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let (code, text) = run(program, args).await?;
    anyhow::ensure!(code == 0, "{program} {args:?} exited {code}: {text}");
    Ok(text)
}

/// Writes a file of `size` bytes: pseudo-random data with zero regions
/// (every third 512 KiB block zero) and block 5 equal to block 1.
pub fn write_test_image(path: &Path, size: usize, seed: u64) -> anyhow::Result<Vec<u8>> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    let bs = cairn_core::BLOCK_SIZE;
    for (i, block) in data.chunks_mut(bs).enumerate() {
        if i % 3 == 2 {
            block.fill(0);
        }
    }
    if size >= 6 * bs {
        let (head, tail) = data.split_at_mut(5 * bs);
        tail[..bs].copy_from_slice(&head[bs..2 * bs]);
    }
    // A small zero run inside a data block, to exercise write-zeroes paths.
    if size > 4096 * 3 {
        data[4096..8192].fill(0);
    }
    std::fs::write(path, &data)?;
    Ok(data)
}

pub async fn create_volume(node: &TestNode, id: &str, size: u64) -> anyhow::Result<()> {
    node.volumes()
        .await?
        .create_volume(pb::CreateVolumeRequest {
            volume_id: id.into(),
            size_bytes: size,
            ..Default::default()
        })
        .await?;
    Ok(())
}
