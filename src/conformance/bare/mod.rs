//! Checks over the bare [`Store`] trait: what a store must do by itself, below the lock layer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Acquire, AcquireRequest, Holder, Lease, LockInfo, Store};

mod leases;
mod records;

pub use leases::*;
pub use records::*;

/// A lease that must run out during a check.
const SHORT: Duration = Duration::from_millis(200);
/// A lease that must outlive a check.
const LONG: Option<Duration> = Some(Duration::from_secs(60));
/// Stores keep expiry in whole milliseconds and compare with their own clock's milliseconds.
const MS_ROUNDING: Duration = Duration::from_millis(2);

/// The store under test for the bare checks ([`run_bare`]), and a peer: another client of the
/// same store (another connection, another pool, another process's view), or the same one.
pub struct StoreSuite {
    store: Arc<dyn Store>,
    peer: Arc<dyn Store>,
    run: String,
    /// The longest a check waits for something that should happen (default 20 s).
    pub patience: Duration,
}

impl StoreSuite {
    /// Checks `store`, with itself as its peer. Every key of the run starts with a random
    /// [`prefix`](StoreSuite::prefix).
    pub fn new(store: Arc<dyn Store>) -> StoreSuite {
        StoreSuite {
            peer: store.clone(),
            store,
            run: format!("bare{}", &crate::new_owner()[..10]),
            patience: Duration::from_secs(20),
        }
    }

    /// Uses `peer`, another client of the same store, for the second party of each check
    /// (the one that finds the lock held, takes it over, or waits for its release).
    pub fn with_peer(mut self, peer: Arc<dyn Store>) -> StoreSuite {
        self.peer = peer;
        self
    }

    /// The store under test.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The second client of the store. For a store that does not share its records
    /// ([`Capabilities::shared_records`](crate::Capabilities::shared_records) is `false`: only
    /// the holding client knows a holding's owner, fence and metadata) the checks that read
    /// them play both parties on the store itself; the racing requests of
    /// [`store_exclusion`] and the waits of [`store_notify`] still use the real peer.
    pub fn peer(&self) -> &dyn Store {
        if self.store.capabilities().shared_records {
            &*self.peer
        } else {
            &*self.store
        }
    }

    /// The second client, whatever the store shares.
    fn other(&self) -> &dyn Store {
        &*self.peer
    }

    /// The store and its peer in turn, for tasks of their own.
    fn client(&self, i: usize) -> Arc<dyn Store> {
        if i.is_multiple_of(2) {
            &self.store
        } else {
            &self.peer
        }
        .clone()
    }

    /// A key unique to this run and `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// The prefix of every key of this run (to remove a store's derived state afterwards).
    pub fn prefix(&self) -> &str {
        &self.run
    }
}

/// Runs every bare check, one after the other, then removes what the run left in the store
/// (expired records, through `reap_expired` where the store has it).
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use cadenas::conformance::{run_bare, StoreSuite};
/// use cadenas::stores::memory::MemoryStore;
///
/// run_bare(&StoreSuite::new(Arc::new(MemoryStore::new()))).await;
/// # }
/// ```
pub async fn run_bare(suite: &StoreSuite) {
    let store = suite.store().describe().to_owned();
    macro_rules! check {
        ($($name:ident),* $(,)?) => {$(
            let started = std::time::Instant::now();
            $name(suite).await;
            tracing::info!(store = %store, check = stringify!($name), elapsed = ?started.elapsed(), "bare conformance check passed");
        )*};
    }
    check!(
        store_exclusion,
        store_owner_checks,
        store_expiry_and_takeover,
        store_ttl_none,
        store_force_release,
        store_fences,
        store_metadata,
        store_remaining_time,
        store_list_escaping,
        store_odd_keys,
        store_reap_once,
        store_notify,
    );
    let s = suite.store();
    if s.capabilities().expiry_watch {
        s.reap_expired(suite.prefix()).await.unwrap();
    }
    if s.capabilities().list {
        for info in s.list(suite.prefix()).await.unwrap() {
            s.force_release(&info.key).await.unwrap();
        }
    }
}

/// Takes a lock that must be free, and checks the lease against the request.
async fn take(store: &dyn Store, request: AcquireRequest<'_>) -> Lease {
    match store.try_acquire(request).await {
        Ok(Acquire::Acquired(lease)) => {
            check_lease(store, &lease, request.ttl);
            lease
        }
        other => panic!(
            "{}: '{}' should be free for {}: {other:?}",
            store.describe(),
            request.key,
            request.owner
        ),
    }
}

/// Tries a lock that must be held.
async fn held(store: &dyn Store, request: AcquireRequest<'_>) -> Holder {
    match store.try_acquire(request).await {
        Ok(Acquire::Held(holder)) => holder,
        other => panic!(
            "{}: '{}' should be held, yet {} tried: {other:?}",
            store.describe(),
            request.key,
            request.owner
        ),
    }
}

async fn inspect(store: &dyn Store, key: &str) -> Option<LockInfo> {
    store.inspect(key).await.unwrap()
}

/// What a store that does not declare `capability` answers for it: `Unsupported`.
fn assert_unsupported<T: std::fmt::Debug>(
    store: &dyn Store,
    capability: &str,
    answer: Result<T, crate::StoreError>,
) {
    match answer {
        Err(e) if e.kind == crate::StoreErrorKind::Unsupported => {}
        other => panic!(
            "{}: {capability} is not declared: {other:?}",
            store.describe()
        ),
    }
}

/// A granted lease is never longer than asked for, and has a fence exactly when the store
/// fences.
fn check_lease(store: &dyn Store, lease: &Lease, asked: Option<Duration>) {
    assert_eq!(
        lease.fence.is_some(),
        store.capabilities().fencing,
        "{}: a fence exactly when the store declares fencing: {lease:?}",
        store.describe()
    );
    check_extended(store, lease, asked);
}

/// An extended lease is never longer than asked for (its fence is checked against the
/// holding's with [`assert_shown_fence`](crate::conformance::assert_shown_fence)).
fn check_extended(store: &dyn Store, lease: &Lease, asked: Option<Duration>) {
    let what = store.describe();
    match (asked, lease.ttl) {
        (None, granted) => assert_eq!(granted, None, "{what}: asked for no expiry"),
        (Some(asked), Some(granted)) => {
            assert!(granted <= asked, "{what}: granted {granted:?} > {asked:?}");
            if asked >= Duration::from_secs(1) {
                assert!(
                    granted >= asked * 9 / 10,
                    "{what}: granted only {granted:?}"
                );
            }
        }
        (Some(_), None) => panic!("{what}: asked for a ttl, granted no expiry"),
    }
}

/// What the store reports as time left of a lease of `ttl` granted between `grant.0` (before
/// the request was sent) and `grant.1` (its answer), read at `read` (before the read was sent):
/// never more than `ttl` minus the time since the grant, and not much less either.
fn check_remaining(
    store: &dyn Store,
    remaining: Option<Duration>,
    ttl: Option<Duration>,
    grant: (Instant, Instant),
    read: Instant,
) {
    let what = store.describe();
    match (ttl, remaining) {
        (None, r) => assert_eq!(r, None, "{what}: a lock without ttl has no remaining time"),
        (Some(ttl), Some(r)) => {
            let passed = read.saturating_duration_since(grant.1);
            assert!(
                r <= ttl.saturating_sub(passed) + MS_ROUNDING,
                "{what}: {r:?} left of {ttl:?} granted {passed:?} ago"
            );
            assert!(
                r + grant.0.elapsed() + Duration::from_secs(1) >= ttl,
                "{what}: only {r:?} left of {ttl:?}"
            );
        }
        (Some(ttl), None) => panic!("{what}: a {ttl:?} lease reported as never expiring"),
    }
}

/// Waits until `f` yields something or the suite's patience runs out.
async fn eventually<T, F, Fut>(suite: &StoreSuite, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + suite.patience;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{}: timed out after {:?} waiting until {what}",
            suite.store().describe(),
            suite.patience
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tries until `owner` takes `key`; every answer on the way must name `holder`.
async fn take_over(
    suite: &StoreSuite,
    store: &dyn Store,
    key: &str,
    owner: &str,
    holder: &str,
) -> (Lease, Instant) {
    eventually(suite, "the lease expires and is taken over", || async {
        match store
            .try_acquire(AcquireRequest::new(key, owner, LONG))
            .await
            .unwrap()
        {
            Acquire::Acquired(lease) => Some((lease, Instant::now())),
            Acquire::Held(h) => {
                // `None` too: a store that reads the holder after its try (MySQL) may find
                // the lease ended in between.
                let named = h.owner.as_deref();
                assert!(
                    named.is_none() || named == Some(holder),
                    "{}: held by {named:?}, expected {holder}",
                    store.describe()
                );
                None
            }
        }
    })
    .await
}
