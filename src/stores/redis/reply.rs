//! Reading the replies of the scripts: integers, strings, fences, ttls.

use std::time::Duration;

use redis::{FromRedisValue, Value};

use super::conn::{bad_reply, wrong_type};
use crate::store::StoreError;

/// A ttl for the scripts: milliseconds rounded up, at least 1, `0` for "never expires".
pub(super) fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, crate::duration::ttl_millis)
}

/// `PTTL` to a remaining time: `-1` (no expiry) is `None`.
pub(super) fn remaining(pttl: i64) -> Option<Duration> {
    (pttl >= 0).then(|| Duration::from_millis(pttl as u64))
}

pub(super) fn int(key: &str, v: &Value) -> std::result::Result<i64, StoreError> {
    i64::from_redis_value_ref(v).map_err(|_| bad_reply(key, "expected an integer"))
}

pub(super) fn opt_string(
    key: &str,
    v: Option<&Value>,
) -> std::result::Result<Option<String>, StoreError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => String::from_redis_value_ref(v)
            .map(Some)
            .map_err(|_| bad_reply(key, "expected a string")),
    }
}

pub(super) fn opt_fence(
    key: &str,
    v: Option<&Value>,
) -> std::result::Result<Option<u64>, StoreError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => u64::from_redis_value_ref(v)
            .map(Some)
            .map_err(|_| bad_reply(key, "expected a fence")),
    }
}

/// A script's `{-1, type}` answer as an error.
pub(super) fn check_type(key: &str, reply: &[Value]) -> std::result::Result<(), StoreError> {
    if reply.first().map(|v| int(key, v)).transpose()? == Some(-1) {
        let found = opt_string(key, reply.get(1))?.unwrap_or_else(|| "non-string".into());
        return Err(wrong_type(key, &found));
    }
    Ok(())
}
