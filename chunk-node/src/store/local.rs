//! This node's own chunk store, named as placement knows it: the copy
//! stores its local replicas through it, and the restore reads local chunks
//! from it, instead of calling gRPC to this very node.

use crate::store::chunk_store::ChunkStore;

/// A chunk node's own store and the node id placement knows it by.
#[derive(Clone)]
pub struct LocalStore {
    pub node_id: String,
    pub store: ChunkStore,
}
