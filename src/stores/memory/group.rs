//! Keys held by several at once in the memory store: the readers of a read-write lock, the
//! permit holders of a semaphore, and the markers of writers waiting for a key.
//!
//! A key's group lives beside the map of exclusive entries, so the plain mutex pays nothing
//! for it: an exclusive acquire looks at the groups only when some exist. Every operation on
//! a group is part of the one critical section of its store operation.

use std::time::Duration;

use super::{Entry, State, NEVER};
use crate::store::{
    Acquire, AcquireRequest, Holder, HolderInfo, Lease, LockInfo, LockKind, StoreError,
    StoreErrorKind,
};

/// The holders of one key held by readers or by permits of a semaphore.
#[derive(Debug)]
pub(super) struct Group {
    kind: LockKind,
    /// Sorted by fence (holders join with ever larger fences).
    holders: Vec<Entry>,
}

/// A writer waiting for a key: while it lives, other owners' readers wait.
#[derive(Debug)]
pub(super) struct Waiting {
    owner: Box<str>,
    expires: u64,
}

fn held_by(e: &Entry, now: u64) -> Holder {
    Holder {
        owner: Some(e.owner.to_string()),
        remaining: e.remaining(now),
    }
}

impl Group {
    /// Drops expired holders, handing them to `expired` (the expiry watcher's).
    fn prune(&mut self, now: u64, mut expired: impl FnMut(Entry)) {
        if self.holders.iter().all(|e| e.live(now)) {
            return;
        }
        for e in std::mem::take(&mut self.holders) {
            if e.live(now) {
                self.holders.push(e);
            } else {
                expired(e);
            }
        }
    }

    fn info(&self, key: &str, now: u64) -> Option<LockInfo> {
        let holders = self
            .holders
            .iter()
            .filter(|e| e.live(now))
            .map(|e| {
                HolderInfo::new(
                    &*e.owner,
                    e.remaining(now),
                    Some(e.fence),
                    e.metadata.as_deref().map(str::to_owned),
                )
            })
            .collect();
        LockInfo::group(key, self.kind, holders)
    }

    /// The live holder that frees a place first: what a waiter should time its wait by.
    fn first_to_end(&self, now: u64) -> Option<Holder> {
        self.holders
            .iter()
            .filter(|e| e.live(now))
            .min_by_key(|e| e.expires)
            .map(|e| held_by(e, now))
    }

    fn find_mut(&mut self, owner: &str, now: u64) -> Option<&mut Entry> {
        self.holders
            .iter_mut()
            .find(|e| e.live(now) && &*e.owner == owner)
    }
}

impl State {
    /// A live holder of `key`'s group, if the key is held by readers or permits.
    pub(super) fn group_holder(&self, key: &str, now: u64) -> Option<Holder> {
        self.groups.get(key).and_then(|g| g.first_to_end(now))
    }

    /// Records (or refreshes) `owner`'s writer-waiting marker on `key` for `lease`, unless
    /// another writer's live marker is there.
    pub(super) fn mark_writer(&mut self, key: &str, owner: &str, lease: Duration, now: u64) {
        let expires = now.saturating_add(lease.as_nanos() as u64).min(NEVER - 1);
        match self.waiting.get_mut(key) {
            Some(w) if w.expires > now && &*w.owner != owner => {}
            Some(w) => {
                w.owner = owner.into();
                w.expires = expires;
            }
            None => {
                self.waiting.insert(
                    key.into(),
                    Waiting {
                        owner: owner.into(),
                        expires,
                    },
                );
            }
        }
    }

    /// Clears `owner`'s writer-waiting marker on `key` (it took the key), and expired ones.
    pub(super) fn unmark_writer(&mut self, key: &str, owner: &str, now: u64) {
        if self
            .waiting
            .get(key)
            .is_some_and(|w| &*w.owner == owner || w.expires <= now)
        {
            self.waiting.swap_remove(key);
        }
    }

    /// `try_acquire` of a shared or permit holding. Answers whether another waiter may
    /// follow it in (room is left), so the store passes the wake-up on.
    pub(super) fn acquire_in_group(
        &mut self,
        request: &AcquireRequest<'_>,
        now: u64,
        expires: u64,
    ) -> Result<(Acquire, bool), StoreError> {
        let key = request.key;
        if let Some(e) = self.live(key, now) {
            return Ok((Acquire::Held(held_by(e, now)), false));
        }
        if request.kind == LockKind::Shared {
            match self.waiting.get(key) {
                Some(w) if w.expires > now && &*w.owner != request.owner => {
                    let remaining = (w.expires != NEVER)
                        .then(|| Duration::from_nanos(w.expires.saturating_sub(now)));
                    let holder = Holder {
                        owner: Some(w.owner.to_string()),
                        remaining,
                    };
                    return Ok((Acquire::Held(holder), false));
                }
                _ => {}
            }
        }
        let (watched, room) = (self.watched, self.expired_room());
        let mut kept = Vec::new();
        let group = self.groups.entry(key.into()).or_insert_with(|| Group {
            kind: request.kind,
            holders: Vec::new(),
        });
        group.prune(now, |e| {
            if watched && kept.len() < room {
                kept.push(e)
            }
        });
        if group.holders.is_empty() {
            group.kind = request.kind;
        }
        let answer = match (group.kind, request.kind) {
            (LockKind::Permits(theirs), LockKind::Permits(ours)) if theirs != ours => {
                Err(StoreError::new(
                    StoreErrorKind::InvalidInput,
                    format!(
                        "its holders use {theirs} permits and this request asks for {ours}; every holder of a semaphore must ask with the same count"
                    ),
                ))
            }
            (theirs, ours) if theirs != ours => Ok(None),
            _ if group.holders.iter().any(|e| &*e.owner == request.owner) => Ok(None),
            (LockKind::Permits(n), _) if group.holders.len() >= n as usize => Ok(None),
            _ => Ok(Some(())),
        };
        let answer = match answer {
            Err(e) => Err(e),
            Ok(None) => {
                let holder = group.first_to_end(now).unwrap_or_default();
                Ok((Acquire::Held(holder), false))
            }
            Ok(Some(())) => {
                self.last_fence += 1;
                let fence = self.last_fence;
                let group = self.groups.get_mut(key).expect("the group was just made");
                group.holders.push(Entry {
                    owner: request.owner.into(),
                    expires,
                    fence,
                    metadata: request.metadata.map(Into::into),
                });
                let room_left = match group.kind {
                    LockKind::Permits(n) => group.holders.len() < n as usize,
                    _ => true,
                };
                let lease = Lease {
                    fence: Some(fence),
                    ttl: request.ttl,
                };
                Ok((Acquire::Acquired(lease), room_left))
            }
        };
        if self.groups.get(key).is_some_and(|g| g.holders.is_empty()) {
            self.groups.swap_remove(key);
        }
        for e in kept {
            self.keep_expired(key.into(), e);
        }
        answer
    }

    fn expired_room(&self) -> usize {
        super::MAX_KEPT_EXPIRED.saturating_sub(self.expired.len())
    }

    /// Releases `owner`'s holding in `key`'s group. Whether it held one.
    pub(super) fn release_in_group(&mut self, key: &str, owner: &str, now: u64) -> bool {
        let Some(group) = self.groups.get_mut(key) else {
            return false;
        };
        let before = group.holders.len();
        group
            .holders
            .retain(|e| !(e.live(now) && &*e.owner == owner));
        let released = group.holders.len() < before;
        if group.holders.iter().all(|e| !e.live(now)) {
            if let Some(g) = self.groups.swap_remove(key) {
                for e in g.holders {
                    self.keep_expired(key.into(), e);
                }
            }
        }
        released
    }

    /// `owner`'s live holding in `key`'s group.
    pub(super) fn group_entry(&mut self, key: &str, owner: &str, now: u64) -> Option<&mut Entry> {
        self.groups.get_mut(key)?.find_mut(owner, now)
    }

    /// Removes `key`'s group; its first live holder, if any was live.
    pub(super) fn remove_group(&mut self, key: &str, now: u64) -> Option<Entry> {
        let group = self.groups.swap_remove(key)?;
        let mut first = None;
        for e in group.holders {
            if first.is_none() && e.live(now) {
                first = Some(e);
            } else if !e.live(now) {
                self.keep_expired(key.into(), e);
            }
        }
        first
    }

    /// What `inspect` shows of `key`'s group.
    pub(super) fn group_info(&self, key: &str, now: u64) -> Option<LockInfo> {
        self.groups.get(key).and_then(|g| g.info(key, now))
    }

    /// What `list` shows of the groups under `prefix`.
    pub(super) fn list_groups(&self, prefix: &str, now: u64) -> Vec<LockInfo> {
        self.groups
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, g)| g.info(k, now))
            .collect()
    }

    /// Removes the expired holders of the groups under `prefix` (and groups left empty, and
    /// expired writer markers), returning the holders.
    pub(super) fn reap_groups(&mut self, prefix: &str, now: u64) -> Vec<LockInfo> {
        let mut out = Vec::new();
        for (k, g) in self
            .groups
            .iter_mut()
            .filter(|(k, _)| k.starts_with(prefix))
        {
            g.prune(now, |e| out.push(e.info(k, now)));
        }
        self.groups.retain(|_, g| !g.holders.is_empty());
        self.waiting.retain(|_, w| w.expires > now);
        out
    }

    /// Cleans one group at the groups' cursor: its expired holders go, and so does the group
    /// when none is left. Keeps abandoned groups from piling up without a scan.
    pub(super) fn sweep_groups(&mut self, now: u64) {
        if self.groups.is_empty() {
            self.waiting.retain(|_, w| w.expires > now);
            return;
        }
        if self.group_cursor >= self.groups.len() {
            self.group_cursor = 0;
        }
        let stale = self
            .groups
            .get_index(self.group_cursor)
            .is_some_and(|(_, g)| g.holders.iter().any(|e| !e.live(now)));
        if stale {
            if let Some((key, mut group)) = self.groups.swap_remove_index(self.group_cursor) {
                let mut kept = Vec::new();
                group.prune(now, |e| kept.push(e));
                for e in kept {
                    self.keep_expired(key.clone(), e);
                }
                if !group.holders.is_empty() {
                    self.groups.insert(key, group);
                }
            }
        } else {
            self.group_cursor += 1;
        }
    }
}
