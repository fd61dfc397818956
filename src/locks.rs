//! [`Locks`]: the lock factory over one store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::guard::Guard;
use crate::key;
use crate::lock::Lock;
use crate::observe;
use crate::retry::Retry;
use crate::store::{Lease, LockInfo, LockKind, Store};
use crate::stores::memory::MemoryStore;

/// The default lease length: 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Makes [`Lock`]s over one store (Verrou's `LockFactory`). Cheap to clone; clones share the
/// store, its connections and the event stream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// let locks = cadenas::Locks::connect("memory:?namespace=billing").await?;
/// let guard = locks.lock("invoice:42").acquire().await?;
/// assert_eq!(guard.key(), "invoice:42");
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locks {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) namespace: Option<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) retry: Retry,
    pub(crate) auto_extend: bool,
    pub(crate) extend_every: Option<Duration>,
    pub(crate) events: Arc<Events>,
    pub(crate) metrics: crate::observe::Metrics,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("store", &self.inner.store.describe())
            .field("namespace", &self.inner.namespace)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

impl Locks {
    /// Locks in this process's memory: the library's embedded default.
    pub fn memory() -> Locks {
        Locks::new(MemoryStore::new())
    }

    /// Locks over `store` with the default settings.
    pub fn new(store: impl Store) -> Locks {
        Locks::builder()
            .build(store)
            .expect("default settings are valid")
    }

    /// Opens the store a URL names (`memory:`, `sqlite://…`, `redis://…`, `postgres://…`, …)
    /// with its `namespace` and `ttl` query options.
    pub async fn connect(url: &str) -> Result<Locks> {
        Locks::builder().connect(url).await
    }

    /// Settings for a new `Locks`: default ttl, retry policy, namespace, auto-extend.
    pub fn builder() -> LocksBuilder {
        LocksBuilder::default()
    }

    /// A lock named `key` with this factory's defaults. Bad keys (empty, over 255 bytes, NUL)
    /// are reported by the lock's first operation as [`Error::InvalidInput`].
    pub fn lock(&self, key: &str) -> Lock {
        Lock::new(self.clone(), key)
    }

    /// A semaphore named `key` of `permits` permits: each [`acquire`](Lock::acquire) of the
    /// returned lock holds one permit, with its own owner, lease and fence, while at most
    /// `permits` holders hold the key at once. Every holder of the key must ask with the same
    /// count: the count is stored with the key while anyone holds a permit, and another one
    /// is refused with [`Error::InvalidInput`](crate::Error::InvalidInput) naming both. A
    /// count of 0 or over [`MAX_PERMITS`](crate::MAX_PERMITS) is refused the same way. An
    /// acquire costs the same store round trips whatever the count.
    ///
    /// The key is held one way at a time: while permits are held, a mutex or reader of the
    /// same key waits, and the other way round. Clones of the returned lock share its owner
    /// id, so they count as one holder; make one lock per holder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// let locks = cadenas::Locks::memory();
    /// let a = locks.semaphore("api-calls", 2).try_acquire().await?;
    /// let b = locks.semaphore("api-calls", 2).try_acquire().await?;
    /// assert!(locks.semaphore("api-calls", 2).try_acquire().await.is_err());
    /// assert_eq!(locks.semaphore("api-calls", 2).available().await?, 0);
    /// assert!(a.fence() < b.fence());
    /// a.release().await?;
    /// assert_eq!(locks.semaphore("api-calls", 2).available().await?, 1);
    /// b.release().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Stores that cannot keep the count in one atomic step do not declare
    /// [`Capabilities::semaphores`](crate::Capabilities::semaphores); there every operation
    /// of the lock answers [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn semaphore(&self, key: &str, permits: u32) -> Lock {
        Lock::new(self.clone(), key).with_kind(LockKind::Permits(permits))
    }

    /// The read side of the read-write lock `key`: any number of readers hold it at once,
    /// while no writer does. The write side is [`write`](Locks::write), which is the plain
    /// [`lock`](Locks::lock) of the key: a mutex of `key` and its readers exclude each other.
    ///
    /// Writers are preferred: once a writer waits for the key, new readers wait too, so a
    /// stream of readers cannot starve it. A waiting writer records this in the store with a
    /// lease of its own (the rest of its retry timeout, at most its ttl); a writer that
    /// crashed or gave up while waiting holds readers back no longer than that. Readers that
    /// already hold keep holding. Upgrading a read holding to a write holding is not
    /// offered: two readers upgrading at once would wait for each other forever; release the
    /// read lock and acquire the write lock instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// let locks = cadenas::Locks::memory();
    /// let r1 = locks.read("config").try_acquire().await?;
    /// let r2 = locks.read("config").try_acquire().await?;
    /// assert!(locks.write("config").try_acquire().await.is_err());
    /// assert_eq!(locks.read("config").holders().await?.len(), 2);
    /// r1.release().await?;
    /// r2.release().await?;
    /// let w = locks.write("config").try_acquire().await?;
    /// assert!(locks.read("config").try_acquire().await.is_err());
    /// w.release().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Stores that cannot do this in one atomic step per operation do not declare
    /// [`Capabilities::shared_locks`](crate::Capabilities::shared_locks); there every
    /// operation of a reader answers [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn read(&self, key: &str) -> Lock {
        Lock::new(self.clone(), key).with_kind(LockKind::Shared)
    }

    /// The write side of the read-write lock `key`: the same as [`lock`](Locks::lock).
    pub fn write(&self, key: &str) -> Lock {
        self.lock(key)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The store's URL without password, for messages.
    pub fn describe(&self) -> &str {
        self.inner.store.describe()
    }

    /// The namespace prefixed to every key, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    /// Events of the leases taken through this factory (and its clones).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Live locks whose key (without namespace) starts with `prefix`, sorted by key. Keys in
    /// the result are shown without the namespace.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let span = tracing::debug_span!(
            "cadenas.list",
            prefix,
            store = self.describe(),
            outcome = tracing::field::Empty
        );
        let list = async {
            let stored_prefix = self.stored_prefix(prefix);
            let listed = self.inner.store.list(&stored_prefix).await;
            let mut infos = listed.map_err(|e| self.store_error("list", e))?;
            self.strip_namespace(&mut infos);
            Ok(infos)
        };
        observe::traced!(span, list, |r| observe::outcome(r, "listed"))
    }

    /// A failed store operation that involves no single key.
    pub(crate) fn store_error(&self, operation: &'static str, e: crate::StoreError) -> Error {
        Error::store(self.describe(), operation, None, e)
    }

    /// `prefix` as stored: within the namespace.
    pub(crate) fn stored_prefix(&self, prefix: &str) -> String {
        match &self.inner.namespace {
            Some(ns) => format!("{ns}:{prefix}"),
            None => prefix.to_owned(),
        }
    }

    /// Shows stored keys without the namespace.
    pub(crate) fn strip_namespace(&self, infos: &mut [LockInfo]) {
        if let Some(ns) = &self.inner.namespace {
            for info in infos {
                if let Some(rest) = info.key.strip_prefix(ns.as_str()) {
                    info.key = rest.strip_prefix(':').unwrap_or(rest).to_owned();
                }
            }
        }
    }

    /// Turns a token from [`Guard::serialize`] back into a held lock, after checking with the
    /// store that its owner still holds it ([`Error::NotOwned`] otherwise). The token's
    /// namespace is used, whatever this factory's is.
    pub async fn restore(&self, token: &str) -> Result<Guard> {
        let span = tracing::debug_span!(
            "cadenas.restore",
            key = tracing::field::Empty,
            store = self.describe(),
            owner = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let restore = self.restore_inner(token, &span);
        observe::traced!(span.clone(), restore, |r| observe::outcome(r, "restored"))
    }

    async fn restore_inner(&self, token: &str, span: &tracing::Span) -> Result<Guard> {
        let t = crate::token::Token::decode(token)?;
        if !span.is_disabled() {
            span.record("key", t.key.as_str());
            span.record("owner", crate::observe::owner_tag(&t.owner).as_str());
        }
        let locks = match (&t.namespace, &self.inner.namespace) {
            (a, b) if a == b => self.clone(),
            (ns, _) => Locks {
                inner: Arc::new(Inner {
                    store: self.inner.store.clone(),
                    namespace: ns.clone(),
                    ttl: self.inner.ttl,
                    retry: self.inner.retry.clone(),
                    auto_extend: self.inner.auto_extend,
                    extend_every: self.inner.extend_every,
                    events: self.inner.events.clone(),
                    metrics: self.inner.metrics.clone(),
                }),
            },
        };
        let lock = Lock::new(locks, &t.key)
            .with_kind(t.kind())
            .with_owner(t.owner.clone())
            .with_ttl(t.ttl);
        let sent = Instant::now();
        let info = lock.inspect().await?;
        // The holding of the token's owner, among every holder of the key.
        let ours = info
            .filter(|i| i.kind == lock.kind)
            .and_then(|i| i.holders.into_iter().find(|h| h.owner == t.owner));
        match ours {
            Some(holder) => {
                let fence = t.fence.or(holder.fence);
                Ok(Guard::new(
                    lock,
                    Lease {
                        fence,
                        ttl: holder.remaining,
                    },
                    sent,
                ))
            }
            _ => Err(Error::NotOwned {
                key: t.key,
                store: self.describe().to_owned(),
                owner: t.owner,
            }),
        }
    }

    /// Closes the store's connections. Locks made from this factory fail afterwards.
    pub async fn disconnect(&self) -> Result<()> {
        let closed = self.inner.store.close().await;
        closed.map_err(|e| self.store_error("disconnect", e))
    }
}

/// Settings for [`Locks`]. Values set here win over the URL's query options.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// use std::time::Duration;
/// use cadenas::{Locks, Retry};
/// let locks = Locks::builder()
///     .namespace("app")
///     .ttl(Some(Duration::from_secs(10)))
///     .retry(Retry::default().timeout(Duration::from_secs(2)))
///     .connect("memory:")
///     .await?;
/// assert_eq!(locks.namespace(), Some("app"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocksBuilder {
    namespace: Option<String>,
    ttl: Option<Option<Duration>>,
    retry: Option<Retry>,
    auto_extend: bool,
    extend_every: Option<Duration>,
}

impl LocksBuilder {
    /// Prefix every key with `namespace:` (ASCII letters, digits, `_ - . :`; at most 64 bytes).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The default lease length of new locks (default 30 s; `None` = never expires).
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The default retry policy of `acquire` (default: the store's suggestion, if it makes
    /// one — Redlock's `retry_*` options — else [`Retry::default`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Whether new locks keep their lease alive with a watchdog (default off), which extends
    /// every ttl/3 unless [`auto_extend_every`](LocksBuilder::auto_extend_every) says
    /// otherwise. See [`Lock::with_auto_extend`].
    pub fn auto_extend(mut self, on: bool) -> Self {
        self.auto_extend = on;
        self
    }

    /// New locks keep their lease alive with a watchdog that extends every `interval`; see
    /// [`Lock::with_auto_extend_every`]. [`build`](LocksBuilder::build) refuses a zero interval,
    /// or one not shorter than the default ttl, with [`Error::InvalidInput`]; a lock given a
    /// ttl of its own is checked against that one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// use std::time::Duration;
    /// let locks = cadenas::Locks::builder()
    ///     .ttl(Some(Duration::from_secs(10)))
    ///     .auto_extend_every(Duration::from_secs(2))
    ///     .connect("memory:")
    ///     .await?;
    /// let guard = locks.lock("job").acquire().await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn auto_extend_every(mut self, interval: Duration) -> Self {
        self.auto_extend = true;
        self.extend_every = Some(interval);
        self
    }

    /// Builds over `store`.
    pub fn build(self, store: impl Store) -> Result<Locks> {
        self.build_arc(Arc::new(store))
    }

    /// Builds over a shared store.
    pub fn build_arc(self, store: Arc<dyn Store>) -> Result<Locks> {
        if let Some(ns) = &self.namespace {
            key::check_namespace(ns)?;
        }
        let ttl = crate::duration::check_ttl(self.ttl.unwrap_or(Some(DEFAULT_TTL)))?;
        let retry = self
            .retry
            .or_else(|| store.default_retry())
            .unwrap_or_default();
        retry.validate()?;
        if self.auto_extend {
            crate::lock::check_extend_every("the default", self.extend_every, ttl)?;
        }
        if ttl.is_none() && !store.capabilities().ttl_none {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: "locks without ttl".into(),
            });
        }
        let metrics = crate::observe::Metrics::new(store.kind());
        Ok(Locks {
            inner: Arc::new(Inner {
                metrics,
                store,
                namespace: self.namespace,
                ttl,
                retry,
                auto_extend: self.auto_extend,
                extend_every: self.extend_every,
                events: Arc::new(Events::new()),
            }),
        })
    }

    /// Opens the store `url` names; its `namespace` and `ttl` options apply unless set here.
    pub async fn connect(mut self, url: &str) -> Result<Locks> {
        let mut parsed = crate::url::StoreUrl::parse(url)?;
        if let Some(ns) = parsed.take("namespace") {
            self.namespace.get_or_insert(ns);
        }
        if let Some(ttl) = parsed.take("ttl") {
            let ttl = crate::duration::parse_ttl(&ttl)?;
            self.ttl.get_or_insert(ttl);
        }
        // Checked before the store is opened, so a bad namespace sends no SQL (no table is
        // created for it).
        if let Some(ns) = &self.namespace {
            key::check_namespace(ns)?;
        }
        let store = crate::scheme::open(parsed).await?;
        self.build_arc(store)
    }
}
