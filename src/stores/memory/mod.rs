//! The memory store (`memory:`): locks shared by the tasks of one process.
//!
//! - Every operation is one critical section under one mutex: O(1) in the number of locks.
//! - Expiry uses the process's monotonic clock. An expired lock is taken over on the next
//!   acquire of its key; besides, every operation checks two entries at a moving cursor and
//!   removes them if expired, so expired locks are cleaned without a background task and
//!   without scanning every key on any one call.
//! - Fences come from one counter per store, so they strictly increase per key (and across
//!   keys) for the life of the process.
//! - Waiters wake through an in-process notification on release: hand-off needs no polling.
//! - Semaphores and read-write locks: the holders of a key held by readers or by permits
//!   live in a map of groups beside the exclusive entries, so an exclusive acquire looks at
//!   it only when some group exists; a writer that waits records a marker (with its own
//!   expiry) that holds new readers back. A reader or permit holder that gets in while room
//!   is left wakes the next waiter.
//! - The expiry watcher ([`Store::reap_expired`]) sees every expiry: once a watcher has run,
//!   expired entries removed by the cleaning or replaced by a takeover are kept (up to
//!   100,000) until the watcher collects them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use indexmap::IndexMap;

mod group;

use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Displaced, Holder, Lease, LockInfo, LockKind, Store,
    StoreError, Subscription, TakeOver,
};

/// Locks in this process's memory. See the [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// use cadenas::{stores::memory::MemoryStore, Locks};
/// let locks = Locks::new(MemoryStore::new());
/// let guard = locks.lock("job").try_acquire().await?;
/// assert!(locks.lock("job").try_acquire().await.is_err());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    notifier: Arc<ReleaseNotifier>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// foldhash: several times faster than SipHash on short keys, and seeded per process.
    locks: IndexMap<Box<str>, Entry, foldhash::fast::RandomState>,
    last_fence: u64,
    cursor: usize,
    /// Whether an expiry watcher has run: then expired entries removed by other operations
    /// are kept in `expired` for it.
    watched: bool,
    /// Expired entries removed or replaced since the watcher's last sweep.
    expired: Vec<(Box<str>, Entry)>,
    /// Keys held by readers or by permits of a semaphore.
    groups: IndexMap<Box<str>, group::Group, foldhash::fast::RandomState>,
    /// Where `sweep` cleans the groups next.
    group_cursor: usize,
    /// Writers waiting for a key (held back new readers while they live).
    waiting: IndexMap<Box<str>, group::Waiting, foldhash::fast::RandomState>,
    /// The owner of the last new entry: a process mostly takes locks as one owner, so its
    /// entries share one string instead of allocating a copy each.
    last_owner: Option<Arc<str>>,
}

#[derive(Debug)]
struct Entry {
    owner: Arc<str>,
    /// Nanoseconds since the store's epoch when the lease ends; `NEVER` for no expiry.
    expires: u64,
    fence: u64,
    metadata: Option<Box<str>>,
}

/// `owner` as a shared string: `last`'s when it is the same owner, else a new one kept in
/// `last`.
fn shared_owner(last: &mut Option<Arc<str>>, owner: &str) -> Arc<str> {
    match last {
        Some(l) if **l == *owner => l.clone(),
        _ => last.insert(owner.into()).clone(),
    }
}

const NEVER: u64 = u64::MAX;
/// How many entries each operation checks for expiry.
const SWEEP_PER_OP: usize = 2;
/// The most expired entries kept for an expiry watcher between two of its sweeps.
const MAX_KEPT_EXPIRED: usize = 100_000;

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires > now
    }

    fn remaining(&self, now: u64) -> Option<Duration> {
        (self.expires != NEVER).then(|| Duration::from_nanos(self.expires.saturating_sub(now)))
    }

    fn info(&self, key: &str, now: u64) -> LockInfo {
        LockInfo::new(
            key,
            &*self.owner,
            self.remaining(now),
            Some(self.fence),
            self.metadata.as_deref().map(str::to_owned),
        )
    }
}

impl State {
    /// Removes up to `SWEEP_PER_OP` expired entries at the cursor (and cleans one group).
    fn sweep(&mut self, now: u64) {
        if !self.groups.is_empty() || !self.waiting.is_empty() {
            self.sweep_groups(now);
        }
        for _ in 0..SWEEP_PER_OP {
            if self.locks.is_empty() {
                self.cursor = 0;
                return;
            }
            if self.cursor >= self.locks.len() {
                self.cursor = 0;
            }
            let expired = self
                .locks
                .get_index(self.cursor)
                .is_some_and(|(_, e)| !e.live(now));
            if expired {
                // The last entry moves into the cursor's place and is checked next.
                if let Some((key, entry)) = self.locks.swap_remove_index(self.cursor) {
                    self.keep_expired(key, entry);
                }
            } else {
                self.cursor += 1;
            }
        }
    }

    /// Keeps an expired entry that an operation removed, for the expiry watcher.
    fn keep_expired(&mut self, key: Box<str>, entry: Entry) {
        if self.watched && self.expired.len() < MAX_KEPT_EXPIRED {
            self.expired.push((key, entry));
        }
    }

    /// The entry of a new holding, with the next fence.
    fn new_entry(&mut self, request: &AcquireRequest<'_>, expires: u64) -> Entry {
        self.last_fence += 1;
        Entry {
            owner: shared_owner(&mut self.last_owner, request.owner),
            expires,
            fence: self.last_fence,
            metadata: request.metadata.map(Into::into),
        }
    }

    /// `owner`'s live holding of `key`: the exclusive entry or its place in the key's group.
    fn holding_mut(&mut self, key: &str, owner: &str, now: u64) -> Option<&mut Entry> {
        let exclusive = self
            .locks
            .get(key)
            .is_some_and(|e| e.live(now) && &*e.owner == owner);
        if exclusive {
            self.locks.get_mut(key)
        } else {
            self.group_entry(key, owner, now)
        }
    }

    fn live(&self, key: &str, now: u64) -> Option<&Entry> {
        self.locks.get(key).filter(|e| e.live(now))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            notifier: ReleaseNotifier::new(),
            epoch: Instant::now(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many entries the store keeps, expired ones not yet cleaned included.
    pub fn len(&self) -> usize {
        self.lock().locks.len()
    }

    /// Whether the store keeps no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the mutex cannot leave an entry half-written (every write
        // is a single map operation), so a poisoned mutex is safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases `owner`'s holding of `key` in one critical section; whether it held one.
    fn release_now(&self, key: &str, owner: &str) -> bool {
        let now = self.now();
        let released = {
            let mut state = self.lock();
            state.sweep(now);
            // One hash lookup; the removal by index only moves the last entry into the gap.
            let ours = state
                .locks
                .get_full(key)
                .filter(|(_, _, e)| e.live(now) && &*e.owner == owner)
                .map(|(i, _, _)| i);
            if let Some(i) = ours {
                state.locks.swap_remove_index(i);
            }
            ours.is_some() || !state.groups.is_empty() && state.release_in_group(key, owner, now)
        };
        if released {
            self.notifier.notify(key);
        }
        released
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn expires(&self, now: u64, ttl: Option<Duration>) -> u64 {
        match ttl {
            Some(t) => now.saturating_add(t.as_nanos() as u64).min(NEVER - 1),
            None => NEVER,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> &str {
        "memory:"
    }

    fn kind(&self) -> &'static str {
        crate::scheme::MEMORY.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            shared: false,
            ..Capabilities::ALL
        }
    }

    /// Cancel safe: it answers without suspending (one critical section, no await), so its
    /// future is either never polled and did nothing, or done in its first poll.
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let now = self.now();
        let expires = self.expires(now, request.ttl);
        let mut state = self.lock();
        state.sweep(now);
        if request.kind != LockKind::Exclusive {
            let (answer, room_left) = state.acquire_in_group(&request, now, expires)?;
            drop(state);
            if room_left {
                // Let the next waiter in too: a release woke only this one.
                self.notifier.notify(request.key);
            }
            return Ok(answer);
        }
        if !state.groups.is_empty() || !state.waiting.is_empty() {
            if let Some(holder) = state.group_holder(request.key, now) {
                if let Some(lease) = request.writer_waiting {
                    state.mark_writer(request.key, request.owner, lease, now);
                }
                return Ok(Acquire::Held(holder));
            }
        }
        // One hash lookup: the entry API finds the slot, or the place for a new one.
        let state = &mut *state;
        let mut new_entry = || {
            state.last_fence += 1;
            Entry {
                owner: shared_owner(&mut state.last_owner, request.owner),
                expires,
                fence: state.last_fence,
                metadata: request.metadata.map(Into::into),
            }
        };
        let fence = match state.locks.raw_entry_mut_v1().from_key(request.key) {
            RawEntryMut::Occupied(mut slot) => {
                let e = slot.get();
                if e.live(now) {
                    let holder = Holder {
                        owner: Some(e.owner.to_string()),
                        remaining: e.remaining(now),
                    };
                    if let Some(lease) = request.writer_waiting {
                        state.mark_writer(request.key, request.owner, lease, now);
                    }
                    return Ok(Acquire::Held(holder));
                }
                // Taking over an expired entry: the watcher still gets to see it.
                let entry = new_entry();
                let fence = entry.fence;
                let old = slot.insert(entry);
                if state.watched && state.expired.len() < MAX_KEPT_EXPIRED {
                    state.expired.push((request.key.into(), old));
                }
                fence
            }
            RawEntryMut::Vacant(slot) => slot.insert(request.key.into(), new_entry()).1.fence,
        };
        if !state.waiting.is_empty() {
            state.unmark_writer(request.key, request.owner, now);
        }
        Ok(Acquire::Acquired(Lease {
            fence: Some(fence),
            ttl: request.ttl,
        }))
    }

    /// One critical section. A live entry is replaced (its holder is displaced, not expired:
    /// the expiry watcher does not report it); an expired one goes to the watcher as with
    /// `try_acquire`.
    async fn take_over(&self, request: AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        let now = self.now();
        let expires = self.expires(now, request.ttl);
        let mut state = self.lock();
        state.sweep(now);
        let entry = state.new_entry(&request, expires);
        let fence = entry.fence;
        let group = state.remove_group(request.key, now);
        state.unmark_writer(request.key, request.owner, now);
        let displaced = match state.locks.insert(request.key.into(), entry) {
            Some(old) if old.live(now) => Some(Displaced {
                owner: old.owner.to_string(),
                fence: Some(old.fence),
            }),
            _ if group.is_some() => group.map(|g| Displaced {
                owner: g.owner.to_string(),
                fence: Some(g.fence),
            }),
            Some(old) => {
                state.keep_expired(request.key.into(), old);
                None
            }
            None => None,
        };
        Ok(TakeOver {
            lease: Lease {
                fence: Some(fence),
                ttl: request.ttl,
            },
            displaced,
        })
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self.release_now(key, owner))
    }

    /// The fence plays no part here: [`release`](Store::release), without the second boxed
    /// future the default would add.
    async fn release_holding(
        &self,
        key: &str,
        owner: &str,
        _fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        Ok(self.release_now(key, owner))
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let now = self.now();
        let expires = self.expires(now, ttl);
        let mut state = self.lock();
        state.sweep(now);
        let entry = state.holding_mut(key, owner, now);
        Ok(entry.map(|e| {
            e.expires = expires;
            Lease {
                fence: Some(e.fence),
                ttl,
            }
        }))
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        let entry = state.holding_mut(key, owner, now);
        Ok(entry
            .map(|e| e.metadata = metadata.map(Into::into))
            .is_some())
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let removed = {
            let mut state = self.lock();
            let group = state.remove_group(key, now).is_some();
            let exclusive = match state.locks.swap_remove_full(key) {
                Some((_, k, e)) if !e.live(now) => {
                    state.keep_expired(k, e);
                    false
                }
                Some(_) => true,
                None => false,
            };
            group || exclusive
        };
        if removed {
            self.notifier.notify(key);
        }
        Ok(removed)
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let now = self.now();
        let state = self.lock();
        Ok(match state.live(key, now) {
            Some(e) => Some(e.info(key, now)),
            None => state.group_info(key, now),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let now = self.now();
        let mut out: Vec<LockInfo> = {
            let state = self.lock();
            let mut out: Vec<LockInfo> = state
                .locks
                .iter()
                .filter(|(k, e)| k.starts_with(prefix) && e.live(now))
                .map(|(k, e)| e.info(k, now))
                .collect();
            out.extend(state.list_groups(prefix, now));
            out
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(Some(self.notifier.subscribe(key)))
    }

    /// One critical section: expired entries under `prefix` still in the map, plus those other
    /// operations removed or replaced since the last sweep.
    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        state.watched = true;
        let mut out = Vec::new();
        let mut i = 0;
        while i < state.locks.len() {
            let expired = state
                .locks
                .get_index(i)
                .is_some_and(|(k, e)| !e.live(now) && k.starts_with(prefix));
            if expired {
                if let Some((k, e)) = state.locks.swap_remove_index(i) {
                    out.push(e.info(&k, now));
                }
            } else {
                i += 1;
            }
        }
        out.extend(state.reap_groups(prefix, now));
        let kept = std::mem::take(&mut state.expired);
        for (k, e) in kept {
            if k.starts_with(prefix) {
                out.push(e.info(&k, now));
            } else {
                state.expired.push((k, e));
            }
        }
        drop(state);
        out.sort_by(|a, b| a.key.cmp(&b.key).then(a.fence.cmp(&b.fence)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_entries_are_swept_without_being_touched() {
        let store = MemoryStore::new();
        for i in 0..100 {
            let key = format!("k{i}");
            store
                .try_acquire(AcquireRequest::new(
                    &key,
                    "o",
                    Some(Duration::from_millis(1)),
                ))
                .await
                .unwrap();
        }
        let live = store
            .try_acquire(AcquireRequest::new("live", "o", None))
            .await
            .unwrap();
        assert!(matches!(live, Acquire::Acquired(_)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && store.len() > 1 {
            // Operations on an unrelated key clean the expired ones, two per call.
            store.inspect("live").await.unwrap();
            store.release("nothing", "o").await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(store.len(), 1, "only the live lock remains");
        assert!(store.inspect("live").await.unwrap().is_some());
    }
}
