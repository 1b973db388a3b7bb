//! Single chunk nodes for the chunk node's own tests: a node on port-0
//! listeners in a temp dir (started, or restarted on the same dir), its gRPC
//! clients, and the volume calls those tests make (create, freeze, copy,
//! restore, stats, read back), plus the test images they write.

use crate::{bind, init_logging};
use cairn_chunk_node::{ChunkNode, ChunkNodeConfig};
use cairn_proto::pb;
use cairn_proto::pb::chunk_store_client::ChunkStoreClient;
use cairn_proto::pb::volume_host_client::VolumeHostClient;
use std::path::Path;
use tonic::transport::Channel;

/// A running chunk node and the directory it stores in.
pub struct TestNode {
    pub node: ChunkNode,
    pub dir: tempfile::TempDir,
}

/// Starts a node that registers nowhere, in a new temp dir.
pub async fn start(node_id: &str, az: &str) -> anyhow::Result<TestNode> {
    restart(node_id, az, tempfile::tempdir()?).await
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

/// Creates an empty volume of `size` bytes on `node`.
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

/// Starts a node on an existing data directory (a restart).
pub async fn restart(node_id: &str, az: &str, dir: tempfile::TempDir) -> anyhow::Result<TestNode> {
    start_with(ChunkNodeConfig::for_test(node_id, az, dir.path()), dir).await
}

/// Starts a node with `config`, whose data directory is in `dir`.
pub async fn start_with(
    config: ChunkNodeConfig,
    dir: tempfile::TempDir,
) -> anyhow::Result<TestNode> {
    init_logging();
    let node = ChunkNode::start(config, bind().await?, bind().await?).await?;
    Ok(TestNode { node, dir })
}

/// Freezes `vol` for `snap`, with `parent` as the last completed snapshot.
pub async fn freeze(
    n: &TestNode,
    vol: &str,
    snap: &str,
    parent: &str,
) -> Result<pb::FreezeReply, tonic::Status> {
    let mut c = n.volumes().await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let req = pb::FreezeRequest {
        volume_id: vol.into(),
        snapshot_id: snap.into(),
        parent_snapshot_id: parent.into(),
    };
    Ok(c.freeze(req).await?.into_inner())
}

/// Runs a copy to completion (parent root empty for a full copy); returns
/// every progress message.
pub async fn copy_with_parent(
    n: &TestNode,
    vol: &str,
    snap: &str,
    targets: Vec<pb::StoreNode>,
    rf: u32,
    parent: Option<(&[u8], &str)>,
) -> Result<Vec<pb::CopyProgress>, tonic::Status> {
    let mut client = n.volumes().await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let (root, id) = parent.unwrap_or((&[], ""));
    let req = pb::CopyRequest {
        volume_id: vol.into(),
        snapshot_id: snap.into(),
        targets,
        replication_factor: rf,
        parent_manifest_root: root.to_vec(),
        parent_snapshot_id: id.into(),
        // Unfenced, as a gateway older than epochs calls.
        epoch: 0,
    };
    let mut stream = client.copy(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(p) = stream.message().await? {
        out.push(p);
    }
    Ok(out)
}

/// The counters of `vol` on `n`.
pub async fn volume_stats(n: &TestNode, vol: &str) -> anyhow::Result<pb::VolumeStatsReply> {
    let req = pb::VolumeStatsRequest { volume_id: vol.into() };
    Ok(n.volumes().await?.volume_stats(req).await?.into_inner())
}

/// The whole content of a volume, read through the host.
pub async fn read_all(n: &TestNode, vol: &str) -> anyhow::Result<Vec<u8>> {
    let v = n.node.volumes().get(vol).ok_or_else(|| anyhow::anyhow!("no volume {vol}"))?;
    let mut out = Vec::with_capacity(v.size() as usize);
    let step = 4u64 << 20;
    let mut off = 0;
    while off < v.size() {
        let len = step.min(v.size() - off);
        out.extend(v.read(off, len as usize).await?);
        off += len;
    }
    Ok(out)
}

/// Restores `root` as volume `vol` on `n`.
pub async fn restore(
    n: &TestNode,
    vol: &str,
    size: u64,
    root: &[u8],
    sources: Vec<pb::StoreNode>,
    rf: u32,
) -> anyhow::Result<()> {
    let req = pb::CreateVolumeRequest {
        volume_id: vol.into(),
        size_bytes: size,
        manifest_root: root.to_vec(),
        sources,
        replication_factor: rf,
    };
    n.volumes().await?.create_volume(req).await?;
    Ok(())
}
