//! What the conformance suite does not cover: the RocksDB store reopened after
//! applies, snapshot installs and corruption.

use anyhow::{bail, Result};
use cairn_core::command::{Command, CommandOutput, Query, QueryOutput};
use cairn_core::records::ChunkNodeInfo;
use cairn_metadata_node::log_store::LogStore;
use cairn_metadata_node::state_machine::StateMachine;
use cairn_metadata_node::store::open_db;
use cairn_metadata_node::typ::{Batch, Entry, LogId, RequestId, WriteRequest};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};
use std::collections::BTreeSet;
use std::path::Path;
use tempfile::TempDir;

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn register(index: u64, name: &str) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Batch(vec![WriteRequest {
            request_id: RequestId { client: 1, seq: index },
            command: Command::RegisterNode(ChunkNodeInfo {
                node_id: name.into(),
                az: "cairn-1a".into(),
                outpost: None,
                grpc_addr: "http://127.0.0.1:1".into(),
                nbd_addr: "127.0.0.1:2".into(),
            }),
        }])),
    }
}

fn membership(index: u64) -> Entry {
    let voters = BTreeSet::from([1u64]);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

fn node_names(sm: &StateMachine) -> Vec<String> {
    let records = sm.records();
    let r = records.read().unwrap_or_else(|e| e.into_inner());
    match r.query(&Query::Nodes) {
        QueryOutput::Nodes(n) => n.into_iter().map(|n| n.node_id).collect(),
        _ => Vec::new(),
    }
}

fn open(dir: &Path) -> Result<(LogStore, StateMachine)> {
    let (db, _closed) = open_db(dir)?;
    Ok((LogStore::open(db.clone(), &dir.join("raft-log"), 1 << 20)?, StateMachine::open(db)?))
}

#[tokio::test]
async fn applied_state_and_snapshot_survive_reopen() -> Result<()> {
    let dir = TempDir::new()?;
    let built = {
        let (_log, mut sm) = open(dir.path())?;
        let out = sm.apply(vec![membership(1), register(2, "a"), register(3, "b")]).await?;
        assert_eq!(out, vec![vec![], vec![Ok(CommandOutput::Done)], vec![Ok(CommandOutput::Done)]]);
        sm.get_snapshot_builder().await.build_snapshot().await?.meta
    };
    let (_log, mut sm) = open(dir.path())?;
    let (applied, members) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(3)));
    assert_eq!(members.log_id(), &Some(log_id(1)));
    assert_eq!(node_names(&sm), vec!["a", "b"]);
    let current = sm.get_current_snapshot().await?;
    assert_eq!(current.map(|s| s.meta), Some(built));
    Ok(())
}

#[tokio::test]
async fn installed_snapshot_replaces_records_durably() -> Result<()> {
    let (src_dir, dst_dir) = (TempDir::new()?, TempDir::new()?);
    let snapshot = {
        let (_log, mut sm) = open(src_dir.path())?;
        sm.apply(vec![membership(1), register(2, "a"), register(3, "b")]).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    {
        let (_log, mut sm) = open(dst_dir.path())?;
        // Records the snapshot does not have must disappear.
        sm.apply(vec![membership(1), register(2, "stale")]).await?;
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await?;
        assert_eq!(node_names(&sm), vec!["a", "b"]);
    }
    let (_log, mut sm) = open(dst_dir.path())?;
    assert_eq!(node_names(&sm), vec!["a", "b"]);
    assert_eq!(sm.applied_state().await?.0, Some(log_id(3)));
    let current = sm.get_current_snapshot().await?;
    assert_eq!(current.map(|s| s.meta), Some(snapshot.meta));
    Ok(())
}

#[tokio::test]
async fn corrupt_values_are_errors_not_defaults() -> Result<()> {
    let dir = TempDir::new()?;
    {
        let (db, _closed) = open_db(dir.path())?;
        let meta = db.cf_handle("meta").ok_or_else(|| anyhow::anyhow!("no meta cf"))?;
        // Another format version in front of a vote.
        db.put_cf(meta, b"vote", [0u8, 99, 1, 2, 3])?;
        let sm = db.cf_handle("sm").ok_or_else(|| anyhow::anyhow!("no sm cf"))?;
        db.put_cf(sm, b"n/x", [0u8])?;
    }
    let (db, _closed) = open_db(dir.path())?;
    let mut log = LogStore::open(db.clone(), &dir.path().join("raft-log"), 1 << 20)?;
    if log.read_vote().await.is_ok() {
        bail!("a vote of an unknown version was read");
    }
    assert!(StateMachine::open(db).is_err(), "a corrupt record was loaded");
    Ok(())
}

/// Request `seq` of client 9: create volume `id`.
fn create_volume_entry(index: u64, seq: u64, id: &cairn_core::VolumeId) -> Entry {
    use cairn_core::records::{Volume, VolumeState, RECORD_VERSION};
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Batch(vec![WriteRequest {
            request_id: RequestId { client: 9, seq },
            command: Command::CreateVolume {
                volume: Volume {
                    version: RECORD_VERSION,
                    id: id.clone(),
                    owner: "000000000000".into(),
                    size_gib: 1,
                    az: "cairn-1a".into(),
                    outpost: None,
                    host_node: "a".into(),
                    volume_type: "gp3".into(),
                    iops: None,
                    throughput: None,
                    encrypted: false,
                    state: VolumeState::Available,
                    create_time_ms: 1,
                    snapshot_id: None,
                    tags: Default::default(),
                },
                client_token: None,
            },
        }])),
    }
}

fn volume_count(sm: &StateMachine) -> usize {
    let records = sm.records();
    let r = records.read().unwrap_or_else(|e| e.into_inner());
    match r.query(&Query::Volumes) {
        QueryOutput::Volumes(v) => v.len(),
        _ => 0,
    }
}

#[tokio::test]
async fn a_retried_request_applies_once_across_reopen_and_snapshot() -> Result<()> {
    let (dir, other) = (TempDir::new()?, TempDir::new()?);
    let (first, second) = (cairn_core::VolumeId::generate(), cairn_core::VolumeId::generate());
    let snapshot = {
        let (_log, mut sm) = open(dir.path())?;
        let out = sm.apply(vec![membership(1), create_volume_entry(2, 1, &first)]).await?;
        // The same request again (a retry that was committed twice) answers
        // the first result and creates nothing, even with another body.
        let again = sm.apply(vec![create_volume_entry(3, 1, &second)]).await?;
        assert_eq!(again[0], out[1]);
        assert_eq!(volume_count(&sm), 1);
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    // After a reopen, the table is still there.
    let (_log, mut sm) = open(dir.path())?;
    sm.apply(vec![create_volume_entry(4, 1, &second)]).await?;
    assert_eq!(volume_count(&sm), 1);
    // And a member restored from the snapshot deduplicates too.
    let (_log, mut sm) = open(other.path())?;
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await?;
    sm.apply(vec![create_volume_entry(4, 1, &second)]).await?;
    assert_eq!(volume_count(&sm), 1);
    sm.apply(vec![create_volume_entry(5, 2, &second)]).await?;
    assert_eq!(volume_count(&sm), 2);
    Ok(())
}
