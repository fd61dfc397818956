//! [`Guard`]: a held lease, its lost signal and its watchdog.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::lock::Lock;
use crate::store::Lease;

/// State shared by a guard, its watchdog and its lost signals.
#[derive(Debug)]
pub(crate) struct Held {
    lock: Lock,
    fence: Option<u64>,
    /// When our lease ends by our own clock (`None` = never). Measured from before the request
    /// that set it was sent, so it is never later than the store's expiry.
    deadline: Mutex<Option<Instant>>,
    /// Why the lease is gone, once it is.
    lost: Mutex<Option<String>>,
    /// Wakes lost-signal waiters when `lost` is set.
    lost_notify: Notify,
    /// Whether the watchdog decides loss (otherwise the local deadline does).
    watchdog: bool,
}

impl Held {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_deadline(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// Records the loss once; returns whether this call was the first.
    fn mark_lost(&self, reason: &str) -> bool {
        let first = {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            if lost.is_none() {
                *lost = Some(reason.to_owned());
                true
            } else {
                false
            }
        };
        if first {
            self.lost_notify.notify_waiters();
        }
        first
    }

    /// The reason if lost, including a local deadline that has passed.
    fn reason(&self) -> Option<String> {
        if let Some(r) = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(r);
        }
        match self.deadline() {
            Some(d) if !self.watchdog && Instant::now() >= d => {
                Some("the lease expired before it was extended or released".into())
            }
            _ => None,
        }
    }
}

/// A held lock. Release it with [`release`](Guard::release).
///
/// # Dropping
/// Dropping a guard without `release` makes a best-effort release in the background on the
/// current tokio runtime and logs a `warn`; without a runtime the lock stays held until its
/// ttl runs out (forever with ttl `None`). Call [`release`](Guard::release) and handle its
/// result; use [`leak`](Guard::leak) to keep the lock on purpose (e.g. after
/// [`serialize`](Guard::serialize)).
///
/// # Lost leases
/// A lease can end while you hold the guard: it expires, someone force-releases it, or the
/// store loses it. [`lost`](Guard::lost) resolves when that is known; with
/// [`auto_extend`](crate::Lock::auto_extend) a watchdog keeps the lease alive and fires it
/// as soon as the lease can no longer be confirmed.
#[derive(Debug)]
pub struct Guard {
    held: Arc<Held>,
    watchdog: Option<JoinHandle<()>>,
    done: bool,
}

impl Guard {
    pub(crate) fn new(lock: Lock, lease: Lease, sent: Instant) -> Guard {
        let deadline = lease.ttl.map(|t| sent + t);
        let watchdog = lock.auto_extend && lease.ttl.is_some();
        let held = Arc::new(Held {
            lock,
            fence: lease.fence,
            deadline: Mutex::new(deadline),
            lost: Mutex::new(None),
            lost_notify: Notify::new(),
            watchdog,
        });
        let mut guard = Guard {
            held,
            watchdog: None,
            done: false,
        };
        guard.emit(EventKind::Acquired, lease.ttl);
        if watchdog {
            guard.watchdog = Some(tokio::spawn(watchdog_loop(guard.held.clone())));
        }
        guard
    }

    fn emit(&self, kind: EventKind, ttl: Option<Duration>) {
        emit(&self.held.lock, kind, self.held.fence, ttl);
    }

    /// The key, as named (without namespace).
    pub fn key(&self) -> &str {
        self.held.lock.key()
    }

    /// Our owner id.
    pub fn owner(&self) -> &str {
        self.held.lock.owner_id()
    }

    /// The fence of this acquisition: strictly greater than every fence handed out before for
    /// this key on this store. Give it to the resource you protect so it can reject writes
    /// from a holder whose lease is gone. `None` on stores without fencing (Redlock).
    pub fn fence(&self) -> Option<u64> {
        self.held.fence
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        &self.held.lock
    }

    /// Time left on the lease by our clock (`None` = never expires). Never more than the
    /// store's view: it is measured from before the request was sent.
    pub fn remaining_time(&self) -> Option<Duration> {
        self.held
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether our lease has run out by our clock, or is known lost.
    pub fn is_expired(&self) -> bool {
        self.held.reason().is_some() || self.held.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sets the lease to `ttl` from now (`None`: the lock's ttl). Fails with
    /// [`Error::NotOwned`] if the lease is gone (expired, force-released or taken over); the
    /// lost signal fires then too.
    ///
    /// # Cancel safety
    /// If dropped, the lease may or may not have been extended; `remaining_time` keeps the
    /// older, shorter view.
    pub async fn extend(&self, ttl: Option<Duration>) -> Result<()> {
        let ttl = match ttl {
            Some(t) => Some(crate::duration::check("ttl", t)?),
            None => self.held.lock.ttl,
        };
        extend_once(&self.held.lock, &self.held, self.held.fence, ttl).await
    }

    /// Replaces the metadata stored with the lock.
    pub async fn set_metadata(&self, metadata: Option<&str>) -> Result<()> {
        if let Some(m) = metadata {
            crate::key::check_metadata(m)?;
        }
        let ok = self
            .held
            .lock
            .store()
            .set_metadata(&self.held.lock.stored, &self.held.lock.owner, metadata)
            .await
            .map_err(|e| self.held.lock.store_error("set metadata", e))?;
        if ok {
            Ok(())
        } else {
            Err(self.not_owned())
        }
    }

    fn not_owned(&self) -> Error {
        Error::NotOwned {
            key: self.held.lock.key.to_string(),
            store: self.held.lock.store().describe().to_owned(),
            owner: self.held.lock.owner.to_string(),
        }
    }

    /// A handle that tells when the lease is lost; cheap to clone, usable after the guard moved.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            held: self.held.clone(),
        }
    }

    /// Resolves with [`Error::Lost`] when the lease is lost. Use it in `tokio::select!` to
    /// abort work the lock protects.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.lost_signal().wait().await
    }

    /// Releases the lock. [`Error::NotOwned`] if the lease was already gone.
    ///
    /// # Cancel safety
    /// If dropped, the release may or may not have happened; the guard is gone either way, and
    /// the lease ends at the latest when its ttl runs out.
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        let released = self
            .held
            .lock
            .store()
            .release(&self.held.lock.stored, &self.held.lock.owner)
            .await
            .map_err(|e| self.held.lock.store_error("release", e))?;
        if released {
            self.emit(EventKind::Released, None);
            Ok(())
        } else {
            if self.held.mark_lost("the lease was gone at release") {
                self.emit(EventKind::Expired, None);
            }
            Err(self.not_owned())
        }
    }

    /// Turns the guard into a token that [`Locks::restore`](crate::Locks::restore) turns back
    /// into a held lock, in this process or another. The guard is consumed without releasing.
    pub fn serialize(self) -> String {
        let token = crate::token::Token::of(&self);
        self.leak();
        token.encode()
    }

    /// Forgets the guard without releasing: the lock stays held until its ttl runs out.
    pub fn leak(mut self) {
        self.done = true;
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.done {
            return;
        }
        let store = self.held.lock.store().clone();
        let stored = self.held.lock.stored.clone();
        let owner = self.held.lock.owner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                tracing::warn!(key = %self.held.lock.key, store = store.describe(),
                    "lock guard dropped without release(); releasing in the background");
                let lock = self.held.lock.clone();
                let fence = self.held.fence;
                rt.spawn(async move {
                    match store.release(&stored, &owner).await {
                        Ok(true) => emit(&lock, EventKind::Released, fence, None),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(key = %lock.key, store = store.describe(), error = %e,
                            "background release of a dropped guard failed; the lock expires with its ttl"),
                    }
                });
            }
            Err(_) => tracing::warn!(key = %self.held.lock.key, store = store.describe(),
                "lock guard dropped without release() outside a tokio runtime; the lock stays held until its ttl runs out"),
        }
    }
}

/// Tells when a lease is lost. Cheap to clone; see [`Guard::lost_signal`].
#[derive(Debug, Clone)]
pub struct LostSignal {
    held: Arc<Held>,
}

impl LostSignal {
    /// Why the lease is gone, or `None` while it is (as far as we know) still ours.
    pub fn reason(&self) -> Option<String> {
        self.held.reason()
    }

    /// Whether the lease is known lost.
    pub fn is_lost(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves with [`Error::Lost`] once the lease is lost: when its local deadline passes
    /// without an extend, when an extend or the watchdog finds it gone, or when the watchdog
    /// cannot confirm it before it would expire. Never resolves for a lease without ttl that
    /// nobody takes away.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(&self) -> Error {
        let held = &self.held;
        loop {
            // Registered before the check, so a loss marked in between still wakes us.
            let notified = held.lost_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = held.reason() {
                if held.mark_lost(&reason) {
                    emit(&held.lock, EventKind::Expired, held.fence, None);
                }
                return held.lock.lost_error(reason);
            }
            match held.deadline() {
                Some(d) if !held.watchdog => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = &mut notified => {}
                    }
                }
                _ => notified.await,
            }
        }
    }
}

fn emit(lock: &Lock, kind: EventKind, fence: Option<u64>, ttl: Option<Duration>) {
    let tx = &lock.locks.inner.events;
    if tx.receiver_count() > 0 {
        let _ = tx.send(Event {
            kind,
            key: lock.key.to_string(),
            owner: lock.owner.to_string(),
            fence,
            ttl,
        });
    }
}

async fn extend_once(
    lock: &Lock,
    held: &Held,
    fence: Option<u64>,
    ttl: Option<Duration>,
) -> Result<()> {
    let sent = Instant::now();
    let answer = lock
        .store()
        .extend(&lock.stored, &lock.owner, ttl)
        .await
        .map_err(|e| lock.store_error("extend", e))?;
    match answer {
        Some(lease) => {
            held.set_deadline(lease.ttl.map(|t| sent + t));
            emit(lock, EventKind::Extended, fence, lease.ttl);
            Ok(())
        }
        None => {
            if held.mark_lost("an extend found the lease gone") {
                emit(lock, EventKind::Lost, fence, None);
            }
            Err(Error::NotOwned {
                key: lock.key.to_string(),
                store: lock.store().describe().to_owned(),
                owner: lock.owner.to_string(),
            })
        }
    }
}

/// Extends every ttl/3; on store errors retries with backoff until the lease would end; fires
/// the lost signal when the lease is gone or cannot be confirmed in time.
async fn watchdog_loop(held: Arc<Held>) {
    let (lock, fence) = (&held.lock, held.fence);
    let Some(ttl) = lock.ttl else { return };
    let interval = (ttl / 3).max(Duration::from_millis(1));
    let mut next = Instant::now() + interval;
    loop {
        tokio::time::sleep_until(next).await;
        let Some(deadline) = held.deadline() else {
            return;
        };
        let mut backoff = (interval / 10).max(Duration::from_millis(5));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if held.mark_lost("the watchdog could not confirm the lease before it expired") {
                    tracing::warn!(key = %lock.key, store = lock.store().describe(),
                        "lock lost: the lease could not be confirmed before it expired");
                    emit(lock, EventKind::Lost, fence, None);
                }
                return;
            }
            match tokio::time::timeout(left, extend_once(lock, &held, fence, Some(ttl))).await {
                Ok(Ok(())) => break,
                Ok(Err(Error::NotOwned { .. })) => {
                    tracing::warn!(key = %lock.key, store = lock.store().describe(),
                        "lock lost: someone else holds it or it expired");
                    return;
                }
                Ok(Err(e)) if e.is_retryable() => {
                    tracing::debug!(key = %lock.key, error = %e, "watchdog extend failed; retrying");
                    let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(interval);
                }
                Ok(Err(e)) => {
                    let reason = format!("the watchdog's extend failed: {e}");
                    if held.mark_lost(&reason) {
                        tracing::warn!(key = %lock.key, store = lock.store().describe(), error = %e, "lock lost");
                        emit(lock, EventKind::Lost, fence, None);
                    }
                    return;
                }
                Err(_elapsed) => {} // the deadline check above fires next
            }
        }
        next = Instant::now() + interval;
    }
}
