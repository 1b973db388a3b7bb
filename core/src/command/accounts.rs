//! Accounts and access keys: created, and keys revoked. Ids are chosen by
//! the proposer (random), so every member applies alike; a taken id or
//! account name is refused rather than overwritten.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::records::{AccessKey, Account, ClusterSecret, KeyState, RecordKey};

impl Records {
    pub(super) fn create_account(&mut self, a: Account) -> CommandResult {
        if self.accounts.contains_key(&a.id) {
            return Err(MetaError::AccountExists(format!("An account with id {} exists.", a.id)));
        }
        if self.accounts.values().any(|o| o.name == a.name) {
            return Err(MetaError::AccountExists(format!("An account named '{}' exists.", a.name)));
        }
        self.dirty.insert(RecordKey::Account(a.id.clone()));
        self.accounts.insert(a.id.clone(), a.clone());
        Ok(CommandOutput::Account(a))
    }

    pub(super) fn create_access_key(&mut self, k: AccessKey) -> CommandResult {
        if !self.accounts.contains_key(&k.account_id) {
            return Err(MetaError::AccountNotFound(k.account_id));
        }
        if self.access_keys.contains_key(&k.id) {
            return Err(MetaError::AccountExists(format!("The access key {} exists.", k.id)));
        }
        self.dirty.insert(RecordKey::AccessKey(k.id.clone()));
        self.access_keys.insert(k.id.clone(), k.clone());
        Ok(CommandOutput::AccessKey(k))
    }

    pub(super) fn ensure_secret(&mut self, s: ClusterSecret) -> CommandResult {
        if let Some(existing) = self.secrets.get(&s.name) {
            return Ok(CommandOutput::Secret(existing.clone()));
        }
        self.dirty.insert(RecordKey::ClusterSecret(s.name.clone()));
        self.secrets.insert(s.name.clone(), s.clone());
        Ok(CommandOutput::Secret(s))
    }

    pub(super) fn revoke_access_key(&mut self, id: &str, at_ms: u64) -> CommandResult {
        let k = self
            .access_keys
            .get_mut(id)
            .ok_or_else(|| MetaError::AccessKeyNotFound(id.to_string()))?;
        if k.state == KeyState::Active {
            k.state = KeyState::Revoked;
            k.revoked_ms = Some(at_ms);
            self.dirty.insert(RecordKey::AccessKey(id.to_string()));
        }
        Ok(CommandOutput::AccessKey(self.access_keys[id].clone()))
    }
}
