//! Tracing spans and metrics of lock operations, kept off the hot path when nobody listens.
//!
//! # Tracing
//!
//! Every lock operation runs in a `debug` span named `cadenas.<operation>` (`cadenas.acquire`,
//! `cadenas.try_acquire`, `cadenas.release`, `cadenas.extend`, `cadenas.inspect`,
//! `cadenas.force_release`, `cadenas.take_over`, `cadenas.list`, `cadenas.restore`,
//! `cadenas.reap_expired`) with the fields `key`, `store` (the URL without password), `owner`
//! (a short hash of the owner id, never the id itself: owner ids can be capabilities) and
//! `outcome`, recorded when the operation ends (`acquired`, `held`, `timeout`, `released`,
//! `extended`, `taken_over`, `not_owned`, `error`, …). When no subscriber wants `debug` spans
//! of `cadenas`, creating the span is one cached check and nothing is formatted or hashed.
//!
//! `warn` events: a guard dropped without `release()`, and a lease lost (once per lease,
//! whatever found the loss: the watchdog, an extend, a release or the lost signal's deadline).
//!
//! # Metrics (feature `metrics`)
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, labelled `store` with the store's
//! [kind](crate::Store::kind) (`memory`, `sqlite`, `redis`, `redis+cluster`, `redlock`,
//! `postgres`, `mysql`, or `other` for a store of your own), never its URL:
//!
//! | name | type | what |
//! |---|---|---|
//! | `cadenas_acquire_seconds` | histogram | time from the first try to holding the lock (successful acquires) |
//! | `cadenas_acquire_attempts` | histogram | tries per successful acquire: 1 = uncontended |
//! | `cadenas_acquire_failures_total` | counter | acquires that gave up (timeout, already locked) |
//! | `cadenas_locks_held` | gauge | guards alive in this process |
//! | `cadenas_extends_total` | counter | successful extends (by hand or by the watchdog) |
//! | `cadenas_lost_total` | counter | leases lost while a guard held them |
//! | `cadenas_reaped_total` | counter | expired locks the expiry watcher reported |
//!
//! Handles are registered when the [`Locks`](crate::Locks) is built: install your recorder
//! (e.g. a Prometheus exporter) before building it.

use std::time::Duration;

/// A short, stable, non-reversible tag for an owner id: 8 hex digits of a 32-bit FNV-1a
/// hash. Enough to tell holders apart in logs, useless to impersonate one.
pub(crate) fn owner_tag(owner: &str) -> String {
    OwnerTag(owner).to_string()
}

/// [`owner_tag`] computed only when formatted. Span fields are built even for a disabled
/// span when `tracing`'s `log` feature is on (sqlx turns it on) and no subscriber is set, to
/// be handed to a `log` logger if one wants them: with this, nothing is hashed or formatted
/// unless one does.
pub(crate) struct OwnerTag<'a>(pub(crate) &'a str);

impl std::fmt::Display for OwnerTag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut h: u32 = 0x811c_9dc5;
        for b in self.0.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        write!(f, "{h:08x}")
    }
}

/// A `debug` span for one operation on one key; [`tracing::Span::none`] (nothing formatted,
/// nothing hashed) when no subscriber wants it. With `tracing`'s `log` feature on (sqlx turns
/// it on) and no subscriber set, `tracing` hands a disabled span's fields to the `log` crate
/// in case a logger wants them: that is skipped too unless `log` lets `debug` records through.
macro_rules! op_span {
    ($name:literal, $lock:expr) => {
        if $crate::observe::nobody_listens() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                $name,
                key = %$lock.key,
                store = $lock.store().describe(),
                owner = %$crate::observe::OwnerTag(&$lock.owner),
                outcome = tracing::field::Empty,
            )
        }
    };
}
pub(crate) use op_span;

/// Neither a `tracing` subscriber (global or scoped) nor a `log` logger at `debug` exists: a
/// span would go nowhere. Two relaxed loads.
#[inline]
pub(crate) fn nobody_listens() -> bool {
    !tracing::dispatcher::has_been_set() && log::max_level() < log::LevelFilter::Debug
}

/// Runs the future `operation` inside `span` and records on it the `outcome` (a function of
/// the result) when it ends. With a disabled span (nobody listens) it only awaits
/// `operation`: nothing is instrumented, formatted or recorded. A macro, not a generic async
/// fn, so that the caller's future holds the operation's state once rather than nested in a
/// wrapper's (an acquire's future is then less than half the size, and moves less).
macro_rules! traced {
    ($span:expr, $operation:expr, $outcome:expr) => {{
        let span: tracing::Span = $span;
        let operation = $operation;
        if span.is_disabled() {
            operation.await
        } else {
            let result = tracing::Instrument::instrument(operation, span.clone()).await;
            span.record("outcome", $crate::observe::outcome_of(&result, $outcome));
            result
        }
    }};
}
pub(crate) use traced;

/// `outcome(result)`: a function, so that the closures given to [`traced!`] get their
/// argument's type.
pub(crate) fn outcome_of<T>(result: &T, outcome: impl FnOnce(&T) -> &'static str) -> &'static str {
    outcome(result)
}

/// The outcome of a result: `ok` for success, else the error's
/// ([`error_outcome`]).
pub(crate) fn outcome<T>(result: &crate::Result<T>, ok: &'static str) -> &'static str {
    match result {
        Ok(_) => ok,
        Err(e) => error_outcome(e),
    }
}

/// The outcome name of a failed operation.
pub(crate) fn error_outcome(e: &crate::Error) -> &'static str {
    use crate::Error as E;
    match e {
        E::Timeout { .. } => "timeout",
        E::AlreadyLocked { .. } => "held",
        E::NotOwned { .. } => "not_owned",
        E::Lost { .. } => "lost",
        E::InvalidInput { .. } => "invalid_input",
        E::Unsupported { .. } => "unsupported",
        E::Store { .. } => "store_error",
        _ => "error",
    }
}

/// Metric handles of one [`Locks`](crate::Locks), registered once at build time so the hot
/// path does no lookups. Without the `metrics` feature every method is an empty inline fn.
#[derive(Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    inner: std::sync::Arc<Handles>,
}

#[cfg(feature = "metrics")]
struct Handles {
    acquire_seconds: metrics::Histogram,
    acquire_attempts: metrics::Histogram,
    acquire_failures: metrics::Counter,
    guards: metrics::Gauge,
    extends: metrics::Counter,
    lost: metrics::Counter,
    reaped: metrics::Counter,
}

impl Metrics {
    /// Registers the handles for a store of kind `kind` ([`Store::kind`](crate::Store::kind)).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(kind: &'static str) -> Metrics {
        #[cfg(feature = "metrics")]
        {
            let labels = [("store", kind)];
            Metrics {
                inner: std::sync::Arc::new(Handles {
                    acquire_seconds: metrics::histogram!("cadenas_acquire_seconds", &labels),
                    acquire_attempts: metrics::histogram!("cadenas_acquire_attempts", &labels),
                    acquire_failures: metrics::counter!("cadenas_acquire_failures_total", &labels),
                    guards: metrics::gauge!("cadenas_locks_held", &labels),
                    extends: metrics::counter!("cadenas_extends_total", &labels),
                    lost: metrics::counter!("cadenas_lost_total", &labels),
                    reaped: metrics::counter!("cadenas_reaped_total", &labels),
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Metrics {}
    }

    /// The time now when acquire latency is measured (feature `metrics`), else `None`: the
    /// fast path reads no clock.
    #[inline]
    pub(crate) fn clock(&self) -> Option<tokio::time::Instant> {
        #[cfg(feature = "metrics")]
        return Some(tokio::time::Instant::now());
        #[cfg(not(feature = "metrics"))]
        None
    }

    /// A successful acquire after `attempts` tries that took `elapsed`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn acquired(&self, elapsed: Duration, attempts: u32) {
        #[cfg(feature = "metrics")]
        {
            self.inner.acquire_seconds.record(elapsed.as_secs_f64());
            self.inner.acquire_attempts.record(f64::from(attempts));
        }
    }

    /// An acquire that gave up.
    #[inline]
    pub(crate) fn acquire_failed(&self) {
        #[cfg(feature = "metrics")]
        self.inner.acquire_failures.increment(1);
    }

    /// A guard came into being (acquire or restore).
    #[inline]
    pub(crate) fn guard_opened(&self) {
        #[cfg(feature = "metrics")]
        self.inner.guards.increment(1.0);
    }

    /// A guard ended (released, dropped, leaked or serialized).
    #[inline]
    pub(crate) fn guard_closed(&self) {
        #[cfg(feature = "metrics")]
        self.inner.guards.decrement(1.0);
    }

    /// A successful extend.
    #[inline]
    pub(crate) fn extended(&self) {
        #[cfg(feature = "metrics")]
        self.inner.extends.increment(1);
    }

    /// A lease lost while held.
    #[inline]
    pub(crate) fn lost(&self) {
        #[cfg(feature = "metrics")]
        self.inner.lost.increment(1);
    }

    /// Expired locks reported by the expiry watcher.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn reaped(&self, n: usize) {
        #[cfg(feature = "metrics")]
        self.inner.reaped.increment(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tags_are_short_and_stable() {
        let t = owner_tag("5ZQ3P0KJ8M2W7X4R6T1V9B3N5C");
        assert_eq!(t.len(), 8);
        assert_eq!(t, owner_tag("5ZQ3P0KJ8M2W7X4R6T1V9B3N5C"));
        assert_ne!(t, owner_tag("5ZQ3P0KJ8M2W7X4R6T1V9B3N5D"));
        assert!(!t.contains("5ZQ3"));
    }
}
