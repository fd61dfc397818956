//! The conformance suite: what every store must do, as plain async test functions (feature
//! `conformance`). Every store's tests call [`run_all`]; a new store runs it too:
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use cadenas::{conformance::Suite, stores::memory::MemoryStore, Locks, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let suite = Suite::new(move || {
//!     let store = store.clone();
//!     async move { Locks::builder().build_arc(store).unwrap() }
//! });
//! cadenas::conformance::run_all(&suite).await;
//! # }
//! ```
//!
//! Every check uses keys under a random prefix, so runs on a shared server never collide, and
//! releases what it takes. A failed check panics with the store's URL (without password) in
//! the message. Checks that need a capability the store does not declare check the
//! declaration instead (e.g. a store without fencing must hand out `None`).
//!
//! [`run_bare`] checks the bare [`Store`](crate::Store) the same way, below the lock layer
//! (exclusion, owner checks, takeover, fences, metadata, list escaping, reaping, release
//! notifications), so that a store's own tests hold only what is specific to it.

mod bare;
mod cancel;
mod checks;
mod concurrency;
mod election;
mod holder;
mod lease;
mod rwlock;
mod semaphore;
mod take_over;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Locks;

pub use bare::*;
pub use cancel::*;
pub use checks::*;
pub use concurrency::*;
pub use election::*;
pub use holder::*;
pub use lease::*;
pub use rwlock::*;
pub use semaphore::*;
pub use take_over::*;

type Connect = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Locks> + Send>> + Send + Sync>;

/// How the suite reaches the store under test.
pub struct Suite {
    connect: Connect,
    run: String,
    /// The longest a check waits for something that should happen (default 20 s).
    pub patience: Duration,
    /// How many tasks contend in [`contention`] (default 64).
    pub contenders: usize,
    /// How many acquires [`cancelled_acquires_leave_nothing_held`] cancels (default 2,000).
    pub cancellations: usize,
}

impl Suite {
    /// `connect` must return a new client (`Locks`) of the *same* store each call: two
    /// clients stand for two processes. It may set a namespace; it should not set a ttl or
    /// retry policy (checks set their own).
    pub fn new<F, Fut>(connect: F) -> Suite
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Locks> + Send + 'static,
    {
        Suite {
            connect: Box::new(move || Box::pin(connect())),
            run: format!("cf{}", &crate::new_owner()[..10]),
            patience: Duration::from_secs(20),
            contenders: 64,
            cancellations: 2_000,
        }
    }

    /// A new client of the store.
    pub async fn client(&self) -> Locks {
        (self.connect)().await
    }

    /// A key unique to this run and `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// The prefix of every key of this run.
    pub fn prefix(&self) -> &str {
        &self.run
    }
}

/// Runs every check, one after the other.
pub async fn run_all(suite: &Suite) {
    let locks = suite.client().await;
    let store = locks.describe().to_owned();
    macro_rules! check {
        ($($name:ident),* $(,)?) => {$(
            let started = std::time::Instant::now();
            $name(suite).await;
            tracing::info!(store = %store, check = stringify!($name), elapsed = ?started.elapsed(), "conformance check passed");
        )*};
    }
    check!(
        capabilities_are_honest,
        exclusion,
        owner_checks,
        expiry_and_takeover,
        lease_outlives_the_guard,
        ttl_none,
        extend,
        force_release,
        fences_increase,
        metadata_round_trip,
        restore_from_token,
        namespaces,
        list_by_prefix,
        bad_input,
        dropped_guard_is_released,
        run_reports_lost,
        events_in_order,
        watchdog_keeps_the_lease,
        watchdog_events_and_lost_signal,
        paused_holder_sees_lost_at_once,
        expiry_watch,
        hand_off,
        cancelled_acquire_leaves_nothing_held,
        take_over_all,
        election_all,
        semaphore_all,
        rwlock_all,
        cancelled_acquires_leave_nothing_held,
        contention,
    );
}

/// Checks a fence that `inspect`, `list`, `extend` or a take-over's displaced holder
/// reports: the holder's own, or — on a store that does not record every holding's fence
/// ([`Capabilities::inspect_fence`](crate::Capabilities::inspect_fence) is `false`) —
/// `None`. Never another fence.
#[track_caller]
pub(crate) fn assert_shown_fence(
    store: &dyn crate::Store,
    shown: Option<u64>,
    holder: Option<u64>,
    what: &str,
) {
    let unrecorded = !store.capabilities().inspect_fence && shown.is_none();
    assert!(
        shown == holder || unrecorded,
        "{}: {what}: fence {shown:?} shown for a holding with fence {holder:?}",
        store.describe()
    );
}

/// The client that reads, restores or force-releases `holder`'s holdings in a check: a new
/// client where the store shares its records (the usual case), else `holder` itself — only it
/// knows its holdings in full ([`Capabilities::shared_records`](crate::Capabilities::shared_records)).
pub(crate) async fn reader(suite: &Suite, holder: &Locks) -> Locks {
    if holder.store().capabilities().shared_records {
        suite.client().await
    } else {
        holder.clone()
    }
}

/// Waits until `cond` is true or the suite's patience runs out (then panics with `what`).
pub(crate) async fn eventually<F, Fut>(suite: &Suite, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + suite.patience;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {:?} waiting until {what}",
            suite.patience
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
