//! The expiry watcher (locky's `startExpirateWorker`): reports locks whose lease ran out
//! without being released, each exactly once across every process that watches.
//!
//! # How it works
//!
//! Written once above the store trait: every `every`, the watcher calls
//! [`Store::reap_expired`](crate::Store::reap_expired), which removes the expired,
//! not yet removed records under a prefix **in one atomic step** and returns them. Only one
//! caller's removal can succeed for a record (one SQL `DELETE … RETURNING`, or a conditional
//! `DELETE` per row; one critical section in memory), so when several processes watch the same
//! namespace, each expiry is reported by exactly one of them: an
//! [`EventKind::Reaped`](crate::EventKind::Reaped) event on [`Locks::events`] of the process
//! that won, carrying the last holder's key, owner and fence.
//!
//! # What counts as an expiry
//!
//! A lease that ran out and is still in the store when a watcher sweeps. A lock released by
//! its holder is not an expiry. A lease that ran out and was **taken over** by a new acquire
//! before any watcher swept is reported by the memory store (it keeps the replaced record for
//! the watcher once a watcher has run) but not by the SQL stores, whose acquire overwrites
//! the expired row in the same statement: sweep often (the default is every second) when
//! takeovers of expired locks must be seen. Redis, whose keys vanish by themselves, keeps
//! each holding's record for a grace period and learns of expiries from keyspace events (see
//! `cadenas::stores::redis`); it reports takeovers too. Stores without
//! [`Capabilities::expiry_watch`](crate::Capabilities::expiry_watch) (Redlock: no single
//! record of a holding) answer [`Error::Unsupported`](crate::Error::Unsupported).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::locks::Locks;
use crate::store::LockInfo;

/// The default time between two sweeps of the expiry watcher.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

impl Locks {
    /// One sweep of the expiry watcher: removes the locks under `prefix` (within this factory's
    /// namespace) whose lease has run out, emits an [`EventKind::Reaped`] event for each, and
    /// returns them (keys without namespace, `remaining` zero). A record is returned by exactly
    /// one caller, whichever process calls. See [`watch_expiries`](Locks::watch_expiries).
    ///
    /// # Cancel safety
    /// If dropped, the store may have removed records that nobody reports.
    pub async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let span = tracing::debug_span!(
            "cadenas.reap_expired",
            prefix,
            store = self.describe(),
            outcome = tracing::field::Empty
        );
        crate::observe::traced!(span, self.reap(prefix), |r| match r {
            Ok(r) if r.is_empty() => "none",
            r => crate::observe::outcome(r, "reaped"),
        })
    }

    async fn reap(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.check_expiry_watch()?;
        let stored = self.stored_prefix(prefix);
        let mut reaped = self
            .inner
            .store
            .reap_expired(&stored)
            .await
            .map_err(|e| self.store_error("reap expired locks", e))?;
        self.strip_namespace(&mut reaped);
        self.inner.metrics.reaped(reaped.len());
        let events = &self.inner.events;
        for info in &reaped {
            tracing::debug!(key = %info.key, fence = ?info.fence, "lock expired without release");
            if events.listened() {
                events.send(Event {
                    kind: EventKind::Reaped,
                    key: info.key.clone(),
                    owner: info.owner.clone(),
                    fence: info.fence,
                    ttl: None,
                });
            }
        }
        Ok(reaped)
    }

    /// Starts the expiry watcher: a task that calls [`reap_expired`](Locks::reap_expired)
    /// every `every` (use [`DEFAULT_WATCH_INTERVAL`]) and reports each expired lock under
    /// `prefix` as an [`EventKind::Reaped`] event on [`events`](Locks::events). Several
    /// processes may watch the same store and prefix: each expiry is reported by exactly one.
    /// Store errors are logged (`warn` once, then `debug` until a sweep succeeds) and the
    /// watcher keeps going. It stops when the returned handle is dropped or stopped.
    ///
    /// Fails with [`Error::Unsupported`] on stores that cannot watch expiries (Redis), and
    /// with [`Error::InvalidInput`] for a zero interval. Needs a tokio runtime.
    pub fn watch_expiries(&self, prefix: &str, every: Duration) -> Result<ExpiryWatcher> {
        self.check_expiry_watch()?;
        if every.is_zero() {
            return Err(Error::invalid(
                "interval",
                "the watch interval must not be zero",
            ));
        }
        let locks = self.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                match locks.reap_expired(&prefix).await {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(store = locks.describe(), error = %e,
                            "the expiry watcher cannot sweep; retrying");
                    }
                    Err(e) => tracing::debug!(store = locks.describe(), error = %e,
                        "the expiry watcher still cannot sweep"),
                }
            }
        });
        Ok(ExpiryWatcher { task })
    }

    fn check_expiry_watch(&self) -> Result<()> {
        if self.inner.store.capabilities().expiry_watch {
            Ok(())
        } else {
            Err(Error::Unsupported {
                store: self.describe().to_owned(),
                what: "watching for expired locks".into(),
            })
        }
    }
}

/// A running expiry watcher (see [`Locks::watch_expiries`]). Dropping it stops the watcher.
#[derive(Debug)]
pub struct ExpiryWatcher {
    task: JoinHandle<()>,
}

impl ExpiryWatcher {
    /// Stops the watcher. A sweep in flight is abandoned (records it removed go unreported).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for ExpiryWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
