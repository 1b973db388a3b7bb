//! The table of recent request ids and their results: what makes a retried
//! write apply once.
//!
//! A client that lost the answer to a write (leader killed, connection cut)
//! sends it again with the same [`RequestId`]. The first copy may well have
//! been committed, by the old leader or by the new one that inherited it in
//! its log. Applying a request whose id is in the table returns the result
//! remembered for it and changes nothing else.
//!
//! The table is part of the replicated state: every member fills it while
//! applying the same entries in the same order, it is persisted in the same
//! batch as the records and `last_applied`, and it travels in Raft snapshots,
//! so a new leader (or a member restored from a snapshot) deduplicates too.
//! It is bounded: past [`CAPACITY`] entries the one applied first (lowest
//! log index, then position in the entry's batch) is evicted. The order depends only on the log, so every member
//! evicts alike. A client retries for well under the time the group takes to
//! apply `CAPACITY` other writes, so evicted ids are never retried.

use crate::store::{self, StoreError};
use crate::typ::RequestId;
use cairn_core::command::CommandResult;
use std::collections::{BTreeMap, HashMap};

/// Request ids remembered. At ~2,000 writes/s this is over 15 s of writes,
/// longer than a client's retry deadline.
pub const CAPACITY: usize = 32_768;

/// One remembered request as persisted: under the log index and the
/// position in that entry's batch that applied it.
pub(crate) type StoredRequest = (RequestId, CommandResult);

/// A persisted `(key, value)` pair.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// A change to persist: `(key, Some(value))` to put, `(key, None)` to delete.
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

/// Where a request was applied: log index, position in the entry's batch.
pub type Applied = (u64, u32);

/// The persisted key of a request applied at `at`: both numbers big-endian,
/// so keys sort in apply order.
fn key((index, pos): Applied) -> Vec<u8> {
    let mut k = index.to_be_bytes().to_vec();
    k.extend_from_slice(&pos.to_be_bytes());
    k
}

fn key_applied(key: &[u8]) -> Result<Applied, StoreError> {
    let bytes: [u8; 12] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("request key of {} bytes", key.len())))?;
    let (index, pos) = bytes.split_at(8);
    let index: [u8; 8] = index.try_into().map_err(|_| StoreError::Corrupt("key".into()))?;
    let pos: [u8; 4] = pos.try_into().map_err(|_| StoreError::Corrupt("key".into()))?;
    Ok((u64::from_be_bytes(index), u32::from_be_bytes(pos)))
}

#[derive(Debug, Default)]
pub struct RecentRequests {
    by_id: HashMap<RequestId, (Applied, CommandResult)>,
    by_index: BTreeMap<Applied, RequestId>,
}

impl RecentRequests {
    /// Rebuilds the table from persisted `(key, value)` pairs; a pair that
    /// does not decode is an error.
    pub(crate) fn load<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, StoreError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut t = RecentRequests::default();
        for (k, v) in pairs {
            let index = key_applied(k.as_ref())?;
            let (id, result): StoredRequest = store::decode(v.as_ref())?;
            t.by_index.insert(index, id);
            t.by_id.insert(id, (index, result));
        }
        if t.by_id.len() != t.by_index.len() {
            return Err(StoreError::Corrupt("a request id is stored twice".into()));
        }
        Ok(t)
    }

    /// The result the request got when it was first applied.
    pub fn get(&self, id: &RequestId) -> Option<&CommandResult> {
        self.by_id.get(id).map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers `id`, applied at `index` with `result`, evicting the oldest
    /// entries beyond [`CAPACITY`]; appends what to persist to `changes`.
    pub(crate) fn insert(
        &mut self,
        index: Applied,
        id: RequestId,
        result: CommandResult,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        changes.push((key(index), Some(store::encode(&(id, &result))?)));
        self.by_index.insert(index, id);
        self.by_id.insert(id, (index, result));
        while self.by_id.len() > CAPACITY {
            let Some((old_index, old_id)) = self.by_index.pop_first() else { break };
            self.by_id.remove(&old_id);
            changes.push((key(old_index), None));
        }
        Ok(())
    }

    /// Every entry as persisted, for a Raft snapshot.
    pub(crate) fn encode_all(&self) -> Result<Vec<Pair>, StoreError> {
        self.by_index
            .iter()
            .map(|(index, id)| {
                let result = self.by_id.get(id).map(|(_, r)| r).ok_or_else(|| {
                    StoreError::Corrupt(format!("request {id:?} indexed but not stored"))
                })?;
                Ok((key(*index), store::encode(&(id, result))?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::command::{CommandOutput, MetaError};

    fn id(seq: u64) -> RequestId {
        RequestId { client: 7, seq }
    }

    #[test]
    fn remembers_evicts_oldest_and_round_trips() -> Result<(), StoreError> {
        let mut t = RecentRequests::default();
        let mut changes = Vec::new();
        for i in 0..(CAPACITY as u64 + 3) {
            let result = if i % 2 == 0 {
                Ok(CommandOutput::Done)
            } else {
                Err(MetaError::VolumeNotFound(format!("vol-{i}")))
            };
            t.insert((i / 2 + 10, (i % 2) as u32), id(i), result, &mut changes)?;
        }
        assert_eq!(t.len(), CAPACITY);
        // The three applied first are gone, in log order.
        assert!(t.get(&id(0)).is_none() && t.get(&id(2)).is_none());
        assert_eq!(t.get(&id(3)), Some(&Err(MetaError::VolumeNotFound("vol-3".into()))));
        let deleted: Vec<&Vec<u8>> =
            changes.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
        assert_eq!(deleted, vec![&key((10, 0)), &key((10, 1)), &key((11, 0))]);

        let back = RecentRequests::load(t.encode_all()?)?;
        assert_eq!(back.len(), CAPACITY);
        assert_eq!(back.get(&id(4)), Some(&Ok(CommandOutput::Done)));
        Ok(())
    }

    #[test]
    fn corrupt_entries_are_errors() {
        assert!(RecentRequests::load([(key((1, 0)), vec![0u8, 1, 2])]).is_err());
        assert!(RecentRequests::load([(vec![1u8], vec![0u8])]).is_err());
    }
}
