//! The node's Prometheus metrics, read at each scrape (the `cairn` binary
//! serves them on the node's HTTP listener): the chunk store's chunks,
//! bytes and packs, its capacity tier (packs in the object store, upload
//! backlog, read cache), what garbage collection and scrub found, the volumes it
//! hosts, their hydration backlog and copy reads, and its workers.

use crate::store::ChunkStore;
use crate::volume::host::VolumeHost;
use cairn_worker::metrics::WorkerMetrics;
use cairn_worker::{WorkerStatus, Workers};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

fn gauge(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(value as i64);
    match unit {
        Some(u) => r.register_with_unit(name, help, u, g),
        None => r.register(name, help, g),
    }
}

fn counter(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    match unit {
        Some(u) => r.register_with_unit(name, help, u, c),
        None => r.register(name, help, c),
    }
}

/// A running node's metrics and readiness, for its HTTP listener.
#[derive(Clone)]
pub struct Observer {
    store: ChunkStore,
    host: VolumeHost,
    workers: Workers,
}

impl Observer {
    pub fn new(store: ChunkStore, host: VolumeHost, workers: Workers) -> Observer {
        Observer { store, host, workers }
    }

    pub fn metrics_text(&self) -> String {
        render(&self.store, &self.host, &self.workers.list())
    }

    /// Ready once started: the store and the volume host are open and the
    /// services listen (registration with the metadata group then runs on).
    pub fn is_ready(&self) -> bool {
        true
    }
}

/// The text exposition of a node's metrics now.
pub fn render(store: &ChunkStore, host: &VolumeHost, workers: &[WorkerStatus]) -> String {
    let mut root = Registry::with_prefix("cairn_chunk");
    let s = store.stats();
    {
        let r = root.sub_registry_with_prefix("store");
        gauge(r, "chunks", "Chunks stored", None, s.chunks);
        gauge(r, "stored", "Payload bytes of the chunks stored", Some(Unit::Bytes), s.bytes);
        gauge(r, "packs", "Pack files, the one being appended included", None, s.packs);
        counter(r, "corrupt", "Corrupt records found since the node started", None, s.corrupt);
        counter(
            r,
            "gc_deleted_chunks",
            "Chunks garbage collection deleted since the node started",
            None,
            s.gc_deleted,
        );
        counter(
            r,
            "gc_deleted",
            "Payload bytes garbage collection deleted since the node started",
            Some(Unit::Bytes),
            s.gc_deleted_bytes,
        );
    }
    if let Some(t) = store.tier_stats() {
        let r = root.sub_registry_with_prefix("tier");
        gauge(r, "packs", "Packs in the capacity tier's object store", None, t.packs);
        gauge(r, "stored", "Bytes of the packs in the object store", Some(Unit::Bytes), t.bytes);
        gauge(
            r,
            "upload_backlog",
            "Sealed packs on local disk waiting for upload",
            None,
            t.backlog,
        );
        gauge(r, "cache", "Bytes in the read cache", Some(Unit::Bytes), t.cache.bytes);
        counter(r, "cache_hits", "Segment reads served by the cache", None, t.cache.hits);
        counter(r, "cache_misses", "Segments fetched from the object store", None, t.cache.misses);
    }
    let stats: Vec<_> =
        host.list().iter().filter_map(|(id, _)| host.get(id)).map(|v| v.stats()).collect();
    {
        let r = root.sub_registry_with_prefix("volumes");
        gauge(r, "hosted", "Volumes this node hosts", None, stats.len() as u64);
        let provisioned = stats.iter().map(|v| v.size_bytes).sum();
        gauge(r, "provisioned", "Sum of the hosted volumes' sizes", Some(Unit::Bytes), provisioned);
        let backlog = stats.iter().map(|v| v.total_blocks - v.hydrated_blocks).sum();
        gauge(
            r,
            "hydration_backlog_blocks",
            "Blocks of restored volumes not local yet",
            None,
            backlog,
        );
        let hydrating = stats.iter().filter(|v| v.hydrated_blocks < v.total_blocks).count();
        gauge(r, "hydrating", "Restored volumes still being filled in", None, hydrating as u64);
        let pending = stats.iter().map(|v| v.pending_freezes).sum();
        gauge(r, "pending_freezes", "Frozen images whose copy has not finished", None, pending);
        let read = stats.iter().map(|v| v.copy_blocks_read).sum();
        counter(
            r,
            "copy_read_blocks",
            "Blocks read by snapshot copies since the node started",
            None,
            read,
        );
    }
    WorkerMetrics::register(&mut root).update(workers);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &root);
    out
}
