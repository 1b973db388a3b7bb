//! Chunk nodes: the registry of every chunk node that announced itself. A
//! node registers on start and again after a restart (its addresses may
//! change); registering replaces the record whole, so the last announcement
//! wins and registering twice is harmless.

use super::messages::{CommandOutput, CommandResult};
use super::store::Records;
use crate::records::{ChunkNodeInfo, RecordKey};

impl Records {
    pub(super) fn register_node(&mut self, n: ChunkNodeInfo) -> CommandResult {
        self.dirty.insert(RecordKey::Node(n.node_id.clone()));
        self.nodes.insert(n.node_id.clone(), n);
        Ok(CommandOutput::Done)
    }
}
