//! The etcd store (feature `etcd`): `etcd://[user:password@]host:2379[,host:2379…]`,
//! `etcds://…` for TLS (`?ca_file=PATH` for a private CA).
//!
//! etcd replicates every write through a Raft quorum: a lock survives the loss of any
//! minority of the cluster's members, the leader included, and no failover can hand it out
//! twice. Use it where a second holder would do harm — leader election, singleton jobs —
//! and check the fence at the protected resource.
//!
//! # Layout: etcd's own lock recipe
//!
//! Lock `K` (namespace already applied) is held through keys directly under `K/`, each
//! attached to an etcd lease — the layout of etcd's lock recipe, which `etcdctl lock K` and
//! Go's `concurrency.Mutex` use: the holding key with the **lowest create revision** under
//! `K/` holds the lock, the others wait. So cadenas, `etcdctl lock` and Go services using
//! `concurrency.Mutex` on the same name exclude each other.
//!
//! - A holding is the key `K/<lease id in hex>` attached to a lease of its own, granted for
//!   the lock's ttl: when the lease runs out **by the cluster's clock**, etcd deletes the key.
//!   `ttl none` is a key without lease, `K/<random hex>`.
//! - Its value is cadenas' record, JSON: `{"cadenas":1,"owner":…,"metadata":…,"lease_secs":…}`.
//!   A key with a lease and another value is a holder of the recipe (a Go mutex writes an
//!   empty value); its owner shows as `etcd-lease:<id>`, and cadenas never releases or
//!   extends it (only `force_release` and take-overs remove it). A key under `K/` with no
//!   lease and a value that is not cadenas' is someone else's data: operations on `K` answer
//!   a `Rejected` error naming it.
//! - Keys deeper down (`K/a/…`) belong to lock `K/a` and do not count for `K` (Go's mutex
//!   counts them, so it is the more careful of the two there).
//! - **Fence = the holding key's create revision**: etcd's revision counter is cluster-wide,
//!   strictly increasing, durable in the Raft log, so fences increase across releases,
//!   expiries, restarts, leader changes and member loss.
//!
//! # Operations
//!
//! - acquire: read the keys under `K/`; if one holds the lock, answer who (a waiter's try
//!   is a read, no write to the cluster's log). Else grant a lease, then one transaction:
//!   *if no key exists under `K/`, put ours*, else read them. When the only keys under `K/` belong to
//!   deeper locks, a second transaction puts ours and reads the prefix, and the lock is ours
//!   if our key has the lowest create revision (the recipe's rule); if not, ours is deleted.
//!   A waiter that finds a queued `concurrency.Mutex` waiter treats it as ahead of itself.
//! - release, `set_metadata`, extend: read the holder; act only through a transaction
//!   conditioned on its create revision, so a holding that ended meanwhile is never touched.
//!   The released holding's lease is revoked afterwards.
//! - extend with the ttl the lease was granted for: one lease keep-alive, then a read
//!   checking that the key still hangs on that lease. With another ttl (etcd cannot change a
//!   lease's ttl): a new lease, the key moved onto it by a transaction conditioned on its
//!   create revision and old lease, the old lease revoked.
//! - force release: deletes the holder's key (a queued recipe waiter becomes the holder, as
//!   after a release). A recipe holder's lease is left alone: its session may hold more.
//! - take-over: one transaction conditioned on nothing under `K/` having changed since a
//!   read, deleting every holding key (holder and waiters: a waiter left behind would hold
//!   the lock beside us) and putting ours.
//! - `inspect`, `list`: the holder of each lock and its lease's time to live.
//!
//! # Leases count in seconds
//!
//! etcd's leases are whole seconds, and a server raises a ttl below its minimum (1.5 ×
//! its election timeout, rounded up: 2 s with the defaults). A ttl is rounded up to whole
//! seconds: a lease of 300 ms is kept by the cluster for 1 to 2 seconds, so after a crashed
//! holder waiters may wait that long. The holder is told the ttl it asked for (never more
//! than the cluster keeps), so its watchdog extends in time. The time left reported by
//! `inspect`, `list` and a refused acquire is the lease's, in whole seconds rounded down
//! (a quarter second when under one).
//!
//! # Hand-off
//!
//! Waiters watch their lock's prefix: a watch per key waited for in this process, opened by
//! [`Store::subscribe`] (confirmed by etcd before it returns), shared by the process's
//! waiters of that key, and closed with the last of them. Every deletion of a holding key —
//! release, force release, and expiry too, since etcd deletes the key of an expired lease —
//! wakes one waiter. A watch that loses its connection resumes from the revision it had
//! seen, so no release is missed.
//!
//! # Expiry watcher
//!
//! [`Locks::watch_expiries`](crate::Locks::watch_expiries) sees expiries as deletions: the
//! first sweep of a prefix watches it with previous values from the revision at which the
//! store was opened, and queues the deleted holding keys that had a lease. A deletion by
//! cadenas (release, force release, take-over, a cancelled acquire) writes, in the same
//! transaction, a marker `\0cadenas/ended/<holding key>` attached to a store-wide lease of
//! one minute; an expiry writes none. A sweep claims each queued deletion by writing that
//! marker only if it is absent, so the one process whose claim wins reports it, and
//! releases are never reported. Deletions queued more than 30 s before a sweep are dropped
//! (a marker may be gone by then). Holders of the recipe are not reported.
//!
//! # Cancel safety
//!
//! Dropping an acquire ends what it may have written, in the background: one transaction
//! deletes its (uniquely named) holding key if it exists and writes the key's ended marker,
//! then the lease is revoked. The acquire's transactions require that marker to be absent,
//! so a request of the cancelled call still on its way to the server is refused there. A
//! later holding of the key is never touched.

mod layout;
mod members;
mod ops;
mod settings;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::Client;

use self::members::Members;
use self::ops::Inner;
use self::settings::Settings;
use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Lease, LockInfo, Store, StoreError, Subscription,
    TakeOver,
};
use crate::url::StoreUrl;

/// A lock store on an etcd cluster. See the [module docs](self).
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> cadenas::Result<()> {
/// use cadenas::stores::etcd::EtcdStore;
/// let store = EtcdStore::connect("etcd://127.0.0.1:2379,127.0.0.1:22379").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
pub struct EtcdStore {
    inner: Arc<Inner>,
    notifier: Arc<ReleaseNotifier>,
    watches: watch::Watches,
    feeds: watch::Feeds,
    /// The cluster's revision when the store was opened: expiry feeds start there.
    opened: i64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("store", &self.inner.describe)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to `etcd://[user:password@]host[:port][,host[:port]…]` (port 2379 by
    /// default; requests go to any member named, and move to another when one fails) or
    /// `etcds://…` (TLS, certificates checked against the system's roots or `?ca_file=PATH`).
    ///
    /// Options: `ca_file`, `connect_timeout` (default 5s), `timeout` (per request, default
    /// 5s). Fails with a `Store` error of kind `Unavailable` when no member answers, or the
    /// user or password is wrong.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-open connection.
    pub async fn connect(url: &str) -> Result<EtcdStore> {
        Self::from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to an already parsed URL (the lock layer has taken its own options).
    pub async fn from_url(url: StoreUrl) -> Result<EtcdStore> {
        let settings = Settings::from_url(url)?;
        let members = Members::new(&settings.endpoints, settings.options);
        Self::open(members, settings.describe).await
    }

    /// Builds a store on an existing client (for settings a URL cannot express, such as
    /// client certificates). `describe` names the store in messages: give it without
    /// password. The store fails over between members only as far as `client` does.
    pub async fn from_client(client: Client, describe: impl Into<String>) -> Result<EtcdStore> {
        Self::open(Members::of(client), describe.into()).await
    }

    async fn open(members: Members, describe: String) -> Result<EtcdStore> {
        let inner = Arc::new(Inner::new(members, describe));
        // A first request, to a member that answers: this is where an unreachable cluster
        // or a refused password shows.
        let mut last = None;
        for _ in 0..inner.members.len() {
            let read = async {
                let client = inner.client().await?;
                let resp = client
                    .kv_client()
                    .get("\0cadenas/", None)
                    .await
                    .map_err(|e| inner.op_error(&format!("connecting to {}", inner.describe), e))?;
                Ok::<_, StoreError>(resp.header().map_or(0, |h| h.revision()))
            };
            match read.await {
                Ok(opened) => {
                    return Ok(EtcdStore {
                        inner,
                        notifier: ReleaseNotifier::new(),
                        watches: watch::Watches::default(),
                        feeds: watch::Feeds::default(),
                        opened,
                    })
                }
                Err(e) if e.is_retryable() => last = Some(e),
                Err(e) => return Err(connect_error(&inner.describe, e)),
            }
        }
        Err(connect_error(
            &inner.describe,
            last.expect("a store has at least one member"),
        ))
    }

    /// The etcd client of the member the store talks to now.
    ///
    /// # Errors
    /// A `Store` error when no member can be connected to.
    pub async fn client(&self) -> Result<Client> {
        self.inner
            .client()
            .await
            .map_err(|e| Error::store(&self.inner.describe, "connect", None, e))
    }
}

fn connect_error(describe: &str, source: StoreError) -> Error {
    Error::store(describe, "connect", None, source)
}

/// The clean-up of an acquire whose future is dropped: ends the key it may have written and
/// revokes its lease, in the background (see the module docs, *Cancel safety*).
pub(super) struct Attempt {
    inner: Arc<Inner>,
    armed: Option<(Vec<u8>, i64)>,
}

impl Attempt {
    fn new(inner: &Arc<Inner>) -> Attempt {
        Attempt {
            inner: inner.clone(),
            armed: None,
        }
    }

    /// From now on, a drop ends holding key `name` and revokes `lease`.
    fn arm(&mut self, name: Vec<u8>, lease: i64) {
        self.armed = Some((name, lease));
    }

    /// Nothing to clean up: the answer reached the caller, or nothing was written.
    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some((name, lease)) = self.armed.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            rt.spawn(async move { inner.end_attempt(name, lease).await });
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::ETCD.kind
    }

    /// Everything.
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL.exclusive_only()
    }

    /// A read, then a lease grant and one transaction (see the module docs). Cancel safe: a dropped
    /// attempt's key and lease are removed in the background.
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let mut attempt = Attempt::new(&self.inner);
        let answer = self.inner.try_acquire(&request, &mut attempt).await;
        if answer.is_ok() {
            attempt.disarm();
        }
        answer
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.inner.release(key, owner).await
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.extend(key, owner, ttl).await
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.set_metadata(key, owner, metadata).await
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.force_release(key).await
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inner.inspect(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    /// Expiries seen through a watch and claimed once across processes (module docs).
    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.feeds.reap(&self.inner, self.opened, prefix).await
    }

    /// One transaction deleting the holder and the waiters' keys and putting ours.
    async fn take_over(&self, request: AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        self.inner.take_over(&request).await
    }

    /// A watch on the lock's prefix (module docs, *Hand-off*).
    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        let subscription = self.watches.subscribe(&self.inner, &self.notifier, key);
        Ok(Some(subscription.await?))
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.feeds.stop().await;
        Ok(())
    }
}
