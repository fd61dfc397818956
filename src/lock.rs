//! [`Lock`]: one named lock, and the acquire loop written once for every store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::guard::{Guard, LostSignal};
use crate::key;
use crate::locks::Locks;
use crate::observe::{self, op_span};
use crate::retry::Retry;
use crate::store::{
    Acquire, AcquireRequest, Holder, LockInfo, LockKind, Store, StoreErrorKind, Subscription,
};

mod kinds;
mod take_over;
pub use take_over::TakenOver;

/// One named lock: a key, the owner id it acquires with, its ttl, metadata and retry policy.
///
/// A `Lock` does not hold anything by itself; [`acquire`](Lock::acquire) and
/// [`try_acquire`](Lock::try_acquire) return a [`Guard`] that does. Make one with
/// [`Locks::lock`], then adjust it with the builder methods.
///
/// Every `Lock` gets a fresh random owner id unless you set one with
/// [`with_owner`](Lock::with_owner). Clones share
/// the owner id: two acquisitions through clones count as the same holder, so the second
/// waits like anyone else (locks are not re-entrant), but a release by either releases the lock.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// use std::time::Duration;
/// let locks = cadenas::Locks::memory();
/// let lock = locks
///     .lock("invoice:42")
///     .with_ttl(Some(Duration::from_secs(10)))
///     .with_metadata("worker-7");
/// let guard = lock.acquire().await?;
/// assert!(lock.is_locked().await?);
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Lock {
    pub(crate) locks: Locks,
    pub(crate) key: Arc<str>,
    pub(crate) stored: Arc<str>,
    pub(crate) owner: Arc<str>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) metadata: Option<Arc<str>>,
    pub(crate) retry: Retry,
    pub(crate) auto_extend: bool,
    /// The watchdog's interval between extends (`None`: a third of the ttl).
    pub(crate) extend_every: Option<Duration>,
    /// A bad key, ttl, owner or metadata, reported by every operation.
    pub(crate) invalid: Option<(&'static str, String)>,
    /// Holdings must show their fence to other clients (leader election's terms).
    pub(crate) recorded: bool,
    /// How a holding shares the key: a mutex (the write side of a read-write lock), a
    /// reader, or a permit of a semaphore.
    pub(crate) kind: LockKind,
}

impl Lock {
    pub(crate) fn new(locks: Locks, key: &str) -> Lock {
        let ns = locks.inner.namespace.as_deref();
        let invalid = key::check_key(key, ns).err().map(split_invalid);
        let stored: Arc<str> = key::stored_key(key, ns).into();
        let key: Arc<str> = if ns.is_none() {
            stored.clone()
        } else {
            key.into()
        };
        Lock {
            owner: key::new_owner().into(),
            ttl: locks.inner.ttl,
            retry: locks.inner.retry.clone(),
            auto_extend: locks.inner.auto_extend,
            extend_every: locks.inner.extend_every,
            metadata: None,
            invalid,
            recorded: false,
            kind: LockKind::Exclusive,
            key,
            stored,
            locks,
        }
    }

    /// Sets the lease length; `None` = never expires. Bad values (zero, over a year) are
    /// reported by the next operation as [`Error::InvalidInput`].
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        if let Err(e) = crate::duration::check_ttl(ttl) {
            self.invalid.get_or_insert(split_invalid(e));
        }
        self.ttl = ttl;
        self
    }

    /// Acquires as `owner` instead of a random id (locky's `locker`). Anyone using the same
    /// owner id can release or extend the lock.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        let owner = owner.into();
        if let Err(e) = key::check_owner(&owner) {
            self.invalid.get_or_insert(split_invalid(e));
        }
        self.owner = owner.into();
        self
    }

    /// Stores `metadata` (at most 64 KiB) with the lock, readable by anyone through
    /// [`inspect`](Lock::inspect).
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        let metadata = metadata.into();
        if let Err(e) = key::check_metadata(&metadata) {
            self.invalid.get_or_insert(split_invalid(e));
        }
        self.metadata = Some(metadata.into());
        self
    }

    /// Sets how [`acquire`](Lock::acquire) waits.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        if let Err(e) = retry.validate() {
            self.invalid.get_or_insert(split_invalid(e));
        }
        self.retry = retry;
        self
    }

    /// Keeps the lease alive while the guard lives: a watchdog extends it every ttl/3 (or
    /// at the interval of [`with_auto_extend_every`](Lock::with_auto_extend_every)) and fires the lost
    /// signal when it cannot confirm the lease before it would expire. `false` turns the
    /// watchdog off and keeps the chosen interval for when it is turned on again.
    pub fn with_auto_extend(mut self, on: bool) -> Self {
        self.auto_extend = on;
        self
    }

    /// Keeps the lease alive with a watchdog that extends it every `interval` (plus up to a
    /// tenth of it at random, so that locks taken together do not extend together) instead
    /// of every ttl/3: exclusive-lock's `lock_refresh_ms`. Turns
    /// [`with_auto_extend`](Lock::with_auto_extend) on.
    ///
    /// The interval must be shorter than the ttl and not zero; otherwise the lock's
    /// operations fail with [`Error::InvalidInput`] naming the key. With ttl `None` the
    /// lease never expires and no watchdog runs, so the interval is ignored. The lost signal
    /// fires as with the default interval: when the lease is gone, or when no extend has
    /// confirmed it by a tenth of the ttl (at most one second) before it would expire. An
    /// interval that would reach past that point is shortened so that the extend starts a
    /// tenth of the ttl (at most one second) earlier still, and has that long to answer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// use std::time::Duration;
    /// let locks = cadenas::Locks::memory();
    /// let lock = locks
    ///     .lock("report")
    ///     .with_ttl(Some(Duration::from_secs(30)))
    ///     .with_auto_extend_every(Duration::from_secs(5));
    /// let guard = lock.acquire().await?;
    /// guard.release().await?;
    ///
    /// // Not shorter than the ttl: refused, naming the key.
    /// let bad = locks
    ///     .lock("report")
    ///     .with_ttl(Some(Duration::from_secs(1)))
    ///     .with_auto_extend_every(Duration::from_secs(1));
    /// let e = bad.acquire().await.unwrap_err();
    /// assert!(matches!(e, cadenas::Error::InvalidInput { .. }));
    /// assert!(e.to_string().contains("'report'"));
    /// # Ok(()) }
    /// ```
    pub fn with_auto_extend_every(mut self, interval: Duration) -> Self {
        self.auto_extend = true;
        self.extend_every = Some(interval);
        self
    }

    /// The key, as named (without namespace).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner id this lock acquires with.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The lease length (`None` = never expires).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The metadata this lock acquires with, if any.
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }

    fn check(&self) -> Result<()> {
        match &self.invalid {
            Some((what, message)) => Err(Error::InvalidInput {
                what,
                message: message.clone(),
            }),
            None if self.auto_extend => {
                check_extend_every(&format!("lock '{}'", self.key), self.extend_every, self.ttl)
            }
            None => Ok(()),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.locks.inner.store
    }

    pub(crate) fn store_error(&self, operation: &'static str, e: crate::StoreError) -> Error {
        Error::store(self.store().describe(), operation, Some(&self.key), e)
    }

    /// Takes the lock, waiting as the retry policy says.
    ///
    /// Fails with [`Error::Timeout`] when the policy gives up, [`Error::InvalidInput`] for a
    /// bad key or ttl, and [`Error::Store`] when the store fails.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future never leaves the lock held. Every store's
    /// [`try_acquire`](Store::try_acquire) promises it: a lock taken by a request whose
    /// caller was dropped is given back.
    pub async fn acquire(&self) -> Result<Guard> {
        // The lock's own policy was checked when it was set (a bad one is in `invalid`).
        let span = op_span!("cadenas.acquire", self);
        observe::traced!(span, self.acquire_counted(&self.retry), acquired)
    }

    /// Takes the lock if it is free, without waiting: [`Error::AlreadyLocked`] otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`acquire`](Lock::acquire).
    pub async fn try_acquire(&self) -> Result<Guard> {
        let span = op_span!("cadenas.try_acquire", self);
        observe::traced!(span, self.try_acquire_inner(), acquired)
    }

    async fn try_acquire_inner(&self) -> Result<Guard> {
        self.check()?;
        let started = self.metrics().clock();
        let guard = self.try_acquire_once().await;
        self.count_acquire(&guard, started, 1);
        guard
    }

    async fn try_acquire_once(&self) -> Result<Guard> {
        match self.attempt(None).await? {
            Ok(guard) => Ok(guard),
            Err(holder) => Err(Error::AlreadyLocked {
                key: self.key.to_string(),
                store: self.store().describe().to_owned(),
                holder: holder.owner,
                remaining: holder.remaining,
            }),
        }
    }

    /// Takes the lock waiting as `retry` says (instead of the lock's own policy).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`acquire`](Lock::acquire).
    pub async fn acquire_with(&self, retry: &Retry) -> Result<Guard> {
        let span = op_span!("cadenas.acquire", self);
        let acquire = async {
            retry.validate()?;
            self.acquire_counted(retry).await
        };
        observe::traced!(span, acquire, acquired)
    }

    /// `acquire` with a checked `retry`, counted in the metrics.
    async fn acquire_counted(&self, retry: &Retry) -> Result<Guard> {
        self.check()?;
        let started = self.metrics().clock();
        let mut attempts = 1;
        let guard = match self.attempt(None).await {
            Ok(Ok(guard)) => Ok(guard),
            // Held: the wait's state (subscription, timers) lives in a box of its own, so the
            // future of an acquire that finds the lock free stays small.
            Ok(Err(holder)) => Box::pin(self.wait(retry, holder, &mut attempts)).await,
            Err(e) => Err(e),
        };
        self.count_acquire(&guard, started, attempts);
        guard
    }

    fn metrics(&self) -> &observe::Metrics {
        &self.locks.inner.metrics
    }

    /// Feeds the acquire metrics (nothing without the `metrics` feature).
    fn count_acquire(&self, guard: &Result<Guard>, started: Option<Instant>, attempts: u32) {
        match guard {
            Ok(_) => {
                if let Some(t) = started {
                    self.metrics().acquired(t.elapsed(), attempts);
                }
            }
            Err(Error::Timeout { .. } | Error::AlreadyLocked { .. }) => {
                self.metrics().acquire_failed()
            }
            Err(_) => {}
        }
    }

    /// Waits for a lock the first try found held by `holder`, trying again as `retry` says.
    async fn wait(&self, retry: &Retry, mut holder: Holder, attempts: &mut u32) -> Result<Guard> {
        let started = Instant::now();
        let _counted = self.reader_waits();
        let mut subscription = None;
        // Every store that offers a subscription gets one, also one that hears only this
        // process's releases (`notify` false): the waiters of this process are woken in
        // turn, and only the first of them polls for the others.
        if retry.may_retry(*attempts, started.elapsed()) {
            subscription = self
                .store()
                .subscribe(&self.stored)
                .await
                .map_err(|e| self.store_error("subscribe", e))?;
            if subscription.is_some() {
                // A release between the first try and the subscription would be missed:
                // look once more (not counted as an attempt).
                match self.attempt(self.writer_waiting(retry, started)).await? {
                    Ok(guard) => return Ok(guard),
                    Err(h) => holder = h,
                }
            }
        }
        let writer = self.writer_waiting(retry, started).is_some();
        loop {
            if !retry.may_retry(*attempts, started.elapsed()) {
                return Err(Error::Timeout {
                    key: self.key.to_string(),
                    store: self.store().describe().to_owned(),
                    attempts: *attempts,
                    waited: started.elapsed(),
                    holder: holder.owner,
                });
            }
            let mut pause = retry.pause(*attempts);
            if let Some(left) = holder.remaining {
                // Wake when the holder's lease runs out, whatever the delay says.
                pause = pause.min(left + Duration::from_millis(1));
            }
            if let Some(t) = retry.get_timeout() {
                pause = pause.min(t.saturating_sub(started.elapsed()));
            }
            let notified = match subscription.as_mut() {
                // A lost notification costs at most one pause.
                Some(sub) => tokio::time::timeout(pause, sub.released()).await.is_ok(),
                None => {
                    tokio::time::sleep(pause).await;
                    false
                }
            };
            // A writer polls even behind other waiters while readers of the key wait here
            // (`kinds::readers_wait`).
            let writer_polls = writer && kinds::readers_wait(&self.stored);
            if !notified && !writer_polls && behind_others(subscription.as_ref(), retry) {
                // Other waiters of this process are first in line: they are woken first and
                // the first of them polls, so N waiters make one poll per delay, not N. The
                // holder seen at our last try is not ours to time any more.
                holder.remaining = None;
                continue;
            }
            *attempts += 1;
            // Stores wake one waiter per release: if this try is cancelled or fails, the
            // wake-up goes to another waiter.
            let baton = PassOn(subscription.as_mut().filter(|_| notified));
            let answer = self.attempt(self.writer_waiting(retry, started)).await;
            if answer.is_ok() {
                std::mem::forget(baton);
            } else {
                drop(baton);
            }
            match answer? {
                Ok(guard) => return Ok(guard),
                Err(h) => holder = h,
            }
        }
    }

    /// One try: `Ok(Ok(guard))` acquired, `Ok(Err(holder))` held by someone. A waiting
    /// writer passes the lease of its writer-waiting marker.
    async fn attempt(
        &self,
        writer_waiting: Option<Duration>,
    ) -> Result<std::result::Result<Guard, Holder>> {
        let store = self.store();
        let caps = store.capabilities();
        if self.ttl.is_none() && !caps.ttl_none {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: "locks without ttl".into(),
            });
        }
        if !caps.holds(self.kind) {
            return Err(self.kind_unsupported());
        }
        // Measured before the request is sent, so our view of the lease never outlives the
        // store's.
        let sent = Instant::now();
        // Cancel safe by the store contract: a dropped request leaves nothing held.
        let answer = store
            .try_acquire(
                AcquireRequest::new(&self.stored, &self.owner, self.ttl)
                    .with_metadata(self.metadata.as_deref())
                    .with_recorded(self.recorded)
                    .with_kind(self.kind)
                    .with_writer_waiting(writer_waiting),
            )
            .await;
        let answer = answer.map_err(|e| match e.kind {
            StoreErrorKind::InvalidInput => Error::InvalidInput {
                what: "permits",
                message: format!(
                    "semaphore '{}' on {}: {}",
                    self.key,
                    store.describe(),
                    e.message
                ),
            },
            _ => self.store_error("acquire", e),
        });
        match answer? {
            Acquire::Acquired(lease) => Ok(Ok(Guard::new(self.clone(), lease, sent))),
            Acquire::Held(holder) => Ok(Err(holder)),
        }
    }

    /// Acquires, runs `f`, releases. `f` gets the [`LostSignal`] to abort early if it likes.
    /// If the lease was lost while `f` ran, the result is [`Error::Lost`] even when `f`
    /// succeeded: whatever it protected may have run twice.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// let locks = cadenas::Locks::memory();
    /// let total = locks.lock("nightly-report").run(|_lost| async { 40 + 2 }).await?;
    /// assert_eq!(total, 42);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future while `f` runs drops `f` and the guard (a best-effort release).
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(LostSignal) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire().await?;
        let signal = guard.lost_signal();
        let out = f(signal.clone()).await;
        if let Some(reason) = signal.reason() {
            let _ = guard.release().await;
            return Err(self.lost_error(reason));
        }
        match guard.release().await {
            Ok(()) => Ok(out),
            Err(Error::NotOwned { .. }) => {
                Err(self.lost_error("the lease ended before the work finished".into()))
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn lost_error(&self, reason: String) -> Error {
        Error::Lost {
            key: self.key.to_string(),
            store: self.store().describe().to_owned(),
            reason,
        }
    }

    /// Whether anyone holds the lock now.
    pub async fn is_locked(&self) -> Result<bool> {
        Ok(self.inspect().await?.is_some())
    }

    /// Who holds the lock, for how long, with which fence and metadata; `None` if free.
    pub async fn inspect(&self) -> Result<Option<LockInfo>> {
        let span = op_span!("cadenas.inspect", self);
        let inspect = async {
            self.check()?;
            let info = self
                .store()
                .inspect(&self.stored)
                .await
                .map_err(|e| self.store_error("inspect", e))?;
            Ok(info.map(|mut i| {
                i.key = self.key.to_string();
                i
            }))
        };
        observe::traced!(span, inspect, |r| match r {
            Ok(None) => "free",
            r => observe::outcome(r, "locked"),
        })
    }

    /// Removes the lock whoever holds it. `true` if a live lock was removed. The holder finds
    /// out on its next extend or release, or through its lost signal.
    pub async fn force_release(&self) -> Result<bool> {
        let span = op_span!("cadenas.force_release", self);
        let force_release = async {
            self.check()?;
            self.store()
                .force_release(&self.stored)
                .await
                .map_err(|e| self.store_error("force release", e))
        };
        observe::traced!(span, force_release, |r| match r {
            Ok(false) => "free",
            r => observe::outcome(r, "released"),
        })
    }
}

/// Whether a waiter whose pause ran out should leave the fall-back poll to the waiters of
/// this process ahead of it ([`Subscription::ahead`]), which are woken before it. Not with an
/// attempt limit: the policy counts tries.
fn behind_others(subscription: Option<&Subscription>, retry: &Retry) -> bool {
    retry.get_attempts().is_none() && subscription.is_some_and(|s| s.ahead() > 0)
}

/// Passes a release notification on when dropped (see [`Subscription::pass_on`]); forgotten
/// once the try it woke has answered.
struct PassOn<'a>(Option<&'a mut Subscription>);

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if let Some(sub) = self.0.as_mut() {
            sub.pass_on();
        }
    }
}

fn acquired(result: &Result<Guard>) -> &'static str {
    observe::outcome(result, "acquired")
}

/// Checks a watchdog interval of `whose` ("lock 'k'", "the default") against its ttl: not
/// zero, shorter than the ttl. Ignored without ttl (no watchdog runs then).
pub(crate) fn check_extend_every(
    whose: &str,
    every: Option<Duration>,
    ttl: Option<Duration>,
) -> Result<()> {
    let (Some(every), Some(ttl)) = (every, ttl) else {
        return Ok(());
    };
    let shown = |d: Duration| crate::duration::format_duration(d);
    if every.is_zero() {
        return Err(Error::invalid(
            "auto-extend interval",
            format!("{whose}: the auto-extend interval is zero; choose one shorter than the ttl ({}), e.g. a third of it", shown(ttl)),
        ));
    }
    if every >= ttl {
        return Err(Error::invalid(
            "auto-extend interval",
            format!(
                "{whose}: the auto-extend interval {} is not shorter than the ttl {}: the lease would expire between extends; choose a shorter one (the default is a third of the ttl)",
                shown(every),
                shown(ttl)
            ),
        ));
    }
    Ok(())
}

fn split_invalid(e: Error) -> (&'static str, String) {
    match e {
        Error::InvalidInput { what, message } => (what, message),
        other => ("input", other.to_string()),
    }
}
