//! The kinds of holding a [`Lock`] takes: a mutex (the write side of a read-write lock), a
//! reader, or one permit of a semaphore. Everything else (retry, watchdog, events, tokens) is
//! the same for every kind.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Lock;
use crate::error::{Error, Result};
use crate::retry::Retry;
use crate::store::{HolderInfo, LockKind};

impl Lock {
    /// The same lock holding the key as `kind`; a bad permit count (0, over
    /// [`MAX_PERMITS`](crate::MAX_PERMITS)) is reported by the next operation as
    /// [`Error::InvalidInput`].
    pub(crate) fn with_kind(mut self, kind: LockKind) -> Self {
        if let LockKind::Permits(n) = kind {
            if n == 0 || n > crate::store::MAX_PERMITS {
                let message = format!(
                    "semaphore '{}': {n} permits is not a permit count; choose 1 to {}",
                    self.key,
                    crate::store::MAX_PERMITS
                );
                self.invalid.get_or_insert(("permits", message));
            }
        }
        self.kind = kind;
        self
    }

    /// How this lock's holdings share the key: [`LockKind::Exclusive`] for
    /// [`Locks::lock`](crate::Locks::lock) and [`Locks::write`](crate::Locks::write), [`LockKind::Shared`] for [`Locks::read`](crate::Locks::read),
    /// [`LockKind::Permits`] for [`Locks::semaphore`](crate::Locks::semaphore).
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The lease of the writer-waiting marker a waiting exclusive try records on a store with
    /// read-write locks: the rest of the retry window, at most the lock's ttl (the default
    /// ttl for a lock without one), so a writer that gave up or crashed holds readers back no
    /// longer than that.
    pub(super) fn writer_waiting(&self, retry: &Retry, started: Instant) -> Option<Duration> {
        if self.kind != LockKind::Exclusive || !self.store().capabilities().shared_locks {
            return None;
        }
        let mut lease = self.ttl.unwrap_or(crate::locks::DEFAULT_TTL);
        if let Some(t) = retry.get_timeout() {
            lease = lease.min(t.saturating_sub(started.elapsed()));
        }
        Some(lease.max(Duration::from_millis(1)))
    }

    /// Counts this lock among the readers of its key waiting in this process, while the
    /// answer lives (nothing for another kind). See [`readers_wait`].
    pub(super) fn reader_waits(&self) -> ReaderWaits {
        if self.kind != LockKind::Shared {
            return ReaderWaits(None);
        }
        *waiting_readers().entry(self.stored.clone()).or_default() += 1;
        ReaderWaits(Some(self.stored.clone()))
    }

    /// The error for a kind of lock the store does not hold.
    pub(crate) fn kind_unsupported(&self) -> Error {
        let what = match self.kind {
            LockKind::Permits(_) => "semaphores",
            _ => "read-write locks (shared holders)",
        };
        Error::Unsupported {
            store: self.store().describe().to_owned(),
            what: format!("{what}, asked for key '{}'", self.key),
        }
    }

    /// Everyone who holds the key now, sorted by fence: the exclusive holder, every reader,
    /// or every permit holder of a semaphore. Empty when free.
    pub async fn holders(&self) -> Result<Vec<HolderInfo>> {
        Ok(self.inspect().await?.map(|i| i.holders).unwrap_or_default())
    }

    /// How many more holders of this lock's kind the key would take now: for a semaphore of
    /// N, N minus its live holders (0 while the key is held another way); for a mutex or
    /// writer, 1 when the key is free, else 0; for a reader, [`u32::MAX`] unless the key is
    /// held exclusively (0). (A waiting writer also holds new readers back; this does not show
    /// it.)
    pub async fn available(&self) -> Result<u32> {
        let info = self.inspect().await?;
        Ok(match (self.kind, info) {
            (LockKind::Permits(n), None) => n,
            (LockKind::Exclusive, None) => 1,
            (LockKind::Shared, None) => u32::MAX,
            (LockKind::Permits(n), Some(i)) if i.kind == LockKind::Permits(n) => {
                n.saturating_sub(i.holders.len() as u32)
            }
            (LockKind::Shared, Some(i)) if i.kind == LockKind::Shared => u32::MAX,
            _ => 0,
        })
    }
}

/// The readers waiting in this process, per stored key (whatever the store: two stores
/// with a key of the same name only make a writer poll when it need not).
static WAITING_READERS: LazyLock<Mutex<HashMap<Arc<str>, usize>>> = LazyLock::new(Default::default);

fn waiting_readers() -> MutexGuard<'static, HashMap<Arc<str>, usize>> {
    // Every change under the mutex is one counter step: safe after a panic.
    WAITING_READERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether readers of `stored` wait in this process. A waiting writer then tries at every
/// pause, even behind other waiters: readers ahead of it in line, held back by its marker,
/// would take the wake-ups it needs. Without waiting readers it waits its turn as a mutex's
/// waiter does, so the waiters of a plain mutex make one poll per delay, not one each.
pub(super) fn readers_wait(stored: &str) -> bool {
    waiting_readers().get(stored).is_some_and(|n| *n > 0)
}

/// A reader counted among its key's waiters (see [`Lock::reader_waits`]) until dropped.
pub(super) struct ReaderWaits(Option<Arc<str>>);

impl Drop for ReaderWaits {
    fn drop(&mut self) {
        if let Some(stored) = self.0.take() {
            let mut readers = waiting_readers();
            if let Some(n) = readers.get_mut(&stored) {
                *n -= 1;
                if *n == 0 {
                    readers.remove(&stored);
                }
            }
        }
    }
}
