//! The lock item: its attributes, how one is read, and the client clock expiry is judged by.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use super::errors::not_a_lock;
use crate::store::{Holder, LockInfo, StoreError};

/// Verrou's hash key (S).
pub(super) const KEY: &str = "key";
/// Verrou's holder (S); absent on a released item.
pub(super) const OWNER: &str = "owner";
/// Verrou's expiry (N, epoch milliseconds); absent = never expires; [`RELEASED`] on a
/// released item.
pub(super) const EXPIRES_AT: &str = "expires_at";
/// cadenas' fence (N): the last one handed out for the key, kept after release.
pub(super) const FENCE: &str = "fence";
/// cadenas' id of the request that wrote the holding (S).
pub(super) const ATTEMPT: &str = "attempt";
/// cadenas' metadata (S).
pub(super) const METADATA: &str = "metadata";

/// `expires_at` of a released item: long past, so that Verrou's acquire condition and its
/// `exists` check both see the key free.
pub(super) const RELEASED: i64 = 0;

/// The expression attribute names every request declares (each request uses all it
/// declares, as DynamoDB requires).
pub(super) fn names(used: &[&'static str]) -> Option<HashMap<String, String>> {
    Some(
        used.iter()
            .map(|name| (format!("#{name}"), (*name).to_owned()))
            .collect(),
    )
}

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key of item `key`.
pub(super) fn key_of(key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(KEY.to_owned(), s(key))])
}

/// A client clock: the system's, shifted by an offset (tests only).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub offset_ms: i64,
}

impl Clock {
    /// Now in epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now_us() / 1000
    }

    /// Now in epoch microseconds: where the fences of a key start.
    pub fn now_us(&self) -> i64 {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2));
        us + self.offset_ms * 1000
    }
}

/// One item as cadenas reads it.
#[derive(Debug, Clone, Default)]
pub(super) struct Record {
    pub owner: Option<String>,
    pub expires_at: Option<i64>,
    pub fence: Option<u64>,
    pub attempt: Option<String>,
    pub metadata: Option<String>,
}

impl Record {
    /// Reads `item` (of `key`); an attribute of the wrong type is someone else's data.
    pub fn parse(
        store: &str,
        key: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Record, StoreError> {
        let text = |name: &str| match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(not_a_lock(store, key, &format!("{name} is not a string"))),
        };
        let number = |name: &str| match item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| not_a_lock(store, key, &format!("{name} is not an integer"))),
            Some(_) => Err(not_a_lock(store, key, &format!("{name} is not a number"))),
        };
        let record = Record {
            owner: text(OWNER)?,
            expires_at: number(EXPIRES_AT)?,
            fence: number(FENCE)?.map(|f| f.max(0) as u64),
            attempt: text(ATTEMPT)?,
            metadata: text(METADATA)?,
        };
        if record.owner.is_none() && record.expires_at.is_none() {
            // Neither a holding nor a released lock: it would block the key for ever.
            return Err(not_a_lock(store, key, "no owner and no expires_at"));
        }
        Ok(record)
    }

    /// Whether it is a live holding at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.owner.is_some() && self.expires_at.is_none_or(|e| e >= now_ms)
    }

    /// Time left at `now_ms`: `None` = never expires.
    pub fn remaining(&self, now_ms: i64) -> Option<Duration> {
        self.expires_at
            .map(|e| Duration::from_millis(u64::try_from(e - now_ms).unwrap_or(0)))
    }

    /// Who holds it, for a failed acquire (nobody, if it is free by now).
    pub fn holder(&self, now_ms: i64) -> Holder {
        if !self.live(now_ms) {
            return Holder::default();
        }
        Holder {
            owner: self.owner.clone(),
            remaining: self.remaining(now_ms),
        }
    }

    /// The record as a [`LockInfo`] of `key`, `remaining` as given.
    pub fn info(self, key: &str, remaining: Option<Duration>) -> LockInfo {
        LockInfo::new(
            key,
            self.owner.unwrap_or_default(),
            remaining,
            self.fence,
            self.metadata,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn verrou_items_and_released_items() {
        let verrou = item(&[(KEY, s("k")), (OWNER, s("o")), (EXPIRES_AT, n(2_000))]);
        let r = Record::parse("s", "k", &verrou).unwrap();
        assert!(r.live(1_999) && r.live(2_000) && !r.live(2_001));
        assert_eq!(r.remaining(1_500), Some(Duration::from_millis(500)));
        assert_eq!(r.fence, None);
        let forever = item(&[(KEY, s("k")), (OWNER, s("o"))]);
        assert!(Record::parse("s", "k", &forever).unwrap().live(i64::MAX));
        let released = item(&[(KEY, s("k")), (EXPIRES_AT, n(RELEASED)), (FENCE, n(7))]);
        let r = Record::parse("s", "k", &released).unwrap();
        assert!(!r.live(1));
        assert_eq!((r.fence, r.holder(1)), (Some(7), Holder::default()));
    }

    #[test]
    fn foreign_items_are_refused_by_name() {
        let e = |i| Record::parse("s", "k", &i).unwrap_err().to_string();
        let text = e(item(&[(KEY, s("k")), (EXPIRES_AT, s("soon"))]));
        assert!(
            text.contains("'k'") && text.contains("expires_at is not a number"),
            "{text}"
        );
        assert!(e(item(&[(KEY, s("k")), (OWNER, n(1))])).contains("owner is not a string"));
        assert!(e(item(&[(KEY, s("k")), ("data", s("x"))])).contains("no owner"));
    }
}
