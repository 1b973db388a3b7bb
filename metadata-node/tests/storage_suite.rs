//! openraft's storage conformance suite against the segment log store and
//! the RocksDB state machine, each case on a fresh database in its own temporary directory.

use cairn_metadata_node::log_store::LogStore;
use cairn_metadata_node::state_machine::StateMachine;
use cairn_metadata_node::store::open_db;
use cairn_metadata_node::typ::{StorageError, StorageIOError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let (db, _closed) = open_db(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        let sm = StateMachine::open(db.clone()).map_err(|e| StorageIOError::read(&e))?;
        let log = LogStore::open(db, &dir.path().join("raft-log"), 1 << 20)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(RocksBuilder)?;
    Ok(())
}
