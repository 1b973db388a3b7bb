//! Chunk nodes: the registry of every chunk node that announced itself, and
//! where each stands (up, draining, removed, down).
//!
//! A node registers on start and again after a restart (its addresses may
//! change); registering replaces its [`ChunkNodeInfo`] whole, so the last
//! announcement wins and registering twice is harmless. Its state is a
//! separate record that registering never touches: a draining node that
//! restarts is still draining, a down node stays down until a gateway sees
//! it answer. A removed node never comes back: its registration is refused
//! (a machine that returns must join under a new node id, as a fresh node).
//!
//! Invariants it keeps: an operator's change (drain, remove) never leaves a
//! zone without a node placement can pick, so every destination keeps a
//! home for its copies: draining the last pickable node of its zone (an AZ
//! of the region, or its Outpost) is refused, and so is removing the last
//! pickable node of its destination (the region, or its Outpost). A
//! gateway's `NodeDown`/`NodeUp` only move between up and down, never over
//! an operator's draining or removed.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::records::{ChunkNodeInfo, NodeState, NodeStateRecord, RecordKey, RECORD_VERSION};

impl Records {
    pub(super) fn register_node(&mut self, n: ChunkNodeInfo) -> CommandResult {
        if self.node_state(&n.node_id).0 == NodeState::Removed {
            return Err(MetaError::IncorrectState(format!(
                "The chunk node '{}' was removed; a removed node never returns. Start it under a new node id (with an empty data directory) to add it as a fresh node.",
                n.node_id
            )));
        }
        self.dirty.insert(RecordKey::Node(n.node_id.clone()));
        self.nodes.insert(n.node_id.clone(), n);
        Ok(CommandOutput::Done)
    }

    pub(super) fn drain_node(&mut self, node_id: &str, at_ms: u64) -> CommandResult {
        let node = self.registered(node_id)?;
        match self.node_state(node_id).0 {
            NodeState::Draining => return Ok(CommandOutput::Done),
            NodeState::Removed => {
                return Err(MetaError::IncorrectState(format!(
                    "The chunk node '{node_id}' was removed; there is nothing to drain."
                )))
            }
            NodeState::Up | NodeState::Down => {}
        }
        let zone = node.zone();
        if !self.others_take_data(&node, |n| n.zone() == zone) {
            return Err(MetaError::IncorrectState(format!(
                "Cannot drain chunk node '{node_id}': it is the last node of zone {zone} that placement can pick, so the copies that zone keeps would have nowhere to go. Add a node to {zone} first."
            )));
        }
        self.set_node_state(node_id, NodeState::Draining, at_ms);
        Ok(CommandOutput::Done)
    }

    pub(super) fn remove_node(&mut self, node_id: &str, at_ms: u64) -> CommandResult {
        let node = self.registered(node_id)?;
        if self.node_state(node_id).0 == NodeState::Removed {
            return Ok(CommandOutput::Done);
        }
        if !self.others_take_data(&node, |n| n.outpost == node.outpost) {
            let dest = match &node.outpost {
                Some(op) => format!("Outpost {op}"),
                None => "the region".to_string(),
            };
            return Err(MetaError::IncorrectState(format!(
                "Cannot remove chunk node '{node_id}': it is the last node of {dest} that placement can pick, so its snapshots would have nowhere to live. Add a node to {dest} first."
            )));
        }
        self.set_node_state(node_id, NodeState::Removed, at_ms);
        Ok(CommandOutput::Done)
    }

    pub(super) fn node_down(&mut self, node_id: &str, at_ms: u64) -> CommandResult {
        self.registered(node_id)?;
        if self.node_state(node_id).0 == NodeState::Up {
            self.set_node_state(node_id, NodeState::Down, at_ms);
        }
        Ok(CommandOutput::Done)
    }

    pub(super) fn node_up(&mut self, node_id: &str, at_ms: u64) -> CommandResult {
        self.registered(node_id)?;
        if self.node_state(node_id).0 == NodeState::Down {
            self.set_node_state(node_id, NodeState::Up, at_ms);
        }
        Ok(CommandOutput::Done)
    }

    fn registered(&self, node_id: &str) -> Result<ChunkNodeInfo, MetaError> {
        self.nodes.get(node_id).cloned().ok_or_else(|| MetaError::NodeNotFound(node_id.to_string()))
    }

    /// True when a node other than `node`, of the same kind `same` picks
    /// out, is one placement can pick.
    fn others_take_data(
        &self,
        node: &ChunkNodeInfo,
        same: impl Fn(&ChunkNodeInfo) -> bool,
    ) -> bool {
        self.nodes.values().any(|n| {
            n.node_id != node.node_id && same(n) && self.node_state(&n.node_id).0.takes_data()
        })
    }

    fn set_node_state(&mut self, node_id: &str, state: NodeState, at_ms: u64) {
        let rec = NodeStateRecord {
            version: RECORD_VERSION,
            node_id: node_id.to_string(),
            state,
            since_ms: at_ms,
        };
        self.dirty.insert(RecordKey::NodeState(node_id.to_string()));
        self.node_states.insert(node_id.to_string(), rec);
    }
}
