//! Groups on Redis: keys held by readers or by the permit holders of a semaphore
//! ([`group_scripts`](super::group_scripts) has the layout), and the writer-waiting marker.
//!
//! A plain exclusive acquire stays the native `SET NX` (or the scripted one): it finds a
//! group's key taken (`WRONGTYPE`, or a key of another type than string) and only then asks
//! [`GROUP_HELD`] who holds it, recording the waiting writer's marker there.

use std::time::Duration;

use redis::Value;

use super::conn::{bad_reply, op_error, wrong_type};
use super::group_scripts::{ACQUIRE_GROUP, GROUP_HELD, GROUP_RELEASE, UNMARK_WRITER};
use super::{int, keys, opt_fence, opt_string, remaining, ttl_ms, RedisStore};
use crate::store::{
    Acquire, AcquireRequest, Holder, HolderInfo, Lease, LockInfo, LockKind, StoreError,
    StoreErrorKind,
};

/// The most (key, owner) pairs whose writer-waiting marker this store remembers having
/// recorded; beyond, the memory is dropped (a marker then ends with its lease).
const MARKERS_KEPT: usize = 10_000;

/// The answer of a group script that found the key free after pruning: try again.
pub(super) fn free_now() -> Acquire {
    Acquire::Held(Holder {
        owner: None,
        remaining: Some(Duration::ZERO),
    })
}

fn marker_id(key: &str, owner: &str) -> String {
    format!("{key}\0{owner}")
}

impl RedisStore {
    /// `try_acquire` of a shared or permit holding: one script ([`ACQUIRE_GROUP`]).
    pub(super) async fn acquire_group(
        &self,
        request: &AcquireRequest<'_>,
        attempt: &str,
    ) -> Result<Acquire, StoreError> {
        let key = request.key;
        let (kind, n) = match request.kind {
            LockKind::Permits(n) => ("permits", n),
            _ => ("shared", 0),
        };
        let reply: Vec<Value> = ACQUIRE_GROUP
            .key(key)
            .key(keys::group_key(key))
            .key(keys::fence_key(key))
            .key(keys::writer_key(key))
            .arg(request.owner)
            .arg(attempt)
            .arg(ttl_ms(request.ttl))
            .arg(kind)
            .arg(n)
            .arg(u8::from(request.metadata.is_some()))
            .arg(request.metadata.unwrap_or_default())
            .arg(u8::from(self.time_fences))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        super::check_type(key, &reply)?;
        match reply.first().map(|v| int(key, v)).transpose()? {
            Some(1) => {
                if reply.get(2).map(|v| int(key, v)).transpose()? == Some(1) {
                    // Room is left: a release woke one waiter of this process, let the next in.
                    self.notifier.notify(key);
                }
                Ok(Acquire::Acquired(Lease {
                    fence: opt_fence(key, reply.get(1))?,
                    ttl: request.ttl,
                }))
            }
            Some(0) => held(key, &reply),
            Some(-2) => {
                let theirs = opt_string(key, reply.get(1))?.unwrap_or_default();
                Err(StoreError::new(
                    StoreErrorKind::InvalidInput,
                    format!(
                        "its holders use {theirs} permits and this request asks for {n}; every holder of a semaphore must ask with the same count"
                    ),
                ))
            }
            _ => Err(bad_reply(key, "unknown group acquire status")),
        }
    }

    /// An exclusive request whose `SET NX` found `key` of another type than string: who
    /// holds it ([`GROUP_HELD`]), recording the writer-waiting marker the request asks for.
    /// [`free_now`] when the group's last lease ended meanwhile.
    pub(super) async fn group_held(
        &self,
        request: &AcquireRequest<'_>,
    ) -> Result<Acquire, StoreError> {
        let key = request.key;
        let lease = request.writer_waiting.map_or(0, |l| ttl_ms(Some(l)));
        let reply: Vec<Value> = GROUP_HELD
            .key(key)
            .key(keys::group_key(key))
            .key(keys::writer_key(key))
            .arg(request.owner)
            .arg(lease)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        super::check_type(key, &reply)?;
        if reply.get(3).map(|v| int(key, v)).transpose()? == Some(1) {
            let mut markers = self.markers.lock().unwrap_or_else(|e| e.into_inner());
            if markers.len() >= MARKERS_KEPT {
                markers.clear();
            }
            markers.insert(marker_id(key, request.owner));
        }
        held(key, &reply)
    }

    /// A waiting writer took `key`: its writer-waiting marker goes, if it recorded one.
    pub(super) async fn writer_took(&self, key: &str, owner: &str) {
        let recorded = {
            let mut markers = self.markers.lock().unwrap_or_else(|e| e.into_inner());
            !markers.is_empty() && markers.remove(&marker_id(key, owner))
        };
        if !recorded {
            return;
        }
        let cleared = UNMARK_WRITER
            .key(keys::writer_key(key))
            .arg(owner)
            .invoke_async::<i64>(&mut self.conn())
            .await;
        if let Err(e) = cleared {
            tracing::debug!(key = %key, store = %self.describe, error = %e,
                "could not clear a writer-waiting marker; it ends with its lease");
        }
    }

    /// `release` of `owner`'s holding in `key`'s group ([`GROUP_RELEASE`]).
    pub(super) async fn group_release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut script = GROUP_RELEASE.key(key);
        script.key(keys::group_key(key)).arg(owner);
        if let Some(channel) = keys::release_channel_arg(key) {
            script.arg(channel);
        }
        let status: i64 = script
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        if status == -1 {
            return Err(wrong_type(key, "zset"));
        }
        if status == 1 {
            self.notifier.notify(key);
        }
        Ok(status == 1)
    }
}

/// A `{0, holder, pttl, …}` answer.
fn held(key: &str, reply: &[Value]) -> Result<Acquire, StoreError> {
    let owner = opt_string(key, reply.get(1))?;
    if owner.is_none() {
        return Ok(free_now());
    }
    let pttl = reply.get(2).map(|v| int(key, v)).transpose()?.unwrap_or(-1);
    Ok(Acquire::Held(Holder {
        owner,
        remaining: remaining(pttl),
    }))
}

/// The `{2, kind, n, owner, pttl, fence, metadata, …}` answer of `INSPECT`: a group's live
/// holders.
pub(super) fn group_info(key: &str, reply: &[Value]) -> Result<Option<LockInfo>, StoreError> {
    let kind = match opt_string(key, reply.get(1))?.as_deref() {
        Some("permits") => {
            let n = opt_string(key, reply.get(2))?
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| bad_reply(key, "a semaphore without its count"))?;
            LockKind::Permits(n)
        }
        Some("shared") => LockKind::Shared,
        _ => return Err(bad_reply(key, "a group of an unknown kind")),
    };
    let mut holders = Vec::new();
    for h in reply.get(3..).unwrap_or_default().chunks(4) {
        let owner = opt_string(key, h.first())?.ok_or_else(|| bad_reply(key, "no owner"))?;
        let pttl = h.get(1).map(|v| int(key, v)).transpose()?.unwrap_or(-1);
        holders.push(HolderInfo::new(
            owner,
            remaining(pttl),
            opt_fence(key, h.get(2))?,
            opt_string(key, h.get(3))?,
        ));
    }
    Ok(LockInfo::group(key, kind, holders))
}
