//! Node states as `Records::apply` keeps them: drain, remove, down and up,
//! the refusals (unknown nodes, the last pickable node of a zone or a
//! destination), and a removed node's registration.

use super::messages::{Command, MetaError, NodeEntry, Query, QueryOutput};
use super::store::Records;
use crate::ids::OutpostId;
use crate::records::{ChunkNodeInfo, NodeState, RecordKey};

fn info(id: &str, az: &str, outpost: Option<&OutpostId>) -> ChunkNodeInfo {
    ChunkNodeInfo {
        node_id: id.into(),
        az: az.into(),
        outpost: outpost.cloned(),
        grpc_addr: format!("http://{id}:1"),
        nbd_addr: format!("{id}:2"),
    }
}

/// Two regional nodes per AZ and one Outpost node.
fn fleet() -> (Records, OutpostId) {
    let op = OutpostId::parse("op-0123456789abcdef0").expect("id");
    let mut r = Records::default();
    for n in [
        info("a1", "cairn-1a", None),
        info("a2", "cairn-1a", None),
        info("b1", "cairn-1b", None),
        info("b2", "cairn-1b", None),
        info("o1", "cairn-1a", Some(&op)),
    ] {
        r.apply(Command::RegisterNode(n)).expect("register");
    }
    (r, op)
}

fn states(r: &Records) -> Vec<(String, NodeState)> {
    match r.query(&Query::NodeStates) {
        QueryOutput::NodeStates(v) => {
            v.into_iter().map(|NodeEntry { info, state, .. }| (info.node_id, state)).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn state(r: &Records, id: &str) -> NodeState {
    states(r).into_iter().find(|(n, _)| n == id).map(|(_, s)| s).expect("listed")
}

fn drain(id: &str) -> Command {
    Command::DrainNode { node_id: id.into(), at_ms: 7 }
}

fn remove(id: &str) -> Command {
    Command::RemoveNode { node_id: id.into(), at_ms: 7 }
}

fn refusal(r: &mut Records, cmd: Command) -> String {
    match r.apply(cmd) {
        Err(MetaError::IncorrectState(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_node_starts_up_and_drain_is_persisted_apart_from_registration() {
    let (mut r, _) = fleet();
    assert!(states(&r).iter().all(|(_, s)| *s == NodeState::Up));
    r.take_dirty();
    r.apply(drain("a1")).expect("drain");
    assert_eq!(state(&r, "a1"), NodeState::Draining);
    let dirty = r.take_dirty();
    assert!(dirty.contains(&RecordKey::NodeState("a1".into())), "{dirty:?}");
    // Draining again is a retry; a restart's registration keeps the state.
    r.apply(drain("a1")).expect("again");
    r.apply(Command::RegisterNode(info("a1", "cairn-1a", None))).expect("re-register");
    assert_eq!(state(&r, "a1"), NodeState::Draining);
    // The state survives a persist and reload.
    let pairs = r.encode_all();
    let loaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("load");
    assert_eq!(state(&loaded, "a1"), NodeState::Draining);
}

#[test]
fn unknown_nodes_are_refused_and_nothing_changes() {
    let (mut r, _) = fleet();
    let before = r.clone();
    for cmd in [
        drain("nope"),
        remove("nope"),
        Command::NodeDown { node_id: "nope".into(), at_ms: 1 },
        Command::NodeUp { node_id: "nope".into(), at_ms: 1 },
    ] {
        assert_eq!(r.apply(cmd), Err(MetaError::NodeNotFound("nope".into())));
    }
    assert_eq!(states(&r), states(&before));
    assert_eq!(
        MetaError::NodeNotFound("nope".into()).to_string(),
        "The chunk node 'nope' is not registered."
    );
}

#[test]
fn draining_the_last_pickable_node_of_a_zone_is_refused() {
    let (mut r, op) = fleet();
    r.apply(drain("a1")).expect("a2 is left in cairn-1a");
    let why = refusal(&mut r, drain("a2"));
    assert!(why.contains("last node of zone cairn-1a"), "{why}");
    assert_eq!(state(&r, "a2"), NodeState::Up);
    let why = refusal(&mut r, drain("o1"));
    assert!(why.contains(&format!("zone {op}")), "{why}");
    // A down node cannot take copies either.
    r.apply(Command::NodeDown { node_id: "b2".into(), at_ms: 1 }).expect("down");
    let why = refusal(&mut r, drain("b1"));
    assert!(why.contains("cairn-1b"), "{why}");
}

#[test]
fn removing_the_last_pickable_node_of_a_destination_is_refused() {
    let (mut r, op) = fleet();
    let why = refusal(&mut r, remove("o1"));
    assert!(why.contains(&format!("Outpost {op}")), "{why}");
    // Removing a whole AZ is allowed (the disks are gone anyway)...
    r.apply(remove("a1")).expect("a1");
    r.apply(remove("a2")).expect("a2");
    r.apply(remove("a2")).expect("a retry");
    r.apply(drain("b1")).expect("b1");
    // ...but not the region's last pickable node.
    let why = refusal(&mut r, remove("b2"));
    assert!(why.contains("the region"), "{why}");
    // Nor draining a removed node.
    let why = refusal(&mut r, drain("a1"));
    assert!(why.contains("removed"), "{why}");
}

#[test]
fn a_removed_node_never_registers_again() {
    let (mut r, _) = fleet();
    r.apply(remove("b1")).expect("remove");
    let why = refusal(&mut r, Command::RegisterNode(info("b1", "cairn-1b", None)));
    assert!(why.contains("new node id"), "{why}");
    assert_eq!(state(&r, "b1"), NodeState::Removed);
    // A fresh id joins as any new node.
    r.apply(Command::RegisterNode(info("b3", "cairn-1b", None))).expect("fresh");
    assert_eq!(state(&r, "b3"), NodeState::Up);
}

#[test]
fn down_and_up_move_only_between_up_and_down() {
    let (mut r, _) = fleet();
    let down = |id: &str| Command::NodeDown { node_id: id.into(), at_ms: 3 };
    let up = |id: &str| Command::NodeUp { node_id: id.into(), at_ms: 4 };
    r.apply(down("a1")).expect("down");
    assert_eq!(state(&r, "a1"), NodeState::Down);
    r.apply(up("a1")).expect("up");
    assert_eq!(state(&r, "a1"), NodeState::Up);
    // Never over the operator's draining or removed.
    r.apply(drain("b1")).expect("drain");
    r.apply(remove("a2")).expect("remove");
    for id in ["b1", "a2"] {
        r.apply(down(id)).expect("kept");
        r.apply(up(id)).expect("kept");
    }
    assert_eq!(state(&r, "b1"), NodeState::Draining);
    assert_eq!(state(&r, "a2"), NodeState::Removed);
    // A down node may be drained or removed.
    r.apply(down("b2")).expect("down");
    r.apply(remove("b2")).expect("remove a down node");
    assert_eq!(state(&r, "b2"), NodeState::Removed);
}
