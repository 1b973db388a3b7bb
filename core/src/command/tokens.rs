//! Idempotency tokens: a client token, scoped by owner, remembers the
//! resource it created and a fingerprint of the request's parameters. A retry
//! with the same token and parameters answers that resource; the same token
//! with other parameters is refused. A token is remembered only once the
//! command that names it is sure to succeed, so a refused command leaves no
//! token behind.

use super::messages::MetaError;
use super::store::Records;
use crate::records::{RecordKey, TokenRecord, RECORD_VERSION};

impl Records {
    fn token_key(owner: &str, token: &str) -> String {
        format!("{owner}/{token}")
    }

    /// The resource a token created before, if any; an error when it was used
    /// with other parameters.
    pub(super) fn token_hit(
        &self,
        owner: &str,
        token: &Option<String>,
        fingerprint: &str,
    ) -> Result<Option<String>, MetaError> {
        let Some(token) = token else { return Ok(None) };
        match self.tokens.get(&Self::token_key(owner, token)) {
            Some(t) if t.fingerprint == fingerprint => Ok(Some(t.resource_id.clone())),
            Some(_) => Err(MetaError::IdempotentParameterMismatch(token.clone())),
            None => Ok(None),
        }
    }

    pub(super) fn remember_token(
        &mut self,
        owner: &str,
        token: Option<String>,
        fingerprint: String,
        id: String,
    ) {
        if let Some(token) = token {
            let key = Self::token_key(owner, &token);
            self.dirty.insert(RecordKey::Token(key.clone()));
            self.tokens.insert(
                key.clone(),
                TokenRecord {
                    version: RECORD_VERSION,
                    key: key.clone(),
                    resource_id: id,
                    fingerprint,
                },
            );
        }
    }
}
