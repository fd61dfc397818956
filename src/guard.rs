//! [`Guard`]: our holding of a lock (its lease), its lost signal and its watchdog.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::lock::Lock;
use crate::observe::{self, op_span};
use crate::store::Lease;

/// Our holding of a lock: the state shared by a guard, its watchdog and its lost signals.
/// (Not "held": that word is for a lock someone else holds, as in [`Acquire::Held`](crate::Acquire::Held).)
#[derive(Debug)]
pub(crate) struct Holding {
    lock: Lock,
    fence: Option<u64>,
    /// When our lease ends by our own clock (`None` = never). Measured from before the request
    /// that set it was sent, less [`CLOCK_GRAIN`], so it is never later than the store's
    /// expiry.
    deadline: Mutex<Option<Instant>>,
    /// Why the lease is gone, once it is.
    lost: Mutex<Option<String>>,
    /// Wakes lost-signal waiters when `lost` is set.
    lost_notify: Notify,
    /// Whether a watchdog keeps the lease alive and fires the lost signal (otherwise
    /// lost-signal waiters sleep until the local deadline). A passed deadline counts as lost
    /// either way.
    watchdog: bool,
    /// Whether the lease's last event (released, expired, lost) went out: serializes events
    /// so that, per lease, they arrive in order and nothing follows the last one. Only
    /// locked when someone listens.
    ended: Mutex<bool>,
}

impl Holding {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_deadline(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// Records the loss once: logs it at `warn`, counts it, and emits `kind` (`Lost` or
    /// `Expired`). Every path that finds a lease gone comes through here, so each loss is
    /// logged and reported exactly once. The event goes out before anyone can see the loss
    /// (under the same mutex), so a lost-signal waiter that wakes finds it already sent and
    /// counted.
    fn lose(&self, reason: &str, kind: EventKind) -> bool {
        let first = {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            if lost.is_none() {
                *lost = Some(reason.to_owned());
                self.emit(kind, None);
                self.lock.locks.inner.metrics.lost();
                true
            } else {
                false
            }
        };
        if first {
            self.lost_notify.notify_waiters();
            let lock = &self.lock;
            tracing::warn!(key = %lock.key, store = lock.store().describe(),
                owner = %crate::observe::OwnerTag(&lock.owner), fence = ?self.fence,
                "lock lost: {reason}");
        }
        first
    }

    /// Sends one event of this lease, unless its last event went out already.
    fn emit(&self, kind: EventKind, ttl: Option<Duration>) {
        let events = &self.lock.locks.inner.events;
        if !events.listened() {
            return;
        }
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if *ended {
            return;
        }
        if matches!(
            kind,
            EventKind::Released | EventKind::Expired | EventKind::Lost
        ) {
            *ended = true;
        }
        events.send(Event {
            kind,
            key: self.lock.key.to_string(),
            owner: self.lock.owner.to_string(),
            fence: self.fence,
            ttl,
        });
    }

    /// The reason if lost, including a local deadline that has passed. With a watchdog too:
    /// a holder whose process was paused past its deadline must see the loss as soon as it
    /// resumes, not only once the watchdog task gets its turn (which gives up before the
    /// deadline when it runs, so this changes nothing for a watchdog that keeps up).
    fn reason(&self) -> Option<String> {
        if let Some(r) = self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(r);
        }
        match self.deadline() {
            Some(d) if Instant::now() >= d => {
                Some("the lease expired before it was extended or released".into())
            }
            _ => None,
        }
    }
}

/// Our holding of a lock: its lease, fence and lost signal. Release it with
/// [`release`](Guard::release).
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
/// [`with_auto_extend`](crate::Lock::with_auto_extend) a watchdog keeps the lease alive and fires it
/// as soon as the lease can no longer be confirmed.
#[derive(Debug)]
pub struct Guard {
    holding: Arc<Holding>,
    watchdog: Option<JoinHandle<()>>,
    done: bool,
}

/// How much earlier than `sent + ttl` a store's expiry may fall: stores count time in whole
/// milliseconds (SQLite's `julianday('now')` rounds to one), so a lease written within a
/// millisecond of `sent` can end up to that grain sooner. Our view ends this much earlier.
const CLOCK_GRAIN: Duration = Duration::from_millis(2);

/// Our deadline for a lease of `ttl` whose request was sent at `sent`.
fn deadline(sent: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| sent + t.saturating_sub(CLOCK_GRAIN))
}

impl Guard {
    pub(crate) fn new(lock: Lock, lease: Lease, sent: Instant) -> Guard {
        let deadline = deadline(sent, lease.ttl);
        let watchdog = lock.auto_extend && lease.ttl.is_some();
        let holding = Arc::new(Holding {
            lock,
            fence: lease.fence,
            deadline: Mutex::new(deadline),
            lost: Mutex::new(None),
            lost_notify: Notify::new(),
            watchdog,
            ended: Mutex::new(false),
        });
        holding.lock.locks.inner.metrics.guard_opened();
        let mut guard = Guard {
            holding,
            watchdog: None,
            done: false,
        };
        guard.emit(EventKind::Acquired, lease.ttl);
        if watchdog {
            guard.watchdog = Some(tokio::spawn(watchdog_loop(guard.holding.clone())));
        }
        guard
    }

    fn emit(&self, kind: EventKind, ttl: Option<Duration>) {
        self.holding.emit(kind, ttl);
    }

    /// The key, as named (without namespace).
    pub fn key(&self) -> &str {
        self.holding.lock.key()
    }

    /// Our owner id.
    pub fn owner(&self) -> &str {
        self.holding.lock.owner()
    }

    /// The fence of this acquisition: strictly greater than every fence handed out before for
    /// this key on this store. Give it to the resource you protect so it can reject writes
    /// from a holder whose lease is gone. `None` on a store without fencing (every store
    /// cadenas ships has fencing; see [`Capabilities::fencing`](crate::Capabilities::fencing)).
    pub fn fence(&self) -> Option<u64> {
        self.holding.fence
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        &self.holding.lock
    }

    /// Time left on the lease by our clock (`None` = never expires). Never more than the
    /// store's view: it is measured from before the request was sent.
    pub fn remaining_time(&self) -> Option<Duration> {
        self.holding
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether our lease has run out by our clock, or is known lost.
    pub fn is_expired(&self) -> bool {
        self.holding.reason().is_some()
            || self.holding.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sets the lease to `ttl` from now (`None`: the lock's ttl). Fails with
    /// [`Error::NotOwned`] if the lease is gone (expired, force-released or taken over); the
    /// lost signal fires then too.
    ///
    /// # Cancel safety
    /// If dropped, the lease may or may not have been extended; `remaining_time` keeps the
    /// older, shorter view.
    pub async fn extend(&self, ttl: Option<Duration>) -> Result<()> {
        let span = op_span!("cadenas.extend", self.holding.lock);
        let extend = async {
            let ttl = match ttl {
                Some(t) => Some(crate::duration::check("ttl", t)?),
                None => self.holding.lock.ttl,
            };
            extend_once(&self.holding, ttl).await
        };
        observe::traced!(span, extend, |r| observe::outcome(r, "extended"))
    }

    /// Replaces the metadata stored with the lock.
    pub async fn set_metadata(&self, metadata: Option<&str>) -> Result<()> {
        if let Some(m) = metadata {
            crate::key::check_metadata(m)?;
        }
        let ok = self
            .holding
            .lock
            .store()
            .set_metadata(
                &self.holding.lock.stored,
                &self.holding.lock.owner,
                metadata,
            )
            .await
            .map_err(|e| self.holding.lock.store_error("set metadata", e))?;
        if ok {
            Ok(())
        } else {
            Err(self.not_owned())
        }
    }

    fn not_owned(&self) -> Error {
        Error::NotOwned {
            key: self.holding.lock.key.to_string(),
            store: self.holding.lock.store().describe().to_owned(),
            owner: self.holding.lock.owner.to_string(),
        }
    }

    /// A handle that tells when the lease is lost; cheap to clone, usable after the guard moved.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            holding: self.holding.clone(),
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
        let span = op_span!("cadenas.release", self.holding.lock);
        observe::traced!(span, self.release_inner(), |r| {
            observe::outcome(r, "released")
        })
    }

    async fn release_inner(&self) -> Result<()> {
        let released = self
            .holding
            .lock
            .store()
            .release_holding(
                &self.holding.lock.stored,
                &self.holding.lock.owner,
                self.holding.fence,
            )
            .await
            .map_err(|e| self.holding.lock.store_error("release", e))?;
        if released {
            self.emit(EventKind::Released, None);
            Ok(())
        } else {
            self.holding
                .lose("the lease was gone at release", EventKind::Expired);
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
        self.holding.lock.locks.inner.metrics.guard_closed();
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.done {
            return;
        }
        let store = self.holding.lock.store().clone();
        let stored = self.holding.lock.stored.clone();
        let owner = self.holding.lock.owner.clone();
        let fence = self.holding.fence;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                tracing::warn!(key = %self.holding.lock.key, store = store.describe(),
                    "lock guard dropped without release(); releasing in the background");
                let holding = self.holding.clone();
                rt.spawn(async move {
                    match store.release_holding(&stored, &owner, fence).await {
                        Ok(true) => holding.emit(EventKind::Released, None),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(key = %holding.lock.key, store = store.describe(), error = %e,
                            "background release of a dropped guard failed; the lock expires with its ttl"),
                    }
                });
            }
            Err(_) => tracing::warn!(key = %self.holding.lock.key, store = store.describe(),
                "lock guard dropped without release() outside a tokio runtime; the lock stays held until its ttl runs out"),
        }
    }
}

/// Tells when a lease is lost. Cheap to clone; see [`Guard::lost_signal`].
#[derive(Debug, Clone)]
pub struct LostSignal {
    holding: Arc<Holding>,
}

impl LostSignal {
    /// Why the lease is gone, or `None` while it is (as far as we know) still ours.
    pub fn reason(&self) -> Option<String> {
        self.holding.reason()
    }

    /// Whether the lease is known lost, or its local deadline has passed (also with a
    /// watchdog: a holder resumed after a pause longer than its lease sees it at once).
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
        let holding = &self.holding;
        loop {
            // Registered before the check, so a loss marked in between still wakes us.
            let notified = holding.lost_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = holding.reason() {
                holding.lose(&reason, EventKind::Expired);
                return holding.lock.lost_error(reason);
            }
            match holding.deadline() {
                Some(d) if !holding.watchdog => {
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

async fn extend_once(holding: &Holding, ttl: Option<Duration>) -> Result<()> {
    let lock = &holding.lock;
    let sent = Instant::now();
    let answer = lock
        .store()
        .extend(&lock.stored, &lock.owner, ttl)
        .await
        .map_err(|e| lock.store_error("extend", e))?;
    match answer {
        Some(lease) => {
            holding.set_deadline(deadline(sent, lease.ttl));
            lock.locks.inner.metrics.extended();
            holding.emit(EventKind::Extended, lease.ttl);
            Ok(())
        }
        None => {
            holding.lose(
                "an extend found the lease gone (expired, force-released or taken over)",
                EventKind::Lost,
            );
            Err(Error::NotOwned {
                key: lock.key.to_string(),
                store: lock.store().describe().to_owned(),
                owner: lock.owner.to_string(),
            })
        }
    }
}

/// How long before the end of a lease the watchdog gives up confirming it and fires the lost
/// signal: a tenth of the ttl, at most one second. The holder gets that long to stop before
/// the store can hand the lock to someone else.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
}

/// The time to the next extend: the interval (ttl/3 unless chosen) plus up to a tenth of it
/// at random, so that locks taken together (a burst of acquires) do not keep extending
/// together, and no lease is extended more often than the interval says.
fn extend_pause(interval: Duration) -> Duration {
    interval + interval.mul_f64(rand::random::<f64>() / 10.0)
}

/// The watchdog's interval for a lease of `ttl`: the lock's choice, else ttl/3.
fn extend_interval(lock: &Lock, ttl: Duration) -> Duration {
    lock.extend_every
        .unwrap_or(ttl / 3)
        .max(Duration::from_millis(1))
}

/// Extends every interval (plus jitter); on store errors retries with backoff until shortly
/// before the lease would end; fires the lost signal when the lease is gone or cannot be
/// confirmed in time. On Redis the extends of all guards share the store's one multiplexed
/// connection, which writes the commands queued at the same moment together.
async fn watchdog_loop(holding: Arc<Holding>) {
    let lock = &holding.lock;
    let Some(ttl) = lock.ttl else { return };
    let interval = extend_interval(lock, ttl);
    let margin = safety_margin(ttl);
    let mut next = Instant::now() + extend_pause(interval);
    loop {
        let Some(deadline) = holding.deadline() else {
            return;
        };
        // A long interval still leaves an extend one margin to answer before the watchdog
        // gives up on the lease.
        let latest = deadline.checked_sub(margin * 2).unwrap_or(deadline);
        tokio::time::sleep_until(next.min(latest)).await;
        let Some(deadline) = holding.deadline() else {
            return;
        };
        let give_up = deadline.checked_sub(margin).unwrap_or(deadline);
        let mut backoff = (interval / 10).max(Duration::from_millis(5));
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                holding.lose(
                    "the watchdog could not confirm the lease before it would expire",
                    EventKind::Lost,
                );
                return;
            }
            match tokio::time::timeout(left, extend_once(&holding, Some(ttl))).await {
                Ok(Ok(())) => break,
                // extend_once reported the loss.
                Ok(Err(Error::NotOwned { .. })) => return,
                Ok(Err(e)) if e.is_retryable() => {
                    tracing::debug!(key = %lock.key, error = %e, "watchdog extend failed; retrying");
                    let wait = backoff.min(give_up.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(interval);
                }
                Ok(Err(e)) => {
                    holding.lose(
                        &format!("the watchdog's extend failed: {e}"),
                        EventKind::Lost,
                    );
                    return;
                }
                Err(_elapsed) => {} // the check above fires next
            }
        }
        next = Instant::now() + extend_pause(interval);
    }
}
