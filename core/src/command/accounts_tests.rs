use super::{Command, CommandOutput, MetaError, Query, QueryOutput, Records};
use crate::accounts::{AccessKey, Account, ClusterKey, ClusterSecret, KeyState};
use crate::records::{RecordKey, RECORD_VERSION};

fn account(id: &str, name: &str) -> Account {
    Account { version: RECORD_VERSION, id: id.into(), name: name.into(), created_ms: 1 }
}

fn key(id: &str, account: &str, sealed: Vec<u8>) -> AccessKey {
    AccessKey {
        version: RECORD_VERSION,
        id: id.into(),
        account_id: account.into(),
        sealed_secret: sealed,
        state: KeyState::Active,
        created_ms: 2,
        revoked_ms: None,
    }
}

#[test]
fn accounts_and_keys_are_created_revoked_and_persisted() {
    let mut r = Records::default();
    let ck = ClusterKey::generate();
    let a = account("111122223333", "team-a");
    assert_eq!(r.apply(Command::CreateAccount(a.clone())), Ok(CommandOutput::Account(a.clone())));
    // Same id, or same name: refused, nothing changes.
    let before = r.clone();
    assert!(matches!(
        r.apply(Command::CreateAccount(account("111122223333", "other"))),
        Err(MetaError::AccountExists(_))
    ));
    assert!(matches!(
        r.apply(Command::CreateAccount(account("999988887777", "team-a"))),
        Err(MetaError::AccountExists(_))
    ));
    assert_eq!(r.query(&Query::Accounts), before.query(&Query::Accounts));

    let k = key("AKIAAAAAAAAAAAAAAAAA", "111122223333", ck.seal("AKIAAAAAAAAAAAAAAAAA", "secret"));
    assert_eq!(
        r.apply(Command::CreateAccessKey(k.clone())),
        Ok(CommandOutput::AccessKey(k.clone()))
    );
    assert_eq!(
        r.apply(Command::CreateAccessKey(key("AKIABBBBBBBBBBBBBBBB", "000000000000", vec![]))),
        Err(MetaError::AccountNotFound("000000000000".into()))
    );
    let revoked = r.apply(Command::RevokeAccessKey { id: k.id.clone(), at_ms: 9 });
    let Ok(CommandOutput::AccessKey(revoked)) = revoked else { panic!("{revoked:?}") };
    assert_eq!((revoked.state, revoked.revoked_ms), (KeyState::Revoked, Some(9)));
    // Again: unchanged (the first revocation time stays).
    let again = r.apply(Command::RevokeAccessKey { id: k.id.clone(), at_ms: 10 });
    assert_eq!(again, Ok(CommandOutput::AccessKey(revoked.clone())));
    assert_eq!(
        r.apply(Command::RevokeAccessKey { id: "AKIANOPE".into(), at_ms: 1 }),
        Err(MetaError::AccessKeyNotFound("AKIANOPE".into()))
    );

    let dirty = r.take_dirty();
    assert!(dirty.contains(&RecordKey::Account(a.id.clone())));
    assert!(dirty.contains(&RecordKey::AccessKey(k.id.clone())));
    let pairs = r.encode_all();
    let reloaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("loads");
    assert_eq!(
        reloaded.query(&Query::AccessKey(k.id.clone())),
        QueryOutput::AccessKey(Some(revoked))
    );
    assert_eq!(reloaded.query(&Query::Accounts), QueryOutput::Accounts(vec![a]));
    // The secret never appears in clear in what is persisted.
    assert!(pairs.iter().all(|(_, v)| !v.windows(6).any(|w| w == b"secret")));
}

#[test]
fn the_first_secret_proposed_wins() {
    let mut r = Records::default();
    let secret = |v: u8| ClusterSecret {
        version: RECORD_VERSION,
        name: "ebs-tokens".into(),
        value: vec![v; 32],
    };
    assert_eq!(r.apply(Command::EnsureSecret(secret(1))), Ok(CommandOutput::Secret(secret(1))));
    assert_eq!(r.apply(Command::EnsureSecret(secret(2))), Ok(CommandOutput::Secret(secret(1))));
    let pairs = r.encode_all();
    let mut reloaded = Records::load(pairs.iter().map(|(_, v)| v.as_slice())).expect("loads");
    assert_eq!(
        reloaded.apply(Command::EnsureSecret(secret(3))),
        Ok(CommandOutput::Secret(secret(1)))
    );
}
