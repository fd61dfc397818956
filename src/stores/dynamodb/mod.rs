//! The DynamoDB store (feature `dynamodb`): `dynamodb:///TABLE` (AWS, configured as every AWS
//! tool is) or `dynamodb://HOST:PORT/TABLE` (a DynamoDB-compatible endpoint: an emulator,
//! ScyllaDB Alternator), on the official AWS SDK.
//!
//! # URLs
//!
//! - `dynamodb:///TABLE` uses the AWS SDK's configuration chain: region, credentials and
//!   profile from the environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, the
//!   shared config files, web identity, the instance or container role), and the
//!   endpoint it names if any (`AWS_ENDPOINT_URL_DYNAMODB`).
//! - `dynamodb://[KEY_ID:SECRET@]HOST[:PORT]/TABLE` talks to that endpoint over HTTP
//!   (`?tls=true`: HTTPS, certificates checked against the system's roots), in region
//!   `us-east-1` unless `?region=` says otherwise, signing with the URL's access key (user
//!   and password, percent-encoded), else the environment's `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY`, else a placeholder pair that emulators accept. This form never
//!   reads profiles or asks an instance metadata service.
//!
//! Options: `region=NAME`, `tls=true` (endpoint form), `create_table=false` (see *Table*),
//! and, **for tests only**, `clock_offset_ms=N` (see *Clock*). Requests time out after 5 s
//! per attempt and 10 s in all; the SDK retries throttling and dropped connections twice,
//! briefly, before the error reaches the lock layer. Credentials never show: not in
//! [`Store::describe`], errors, `Debug` or logs (the URL is shown with its password as
//! `***`).
//!
//! # Table
//!
//! Verrou's layout, so a Node.js service on `@verrou/core`'s DynamoDB driver and a Rust
//! service on cadenas exclude each other on the same table: hash key `key` (S) — the stored
//! key, namespace included —, `owner` (S), `expires_at` (N, epoch milliseconds; absent = never
//! expires). cadenas adds `fence` (N), `attempt` (S, the id of the request that wrote the
//! holding) and `metadata` (S). The table is created on first use with on-demand billing
//! (`PAY_PER_REQUEST`), race-free: of two clients creating it at once one gets
//! `ResourceInUseException` and waits for the table to become active like the other. With
//! `?create_table=false` a missing table is an error, and so is always a table whose key is
//! not exactly hash key `key` of type S (an error naming the key it has). An item whose
//! attributes have other types is someone else's data: operations on its key answer a
//! `Rejected` error naming the key, and `list` leaves it out. DynamoDB's own TTL is never
//! used (it deletes "within days"); expiry is always decided in the condition of a write.
//!
//! # Operations
//!
//! Each operation is **one conditional write or one read** of the lock item:
//!
//! | operation | request | condition |
//! |---|---|---|
//! | acquire | `UpdateItem` | `attribute_not_exists(key) OR expires_at < :now` (Verrou's) |
//! | release | `UpdateItem` | `owner = :owner` |
//! | extend, set metadata | `UpdateItem` | `owner = :owner`, live |
//! | force release | `UpdateItem` | `attribute_exists(owner)` |
//! | take-over | `UpdateItem` | none (answers the item it replaced) |
//! | inspect | `GetItem` | strongly consistent |
//! | list | `Scan` (every page) | strongly consistent, filtered on prefix and live |
//! | expiry watcher | `Scan`, then one `UpdateItem` per expired holding | owner, expiry and attempt as scanned |
//!
//! So acquire and release cost **one write request each** (one write unit for items under
//! 1 KB); a failed acquire reads the holder from the failed condition
//! (`ReturnValuesOnConditionCheckFailure`, no extra request on DynamoDB; emulators without
//! it get one strongly consistent `GetItem`). Reads are strongly consistent because a lock
//! read must see the write just made (`is_locked` after a release, a holder right after
//! its acquire): an eventually consistent read may be a second old. `list` and the watcher
//! scan the whole table, so keep the lock table to locks.
//!
//! A release keeps the item with `expires_at = 0` and no owner (that is how the fence
//! outlives it): Verrou's acquire and `isLocked` see such an item as free, and cadenas never
//! reports it. An item stays for each key ever locked (about 60 bytes plus the key).
//!
//! # Fences
//!
//! The fence lives on the lock item and the acquire computes it in the same write:
//! `fence = if_not_exists(fence, :now_µs) + 1`. Since cadenas never deletes a lock item
//! (release, force release and the watcher keep it, see above), fences strictly increase
//! per key across releases, expiries, take-overs and clients. A key's first fence is the
//! acquiring client's clock in microseconds (about 1.8 × 10^15 in 2026, exact as a
//! JavaScript number until the year 2255).
//!
//! **What a Verrou writer does to fences**: Verrou's acquire of a free or expired key and its
//! extend write the whole item (`PutItem`), and its release deletes it, so the key's `fence`
//! is gone and the next cadenas acquire starts again from its clock in microseconds. That
//! start is above every earlier fence of the key unless the key's fences started less than
//! the clock skew between the two cadenas clients before (a key's fences gain one per
//! acquire, the clock a million a second). While Verrou holds the key, `inspect` shows its
//! owner and expiry with no fence and no metadata; a Verrou extend of a cadenas holding
//! (a shared owner string) drops its fence, metadata and attempt the same way.
//!
//! # Clock
//!
//! DynamoDB has no server clock in condition expressions, so **expiry is judged by the
//! clocks of the clients**: an acquire writes `expires_at` = its clock + ttl and takes an
//! item whose `expires_at` is before its clock. With a clock `s` ahead of the holder's, a
//! client sees every lease end `s` early; with a clock `s` behind, a holder's leases end `s`
//! early for everyone else. Exclusion therefore holds while clock skew stays below the
//! lease's safety margin: the time left on a holder's lease when it finishes its work or
//! extends. With the watchdog (`auto_extend`, every ttl/3) that margin is about two thirds
//! of the ttl, minus the extend's latency; a holder without it must finish within the ttl
//! minus the skew. Keep clocks synchronized (NTP, or the Amazon Time Sync Service on AWS,
//! within a millisecond) and ttls seconds long, not milliseconds. A holder whose lease a
//! skewed client took learns it at its next extend or release (`Lost`, exit 76 for
//! `cadenas exec`), never silently. `tests/dynamodb_store.rs` measures this at ±5 s.
//! `?clock_offset_ms=N` shifts this client's clock by N ms: it is there for such tests.
//!
//! # Cancellation
//!
//! [`Store::try_acquire`] never abandons its request: if the caller's future is dropped
//! before it returned, the request is finished in a task of its own and a lock it took is
//! released in the background,
//! conditioned on the request's attempt id, so a cancelled acquire never leaves a lock
//! held and never releases a later holding. The attempt id also recognizes an SDK retry of
//! an acquire whose first try had succeeded (its lease is reported as acquired).
//!
//! # Hand-off
//!
//! DynamoDB cannot notify (streams are not a push channel a client waits on, and emulators
//! lack them). Waiters in this process are woken by releases made through any
//! `DynamoDbStore` of this process on the same endpoint and table ([`Store::subscribe`]);
//! other processes' releases are found by polling at the retry delay with its jitter,
//! capped by the holder's remaining lease that a failed acquire reports.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> cadenas::Result<()> {
//! use cadenas::Locks;
//!
//! let locks = Locks::connect("dynamodb://127.0.0.1:8000/locks").await?;
//! let guard = locks.lock("reports").acquire().await?;
//! println!("fence {:?}", guard.fence());
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod config;
mod errors;
mod item;
mod ops;
mod table;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;

use self::config::Settings;
use self::item::Clock;
use self::ops::Inner;
use crate::error::Result;
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Lease, LockInfo, Store, StoreError, Subscription,
    TakeOver,
};
use crate::url::{StoreUrl, COMMON_OPTIONS};

/// Locks in a DynamoDB table, in Verrou's layout. See the [module docs](self).
pub struct DynamoDbStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for DynamoDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStore")
            .field("store", &self.inner.describe)
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

impl DynamoDbStore {
    /// Opens `dynamodb:///TABLE` or `dynamodb://HOST:PORT/TABLE` (see the module docs for
    /// options), creating the table if it is missing. The lock-layer options `namespace` and
    /// `ttl` are ignored here.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves at most a table being created.
    pub async fn connect(url: &str) -> Result<DynamoDbStore> {
        let mut url = StoreUrl::parse(url)?;
        for name in COMMON_OPTIONS {
            url.take(name);
        }
        Self::from_url(url).await
    }

    /// Like [`connect`](Self::connect), from a parsed URL whose lock-layer options have been
    /// taken out.
    pub async fn from_url(url: StoreUrl) -> Result<DynamoDbStore> {
        let settings = Settings::from_url(url)?;
        let client = settings.client().await?;
        let clock = Clock {
            offset_ms: settings.clock_offset_ms,
        };
        Self::build(
            client,
            settings.table,
            settings.describe,
            settings.create_table,
            clock,
        )
        .await
    }

    /// Uses a client you configured (credentials, endpoint, retries, HTTP client) on
    /// `table`, created if missing.
    pub async fn from_client(
        client: aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<DynamoDbStore> {
        let describe = format!("dynamodb:///{table}");
        config::check_table(table, &describe)?;
        Self::build(
            client,
            table.to_owned(),
            describe,
            true,
            Clock { offset_ms: 0 },
        )
        .await
    }

    async fn build(
        client: aws_sdk_dynamodb::Client,
        table: String,
        describe: String,
        create: bool,
        clock: Clock,
    ) -> Result<DynamoDbStore> {
        table::ensure(&client, &table, create, &describe).await?;
        let notifier = shared_notifier(&describe);
        Ok(DynamoDbStore {
            inner: Arc::new(Inner {
                client,
                table,
                describe,
                clock,
                notifier,
            }),
        })
    }

    /// The SDK client, e.g. to read the table yourself.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.inner.client
    }
}

/// One notifier per endpoint and table (as the store describes itself) in this process, so
/// a release through one store wakes waiters of another on the same table.
fn shared_notifier(describe: &str) -> Arc<ReleaseNotifier> {
    type Registry = Mutex<HashMap<String, Weak<ReleaseNotifier>>>;
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let mut map = REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.retain(|_, notifier| notifier.strong_count() > 0);
    if let Some(notifier) = map.get(describe).and_then(Weak::upgrade) {
        return notifier;
    }
    let notifier = ReleaseNotifier::new();
    map.insert(describe.to_owned(), Arc::downgrade(&notifier));
    notifier
}

#[async_trait]
impl Store for DynamoDbStore {
    fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::DYNAMODB.kind
    }

    /// Everything: notification is for waiters of this process (others poll), expiry is
    /// judged by the clients' clocks (see the module docs).
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL.exclusive_only()
    }

    /// One conditional write: if the future is dropped, it is finished in a task of its own
    /// and a lock it took is released in the background (conditioned on its attempt id).
    async fn try_acquire(
        &self,
        request: AcquireRequest<'_>,
    ) -> std::result::Result<Acquire, StoreError> {
        let (inner, gone) = (self.inner.clone(), self.inner.clone());
        let (key, owner) = (request.key.to_owned(), request.owner.to_owned());
        let (k, o) = (key.clone(), owner.clone());
        let (ttl, metadata) = (request.ttl, request.metadata.map(str::to_owned));
        let attempt = ops::new_attempt();
        let mine = attempt.clone();
        let write = async move {
            let r = AcquireRequest::new(&key, &owner, ttl).with_metadata(metadata.as_deref());
            inner.acquire(r, &attempt).await
        };
        let release = move || {
            let (gone, k, o, mine) = (gone.clone(), k.clone(), o.clone(), mine.clone());
            async move { gone.release(&k, &o, Some(&mine)).await }
        };
        crate::stores::detach::acquire(request.key, &self.inner.describe, write, release).await
    }

    async fn release(&self, key: &str, owner: &str) -> std::result::Result<bool, StoreError> {
        self.inner.release(key, owner, None).await
    }

    /// One `UpdateItem` without condition, answering the item it replaced.
    async fn take_over(
        &self,
        request: AcquireRequest<'_>,
    ) -> std::result::Result<TakeOver, StoreError> {
        self.inner.take_over(request).await
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> std::result::Result<Option<Lease>, StoreError> {
        self.inner.extend(key, owner, ttl).await
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> std::result::Result<bool, StoreError> {
        self.inner.set_metadata(key, owner, metadata).await
    }

    async fn force_release(&self, key: &str) -> std::result::Result<bool, StoreError> {
        self.inner.force_release(key).await
    }

    async fn inspect(&self, key: &str) -> std::result::Result<Option<LockInfo>, StoreError> {
        self.inner.inspect(key).await
    }

    async fn list(&self, prefix: &str) -> std::result::Result<Vec<LockInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    /// A scan for expired holdings, each claimed by one conditional write.
    async fn reap_expired(&self, prefix: &str) -> std::result::Result<Vec<LockInfo>, StoreError> {
        self.inner.reap_expired(prefix).await
    }

    /// Wakes on releases made through any `DynamoDbStore` of this process on the same
    /// endpoint and table; other processes' releases are found by polling.
    async fn subscribe(&self, key: &str) -> std::result::Result<Option<Subscription>, StoreError> {
        Ok(Some(self.inner.notifier.subscribe(key)))
    }

    /// Wakes this process's waiters, which find the store closed or the lock free on their
    /// next try. The SDK client closes its connections when the last clone is dropped.
    async fn close(&self) -> std::result::Result<(), StoreError> {
        self.inner.notifier.notify_all();
        Ok(())
    }
}
