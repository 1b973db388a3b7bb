//! Scrub and repair on a node's store: a rotten record is found by a pass,
//! buried (absent to `has`), and rebuilt from a peer holding a good copy,
//! or counted unrepairable when no peer has one.

use cairn_chunk_node::scrub::{Scrub, ScrubConfig, Sources};
use cairn_chunk_node::{ChunkNode, ChunkNodeConfig, ChunkStore, ScrubStatus};
use cairn_core::ChunkId;
use cairn_proto::pb::StoreNode;
use cairn_worker::Workers;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn flip_byte(path: &std::path::Path, at: u64) {
    let f = File::options().read(true).write(true).open(path).expect("open pack");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x55;
    f.write_all_at(&b, at).expect("write");
}

fn chunks() -> Vec<(ChunkId, Vec<u8>)> {
    (0..4u8)
        .map(|i| {
            let data = vec![i + 1; 100_000];
            (ChunkId::of(&data), data)
        })
        .collect()
}

/// Runs a pass now and polls until it is finished; returns its status.
async fn pass(scrub: &Scrub) -> ScrubStatus {
    let n = scrub.request(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrub.status();
        if s.finished >= n && !s.running {
            return s;
        }
        assert!(Instant::now() < deadline, "scrub pass {n} did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store holding `chunks`, the second one rotten, with its scrubber.
async fn rotten_store(
    dir: &std::path::Path,
    sources: Sources,
    workers: &Workers,
) -> (ChunkStore, Scrub) {
    let store = ChunkStore::open(dir).await.expect("open");
    for (id, data) in chunks() {
        store.put(id, data).await.expect("put");
    }
    let (pack, at) = store.locate(&chunks()[1].0).expect("stored");
    flip_byte(&pack, at + 5000);
    let config = ScrubConfig { bytes_per_sec: 0, interval_secs: 0 };
    let scrub = Scrub::start(&store, dir, config, sources, workers).expect("scrub");
    (store, scrub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_copy_is_found_and_rebuilt_from_a_peer() {
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let peer = ChunkNode::start(
        ChunkNodeConfig::for_test("peer", "cairn-1a", peer_dir.path()),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    )
    .await
    .expect("peer");
    for (id, data) in chunks() {
        peer.store().put(id, data).await.expect("put on the peer");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let workers = Workers::new();
    let sources = Sources::Fixed(vec![StoreNode::from(peer.info())]);
    let (store, scrub) = rotten_store(dir.path(), sources, &workers).await;

    let s = pass(&scrub).await;
    // The repaired copy, appended meanwhile, may be checked by the same pass.
    assert!(s.records_checked >= 4, "{s:?}");
    assert_eq!((s.found, s.repaired, s.unrepairable), (1, 1, 0), "{s:?}");
    let (id, data) = &chunks()[1];
    assert_eq!(store.get(*id).await.expect("get").as_ref(), Some(data), "repaired copy reads back");
    assert_eq!(store.has(vec![*id]).await.expect("has"), vec![true]);
    // The next pass finds nothing wrong.
    let s = pass(&scrub).await;
    assert_eq!((s.records_checked, s.found, s.passes_done), (4, 0, 2), "{s:?}");
    workers.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_good_replica_the_rotten_copy_stays_buried_and_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workers = Workers::new();
    let (store, scrub) = rotten_store(dir.path(), Sources::Fixed(Vec::new()), &workers).await;
    let s = pass(&scrub).await;
    assert_eq!((s.found, s.repaired, s.unrepairable), (1, 0, 1), "{s:?}");
    let ids: Vec<ChunkId> = chunks().iter().map(|c| c.0).collect();
    assert_eq!(store.has(ids).await.expect("has"), vec![true, false, true, true]);
    assert_eq!(scrub.repairs(), (0, 1));
    workers.shutdown().await;
    // The finished pass was saved: a restart knows it.
    let status: ScrubStatus = {
        let workers = Workers::new();
        let config = ScrubConfig { bytes_per_sec: 0, interval_secs: 0 };
        let again = Scrub::start(&store, dir.path(), config, Sources::Fixed(Vec::new()), &workers)
            .expect("scrub");
        let s = again.status();
        workers.shutdown().await;
        s
    };
    assert_eq!((status.finished, status.passes_done, status.found), (1, 1, 1));
}
