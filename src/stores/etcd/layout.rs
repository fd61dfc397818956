//! Where a lock lives in etcd: the key names of holdings and markers, the value cadenas
//! writes, and how the keys found under a lock's prefix are read.

use etcd_client::KeyValue;
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, StoreErrorKind};

/// The separator between a lock's name and the names of its holding keys, as in etcd's lock
/// recipe (`NAME/<lease id>`).
pub(super) const SEPARATOR: u8 = b'/';

/// Where the end of a holding is recorded: `\0cadenas/ended/<holding key>`. A NUL byte
/// starts no key of a lock (lock keys are UTF-8 without NUL), so these never mix with locks.
const ENDED: &[u8] = b"\0cadenas/ended/";

/// The prefix every holding key of lock `key` starts with: `key/`.
pub(super) fn prefix(key: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(key.len() + 1);
    p.extend_from_slice(key.as_bytes());
    p.push(SEPARATOR);
    p
}

/// The holding key of lock `key` named `id` (a lease id or, without lease, a random number,
/// in lowercase hex as Go's `concurrency.Mutex` writes it).
pub(super) fn holding_key(key: &str, id: u64) -> Vec<u8> {
    let mut k = prefix(key);
    k.extend_from_slice(format!("{id:x}").as_bytes());
    k
}

/// The marker recording that holding `name` ended by release, force release, take-over or
/// cancellation, or that an expiry watcher reported its expiry. Holding names are never
/// reused (lease ids are unique, other names random).
pub(super) fn ended_key(name: &[u8]) -> Vec<u8> {
    let mut k = ENDED.to_vec();
    k.extend_from_slice(name);
    k
}

/// The value of a holding key cadenas writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// Marks the value as cadenas' (and its layout version).
    pub cadenas: u32,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The ttl the lease was granted for, in whole seconds (`0`: no lease), so that an extend
    /// with the same ttl keeps the lease alive instead of granting a new one.
    #[serde(default)]
    pub lease_secs: i64,
}

impl Record {
    pub fn new(owner: &str, metadata: Option<&str>, lease_secs: i64) -> Record {
        Record {
            cadenas: 1,
            owner: owner.to_owned(),
            metadata: metadata.map(str::to_owned),
            lease_secs,
        }
    }

    pub fn to_value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }
}

/// Who holds a key, as read from etcd.
#[derive(Debug, Clone)]
pub(super) struct Holding {
    /// The etcd key of the holding (`NAME/<id>`).
    pub name: Vec<u8>,
    /// Its create revision: the fence.
    pub revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
    /// What cadenas wrote, or `None` for a holder of etcd's own lock recipe (`etcdctl lock`,
    /// Go's `concurrency.Mutex`, an election candidate): a key with a lease and another value.
    pub record: Option<Record>,
}

impl Holding {
    /// The owner to show: cadenas' owner, or `etcd-lease:<id>` for a holder of the recipe.
    pub fn owner(&self) -> String {
        match &self.record {
            Some(r) => r.owner.clone(),
            None => format!("etcd-lease:{:x}", self.lease),
        }
    }

    /// Whether `owner` holds it through cadenas.
    pub fn is_owned_by(&self, owner: &str) -> bool {
        self.record.as_ref().is_some_and(|r| r.owner == owner)
    }

    pub fn metadata(&self) -> Option<String> {
        self.record.as_ref().and_then(|r| r.metadata.clone())
    }

    pub fn fence(&self) -> u64 {
        self.revision as u64
    }
}

/// The holding keys of lock `key` among `kvs` (keys under `key/`, as etcd returned them):
/// those directly under `key/` (`key/a/b` belongs to lock `key/a`), lowest create revision
/// first. The first is the holder; the others wait (a `concurrency.Mutex` queues its waiters'
/// keys). A key cadenas cannot read and that has no lease is foreign data: an error.
pub(super) fn holdings(key: &str, kvs: &[KeyValue]) -> Result<Vec<Holding>, StoreError> {
    let p = prefix(key);
    let mut found = Vec::new();
    for kv in kvs {
        let Some(rest) = kv.key().strip_prefix(p.as_slice()) else {
            continue;
        };
        if rest.is_empty() || rest.contains(&SEPARATOR) {
            continue;
        }
        found.push(read(key, kv)?);
    }
    found.sort_by_key(|h| h.revision);
    Ok(found)
}

/// One holding key.
pub(super) fn read(key: &str, kv: &KeyValue) -> Result<Holding, StoreError> {
    let record = serde_json::from_slice::<Record>(kv.value())
        .ok()
        .filter(|r| r.cadenas >= 1);
    if record.is_none() && kv.lease() == 0 {
        return Err(foreign(key, kv.key()));
    }
    Ok(Holding {
        name: kv.key().to_vec(),
        revision: kv.create_revision(),
        lease: kv.lease(),
        record,
    })
}

/// The error for a key under a lock's prefix that neither cadenas nor etcd's lock recipe
/// wrote.
pub(super) fn foreign(key: &str, name: &[u8]) -> StoreError {
    StoreError::new(
        StoreErrorKind::Rejected,
        format!(
            "etcd key '{}' holds data that is not a lock: it has no lease and its value is not \
             cadenas' (lock '{key}' keeps its holders under '{key}/'); delete it or use another \
             lock key",
            String::from_utf8_lossy(name)
        ),
    )
}

/// The lock a holding key belongs to: the key without its last `/<id>`.
pub(super) fn lock_of(name: &[u8]) -> Option<&str> {
    let at = name.iter().rposition(|b| *b == SEPARATOR)?;
    if at + 1 == name.len() || name.first() == Some(&0) {
        return None;
    }
    std::str::from_utf8(&name[..at]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_lock_recipe() {
        assert_eq!(holding_key("jobs", 0x694d9b1a2c3f), b"jobs/694d9b1a2c3f");
        assert_eq!(lock_of(b"a/b/694d"), Some("a/b"));
        assert_eq!(lock_of(b"a/"), None);
        assert_eq!(lock_of(&ended_key(b"a/12")), None);
    }

    #[test]
    fn a_record_round_trips() {
        let r = Record::new("me", Some("pid 4"), 30);
        let back: Record = serde_json::from_slice(&r.to_value()).unwrap();
        assert_eq!(back, r);
    }
}
