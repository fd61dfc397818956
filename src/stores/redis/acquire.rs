//! Acquire: the native path (one `MULTI`: `SET NX GET PX` + `INCR`), and the scripted path
//! that also writes the holding's record.
//!
//! # The lock key's value
//!
//! cadenas writes the owner, a NUL and the attempt id (16 hex digits, random per request):
//! `owner\0attempt`. Owners never contain a NUL, so the owner is the part before the first
//! NUL; a value without one (a Verrou process's, or one of the version before) is all owner.
//! The attempt id lets the clean-up of a cancelled acquire give back exactly what that
//! request took — never an earlier or later holding of the same owner — without a record
//! on the server: the request's own value is the proof.
//!
//! # Why a `MULTI` and not a script
//!
//! A script costs Redis about 20,000 instructions before its first call, and each call
//! inside it about 3,000 more; `SET NX GET PX` and `INCR` in one `MULTI` cost a fraction
//! (BENCHMARKS.md, "Redis server cost per cycle"). A `MULTI` cannot branch, so `INCR` runs
//! whether the `SET` took the key or not: fences have gaps (a failed attempt uses up a
//! number), which the fence contract allows — only strict increase is promised. What a
//! `MULTI` cannot do is write a record naming the new fence (the fence is only known once it
//! has run): so the native path writes none, and inspect, list and take-over cannot report
//! the fence of a holding taken that way; a store opened with `records=true` takes the
//! scripted path for every acquire and can.
//!
//! `SET` with both `NX` and `GET` needs Redis 7.0 (Valkey, Dragonfly and KeyDB have it too).
//! A server that refuses the combination aborts the `MULTI` before running any of it; the
//! store then takes the scripted path for good.

use std::sync::atomic::Ordering;

use redis::{FromRedisValue, RedisResult, Value};

use super::cancel::InFlight;
use super::conn::{bad_reply, op_error};
use super::{check_type, int, keys, opt_fence, opt_string, remaining, scripts, ttl_ms, RedisStore};
use crate::store::{Acquire, AcquireRequest, Holder, Lease, LockKind, StoreError};

/// Fences below this (10^15, a time in microseconds in 2001) come from a counter that was
/// created without the time start: the holder moves the counter up to the server's time
/// first ([`scripts::SEED_FENCE`]).
pub(super) const FENCE_FLOOR: u64 = 1_000_000_000_000_000;

/// The lock key's value for `owner` and an attempt id.
pub(super) fn holding_value(owner: &str, attempt: &str) -> String {
    let mut value = String::with_capacity(owner.len() + 1 + attempt.len());
    value.push_str(owner);
    value.push('\0');
    value.push_str(attempt);
    value
}

/// The owner in a lock key's value (see the module docs).
pub(super) fn owner_of(value: &str) -> &str {
    value.split_once('\0').map_or(value, |(owner, _)| owner)
}

/// A fresh attempt id: 64 random bits as 16 hex digits.
pub(super) fn attempt_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl RedisStore {
    /// [`Store::try_acquire`](crate::Store::try_acquire): the native path unless the
    /// request has metadata or asks to be recorded, the store writes records or takes its
    /// fences from the server's time (Sentinel), or the server lacks `SET NX GET`.
    /// Readers and permit holders take the group script ([`super::group`]).
    pub(super) async fn acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let mut answer = self.acquire_once(&request).await;
        if matches!(&answer, Ok(Acquire::Held(h)) if h.owner.is_none()) {
            // The group that held the key lost its last holder between two steps: free now.
            answer = self.acquire_once(&request).await;
        }
        if matches!(answer, Ok(Acquire::Acquired(_)))
            && request.writer_waiting.is_some()
            && request.kind == LockKind::Exclusive
        {
            self.writer_took(request.key, request.owner).await;
        }
        answer
    }

    async fn acquire_once(&self, request: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let request = *request;
        let attempt = attempt_id();
        let value = holding_value(request.owner, &attempt);
        let mut in_flight = InFlight::new(self, request.key, &value);
        let answer = if request.kind != LockKind::Exclusive {
            self.acquire_group(&request, &attempt).await
        } else if request.metadata.is_none()
            && !request.recorded
            && !self.records
            && self.native.load(Ordering::Relaxed)
        {
            match self.acquire_native(&request, &value).await {
                Err(Native::Unsupported) => {
                    tracing::debug!(
                        "{}: the server refuses SET with NX and GET (Redis < 7.0); acquiring with a script",
                        self.describe
                    );
                    self.native.store(false, Ordering::Relaxed);
                    self.acquire_scripted(&request, &value, &attempt).await
                }
                Err(Native::Failed(e)) => Err(e),
                Ok(answer) => Ok(answer),
            }
        } else {
            self.acquire_scripted(&request, &value, &attempt).await
        };
        match &answer {
            // The request may have taken the key before its answer was lost: the clean-up
            // gives back exactly what it took.
            Err(e) if e.kind == crate::StoreErrorKind::Transient => {}
            _ => in_flight.done(),
        }
        answer
    }

    async fn acquire_native(
        &self,
        request: &AcquireRequest<'_>,
        value: &str,
    ) -> Result<Acquire, Native> {
        let key = request.key;
        let ttl = ttl_ms(request.ttl);
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("GET");
        if ttl > 0 {
            pipe.arg("PX").arg(ttl);
        }
        if self.fences {
            pipe.atomic().cmd("INCR").arg(keys::fence_key(key));
            if self.time_fences {
                pipe.cmd("TIME");
            }
        }
        let replies: Vec<RedisResult<Value>> = match pipe.query_async(&mut self.conn()).await {
            Ok(replies) => replies,
            Err(e) if refuses_nx_get(&e) => return Err(Native::Unsupported),
            Err(e) => return Err(Native::Failed(op_error(Some(key), e))),
        };
        let mut replies = replies.into_iter();
        let set = replies
            .next()
            .ok_or_else(|| bad_reply(key, "no reply to SET"))?;
        let fence = replies.next();
        let time = replies.next();
        match set {
            Err(e) if refuses_nx_get(&e) => Err(Native::Unsupported),
            // Readers or permit holders (or someone else's data): the rare path asks who.
            Err(e) if e.code() == Some("WRONGTYPE") => Ok(self.group_held(request).await?),
            Err(e) => Err(op_error(Some(key), e).into()),
            Ok(Value::Nil) => {
                let fence = match fence {
                    None => None,
                    Some(Ok(v)) => match time {
                        // At least the server's time: the counter of a node that missed
                        // raises, or restarted empty, does not hold the fence back.
                        Some(time) => Some(counted(key, int(key, &v)?)?.max(time_us(key, time)?)),
                        None => Some(self.holder_fence(key, int(key, &v)?).await?),
                    },
                    Some(Err(e)) => {
                        // The key is ours but its counter is not a number: give it back.
                        self.release_attempt(key, value).await;
                        return Err(Native::Failed(StoreError::new(
                            crate::StoreErrorKind::Rejected,
                            format!(
                                "the fence counter {} of the lock '{key}' is not an integer ({e}); it was left untouched: delete it or choose another key",
                                keys::fence_key(key)
                            ),
                        )));
                    }
                };
                Ok(Acquire::Acquired(Lease {
                    fence,
                    ttl: request.ttl,
                }))
            }
            Ok(held) => {
                let held = opt_string(key, Some(&held))?.unwrap_or_default();
                // A holding of cadenas that no waiter marked yet gets marked, so that its
                // release announces itself; the answer is its time left either way.
                let pttl: i64 = if held.contains('\0') && !held.ends_with('\u{1}') {
                    scripts::MARK_WAITING
                        .key(key)
                        .invoke_async(&mut self.conn())
                        .await
                } else {
                    redis::cmd("PTTL")
                        .arg(key)
                        .query_async(&mut self.conn())
                        .await
                }
                .map_err(|e| op_error(Some(key), e))?;
                Ok(Acquire::Held(Holder {
                    owner: Some(owner_of(&held).to_owned()),
                    // `-2`: released since, try again at once.
                    remaining: match pttl {
                        -2 => Some(std::time::Duration::ZERO),
                        pttl => remaining(pttl),
                    },
                }))
            }
        }
    }

    /// The fence of a holding whose `INCR` answered `n`: `n`, unless the counter was new
    /// (below [`FENCE_FLOOR`]), in which case it starts at the server's time first.
    async fn holder_fence(&self, key: &str, n: i64) -> Result<u64, StoreError> {
        let n = counted(key, n)?;
        if n >= FENCE_FLOOR {
            return Ok(n);
        }
        let fence: Value = scripts::SEED_FENCE
            .key(keys::fence_key(key))
            .arg(FENCE_FLOOR)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        opt_fence(key, Some(&fence))?.ok_or_else(|| bad_reply(key, "no fence"))
    }

    async fn acquire_scripted(
        &self,
        request: &AcquireRequest<'_>,
        value: &str,
        attempt: &str,
    ) -> Result<Acquire, StoreError> {
        let key = request.key;
        let reply = scripts::ACQUIRE
            .key(key)
            .key(keys::state_key(key))
            .key(keys::fence_key(key))
            .key(keys::expired_key(key))
            .arg(value)
            .arg(ttl_ms(request.ttl))
            .arg(u8::from(request.metadata.is_some()))
            .arg(request.metadata.unwrap_or_default())
            .arg(attempt)
            .arg(request.owner)
            .arg(u8::from(self.time_fences))
            .arg(u8::from(self.fence_recorded_later))
            .invoke_async::<Vec<Value>>(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        if reply.first().map(|v| int(key, v)).transpose()? == Some(-1)
            && opt_string(key, reply.get(1))?.as_deref() == Some("zset")
        {
            return self.group_held(request).await;
        }
        check_type(key, &reply)?;
        match reply.first().map(|v| int(key, v)).transpose()? {
            Some(1) => Ok(Acquire::Acquired(Lease {
                fence: opt_fence(key, reply.get(1))?,
                ttl: request.ttl,
            })),
            Some(0) => {
                let pttl = reply.get(2).map(|v| int(key, v)).transpose()?.unwrap_or(-1);
                Ok(Acquire::Held(Holder {
                    owner: opt_string(key, reply.get(1))?,
                    remaining: remaining(pttl),
                }))
            }
            _ => Err(bad_reply(key, "unknown acquire status")),
        }
    }
}

/// A fence counter's `INCR` answer as a fence.
fn counted(key: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| bad_reply(key, "a negative fence"))
}

/// The server's `TIME` reply (seconds and microseconds) in microseconds.
fn time_us(key: &str, reply: RedisResult<Value>) -> Result<u64, StoreError> {
    let reply = reply.map_err(|e| op_error(Some(key), e))?;
    let (s, us) = <(u64, u64)>::from_redis_value_ref(&reply)
        .map_err(|_| bad_reply(key, "a TIME reply that is not two numbers"))?;
    Ok(s * 1_000_000 + us)
}

/// Why the native path gave no answer.
enum Native {
    /// The server does not know `SET` with `NX` and `GET`: nothing ran.
    Unsupported,
    Failed(StoreError),
}

impl From<StoreError> for Native {
    fn from(e: StoreError) -> Native {
        Native::Failed(e)
    }
}

/// A refusal of `SET … NX GET` (Redis before 7.0 answers a syntax error, and a `MULTI`
/// holding it aborts with `EXECABORT`) — not a replica's `READONLY`, which aborts the
/// `MULTI` too.
fn refuses_nx_get(e: &redis::RedisError) -> bool {
    !super::sentinel::is_readonly(e)
        && (matches!(e.code(), Some("EXECABORT")) || e.to_string().contains("syntax error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_the_owner_before_the_first_nul() {
        let value = holding_value("me", "00000000000000ff");
        assert_eq!(value, "me\u{0}00000000000000ff");
        assert_eq!(owner_of(&value), "me");
        // A Verrou process's value, or one of the version before: all owner.
        assert_eq!(owner_of("verrou-owner"), "verrou-owner");
        assert_eq!(attempt_id().len(), 16);
        assert_ne!(attempt_id(), attempt_id());
    }
}
