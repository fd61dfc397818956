//! The store contract: the one trait a backend implements.
//!
//! A store knows how to do a handful of atomic operations on one lock record. Everything
//! else — retry loops, the watchdog, events, `run`, tokens — lives above this trait in
//! [`Lock`](crate::Lock) and [`Locks`](crate::Locks), written once for every store.
//!
//! Every method must be **one atomic step in the store** (one Lua script, one SQL statement
//! or transaction, one critical section), and expiry must be decided by the store's clock
//! wherever the store has one.
//!
//! Keys reaching a store are already validated and namespaced (`namespace:key`), at most
//! 255 bytes of UTF-8 without NUL; owners are non-empty strings of at most 255 bytes;
//! ttls are between 1 ms and one year, or `None` for "never expires".

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::kind::{LockKind, MAX_PERMITS};

/// A boxed error from a store's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a store can do. The conformance suite checks each declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Fences strictly increase per key across releases, expiries and client restarts.
    /// A store that cannot promise this returns `None` fences and sets this to `false`.
    pub fencing: bool,
    /// [`Store::subscribe`] wakes waiters on every release, by any client, so hand-off
    /// needs no polling. `false` with a subscription all the same: it hears the releases of
    /// this process only, and waiters poll for the others'.
    pub notify: bool,
    /// Locks with no ttl (`None`, never expire) are supported.
    pub ttl_none: bool,
    /// [`Store::list`] is supported.
    pub list: bool,
    /// Several OS processes (and hosts, for network stores) share the locks.
    pub shared: bool,
    /// [`Store::reap_expired`] is supported, so the expiry watcher
    /// ([`Locks::watch_expiries`](crate::Locks::watch_expiries)) works.
    pub expiry_watch: bool,
    /// [`Store::take_over`] is supported: a held lock can be taken by force in one atomic
    /// step. A store that can only `force_release` then `try_acquire` (two steps another
    /// client can slip between) sets this to `false` (Redlock).
    pub take_over: bool,
    /// [`Store::inspect`], [`Store::list`] and a take-over's displaced holder report the
    /// holder's fence. A fencing store that hands fences out without recording them (Redis
    /// without `records=true`) sets this to `false` and reports `None` for holdings whose
    /// fence it did not record.
    pub inspect_fence: bool,
    /// Another client of the store sees a holding in full: its owner, remaining time, fence
    /// and metadata through [`Store::inspect`], and can force-release it or restore its token.
    /// A store that keeps these in the client holding the lock (session-mode SQL locks, where
    /// the server keeps only the lock) sets this to `false`: another client then sees only
    /// that the key is held, and by which server session.
    pub shared_records: bool,
    /// Semaphores ([`LockKind::Permits`]): up to N holders of one key at once, each with its
    /// own owner, lease and fence. The lock layer sends such requests only to a store that
    /// declares this; it answers [`Error::Unsupported`](crate::Error::Unsupported) elsewhere.
    pub semaphores: bool,
    /// Read-write locks ([`LockKind::Shared`] holders, and the writer-waiting marker of
    /// [`AcquireRequest::writer_waiting`]). The lock layer sends such requests only to a store
    /// that declares this; it answers [`Error::Unsupported`](crate::Error::Unsupported) elsewhere.
    pub shared_locks: bool,
}

impl Capabilities {
    /// Everything on: what a full-featured store declares.
    pub const ALL: Capabilities = Capabilities {
        fencing: true,
        notify: true,
        ttl_none: true,
        list: true,
        shared: true,
        expiry_watch: true,
        take_over: true,
        inspect_fence: true,
        shared_records: true,
        semaphores: true,
        shared_locks: true,
    };

    /// The same, without semaphores and read-write locks: what a store that holds only
    /// exclusive locks declares (`Capabilities::ALL.exclusive_only()`).
    pub const fn exclusive_only(self) -> Capabilities {
        Capabilities {
            semaphores: false,
            shared_locks: false,
            ..self
        }
    }

    /// Whether the store holds locks of `kind` (exclusive locks: always).
    pub fn holds(&self, kind: LockKind) -> bool {
        match kind {
            LockKind::Exclusive => true,
            LockKind::Shared => self.shared_locks,
            LockKind::Permits(_) => self.semaphores,
        }
    }
}

/// One request to take a lock.
#[derive(Debug, Clone, Copy)]
pub struct AcquireRequest<'a> {
    /// The stored key (namespace already applied).
    pub key: &'a str,
    /// Who takes it.
    pub owner: &'a str,
    /// Lease length; `None` = never expires.
    pub ttl: Option<Duration>,
    /// Optional payload readable by anyone through `inspect`.
    pub metadata: Option<&'a str>,
    /// Other clients must be able to read this holding's fence (`inspect`, `list`): a store
    /// that skips the holding's record for speed ([`Capabilities::inspect_fence`] `false`)
    /// writes one for this request. Leader election asks for it (the term is the fence).
    pub recorded: bool,
    /// How the holding shares the key (default: exclusive).
    pub kind: LockKind,
    /// For an exclusive request on a store with [`Capabilities::shared_locks`]: when the key
    /// is held, record that this owner waits to write, for this long by the store's clock
    /// (refreshed by each try; cleared when this owner takes the key). While such a marker
    /// lives, shared requests of other owners find the key held, so readers cannot starve a
    /// waiting writer; a writer that crashed while waiting holds readers back no longer than
    /// the marker's lease. `None` (the default, and every `try_acquire`): no marker.
    pub writer_waiting: Option<Duration>,
}

impl<'a> AcquireRequest<'a> {
    /// A request for `key` by `owner` with lease `ttl` (`None` = never expires) and no
    /// metadata.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cadenas::AcquireRequest;
    ///
    /// let request = AcquireRequest::new("reports", "me", Some(Duration::from_secs(30)))
    ///     .with_metadata(Some("pid 42"));
    /// assert_eq!((request.key, request.metadata), ("reports", Some("pid 42")));
    /// ```
    pub fn new(key: &'a str, owner: &'a str, ttl: Option<Duration>) -> Self {
        AcquireRequest {
            key,
            owner,
            ttl,
            metadata: None,
            recorded: false,
            kind: LockKind::Exclusive,
            writer_waiting: None,
        }
    }

    /// The same request for a holding of `kind`.
    pub fn with_kind(self, kind: LockKind) -> Self {
        AcquireRequest { kind, ..self }
    }

    /// The same request, recording a writer-waiting marker for `lease` when the key is held
    /// ([`writer_waiting`](AcquireRequest::writer_waiting)).
    pub fn with_writer_waiting(self, lease: Option<Duration>) -> Self {
        AcquireRequest {
            writer_waiting: lease,
            ..self
        }
    }

    /// The same request carrying `metadata`.
    pub fn with_metadata(self, metadata: Option<&'a str>) -> Self {
        AcquireRequest { metadata, ..self }
    }

    /// The same request, with its fence readable by other clients
    /// ([`recorded`](AcquireRequest::recorded)).
    pub fn with_recorded(self, recorded: bool) -> Self {
        AcquireRequest { recorded, ..self }
    }
}

/// A lease the store granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The fence of this acquisition, or `None` on stores without fencing.
    pub fence: Option<u64>,
    /// How long the store promises the lease from the moment the request was sent
    /// (`None` = no expiry). Usually the requested ttl; Redlock reports its validity.
    pub ttl: Option<Duration>,
}

/// Who holds a lock that could not be taken, as far as the store told us cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// The holder's owner string, when known.
    pub owner: Option<String>,
    /// Time left on the holder's lease, when known (`None` also for "never expires").
    pub remaining: Option<Duration>,
}

/// The answer to [`Store::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is ours.
    Acquired(Lease),
    /// Someone holds it (possibly the same owner: locks are not re-entrant).
    Held(Holder),
}

/// The answer to [`Store::take_over`]: the lease we now hold, and whose we replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// Our lease, as [`Acquire::Acquired`] would report it.
    pub lease: Lease,
    /// The live lease the take-over replaced; `None` when the key was free or its lease had
    /// expired.
    pub displaced: Option<Displaced>,
}

/// A holder whose live lease a [`Store::take_over`] replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displaced {
    /// The displaced holder's owner string.
    pub owner: String,
    /// Its fence, when the store has fencing and the holding had one (a Verrou process
    /// writes none).
    pub fence: Option<u64>,
}

/// What anyone can read about a held lock.
///
/// The single-holder fields (`owner`, `remaining`, `fence`, `metadata`) describe the
/// exclusive holder, or — for a key held by readers or by permits of a semaphore — its first
/// holder (the one with the lowest fence). [`holders`](LockInfo::holders) lists every holder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The stored key (with namespace).
    pub key: String,
    /// The holder (the first one, when several share the key).
    pub owner: String,
    /// Time left on the lease by the store's clock; `None` = never expires.
    pub remaining: Option<Duration>,
    /// The holder's fence, when the store has fencing.
    pub fence: Option<u64>,
    /// The holder's metadata.
    pub metadata: Option<String>,
    /// How the key is held: exclusively (also every lock of a store without shared locks
    /// or semaphores), by readers, or by permits of a semaphore of N.
    pub kind: LockKind,
    /// Every holder, sorted by fence (the exclusive holder alone for an exclusive lock).
    pub holders: Vec<HolderInfo>,
}

/// One holder of a key: what [`LockInfo::holders`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderInfo {
    /// The holder's owner string.
    pub owner: String,
    /// Time left on its lease by the store's clock; `None` = never expires.
    pub remaining: Option<Duration>,
    /// Its fence, when the store has fencing.
    pub fence: Option<u64>,
    /// Its metadata.
    pub metadata: Option<String>,
}

impl HolderInfo {
    /// Builds a holder; stores use this, since the struct is `#[non_exhaustive]`.
    pub fn new(
        owner: impl Into<String>,
        remaining: Option<Duration>,
        fence: Option<u64>,
        metadata: Option<String>,
    ) -> Self {
        HolderInfo {
            owner: owner.into(),
            remaining,
            fence,
            metadata,
        }
    }
}

impl LockInfo {
    /// A key held by a group (`kind` shared or permits) of `holders`, which must not be
    /// empty: the single-holder fields show the holder with the lowest fence. `None` for no
    /// holders.
    pub fn group(
        key: impl Into<String>,
        kind: LockKind,
        mut holders: Vec<HolderInfo>,
    ) -> Option<Self> {
        holders.sort_by_key(|h| h.fence);
        let first = holders.first()?.clone();
        Some(LockInfo {
            key: key.into(),
            owner: first.owner,
            remaining: first.remaining,
            fence: first.fence,
            metadata: first.metadata,
            kind,
            holders,
        })
    }

    /// Builds a record; stores use this, since the struct is `#[non_exhaustive]`.
    pub fn new(
        key: impl Into<String>,
        owner: impl Into<String>,
        remaining: Option<Duration>,
        fence: Option<u64>,
        metadata: Option<String>,
    ) -> Self {
        let owner = owner.into();
        let holder = HolderInfo::new(owner.clone(), remaining, fence, metadata.clone());
        LockInfo {
            key: key.into(),
            owner,
            remaining,
            fence,
            metadata,
            kind: LockKind::Exclusive,
            holders: vec![holder],
        }
    }
}

/// Something that resolves when a key may have been released: the inside of a
/// [`Subscription`]. Spurious wake-ups are harmless (the waiter just tries again).
#[async_trait]
pub trait ReleaseWait: Send {
    /// Waits for the next release notification. Must be cancel safe: a notification that
    /// arrives while no one waits is kept for the next call.
    async fn released(&mut self);

    /// Hands a notification this waiter received but could not use (its try was cancelled
    /// or failed with an error) to another waiter of the key, for stores that wake one
    /// waiter per release. The default does nothing (every waiter is woken anyway).
    fn pass_on(&mut self) {}

    /// How many waiters of this process are ahead of this one for the key, for stores that
    /// wake one waiter per release in the order the waiters came: only the first of them
    /// polls the store when its pause runs out (the fall-back for a lost notification), the
    /// others wait for their turn. The default, 0, makes every waiter poll at the retry
    /// policy's delay.
    fn ahead(&self) -> usize {
        0
    }

    /// Makes this subscription an observer's: it is woken by every release of the key, and
    /// never takes a waiter's turn (a release still wakes the first waiter too, and this
    /// subscription is not counted in anyone's [`ahead`](ReleaseWait::ahead)). For those
    /// who watch a key without trying to take it, such as an election's observers. The
    /// default does nothing (every waiter is woken anyway).
    fn observe(&mut self) {}
}

/// A subscription to releases of one key, taken *before* the first try so that a release
/// between a failed try and the wait is not missed.
pub struct Subscription(Box<dyn ReleaseWait>);

impl Subscription {
    /// Wraps a store's [`ReleaseWait`].
    pub fn new(wait: impl ReleaseWait + 'static) -> Self {
        Subscription(Box::new(wait))
    }

    /// Waits for the next release notification.
    ///
    /// # Cancel safety
    /// Cancel safe: a notification that arrives while no one waits is kept for the next call.
    pub async fn released(&mut self) {
        self.0.released().await
    }

    /// Gives a notification this waiter could not use to another waiter (see
    /// [`ReleaseWait::pass_on`]).
    pub fn pass_on(&mut self) {
        self.0.pass_on()
    }

    /// How many waiters of this process are ahead of this one (see [`ReleaseWait::ahead`]).
    pub fn ahead(&self) -> usize {
        self.0.ahead()
    }

    /// Turns this into an observer's subscription (see [`ReleaseWait::observe`]).
    pub fn observe(&mut self) {
        self.0.observe()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// How a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached (connection refused, DNS, TLS handshake, auth).
    /// Retrying later may help.
    Unavailable,
    /// A passing failure (timeout, dropped connection, busy); retrying may help.
    Transient,
    /// The store answered but refused: wrong data type under the key, a table with the
    /// wrong columns, a file that is not a database. Retrying will not help.
    Rejected,
    /// The store does not support this operation.
    Unsupported,
    /// The request contradicts what the key holds: a semaphore asked with another permit
    /// count than its holders use. The lock layer reports it as
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) with this message.
    InvalidInput,
}

/// An error from a store's driver, before the lock layer adds the key.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What kind of failure.
    pub kind: StoreErrorKind,
    /// A message for people: what happened and what to do.
    pub message: String,
    /// The driver's error.
    #[source]
    pub source: Option<BoxError>,
}

impl StoreError {
    /// A new error with a message and no source.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the driver's error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether retrying the operation may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::Transient
        )
    }
}

/// The store contract. Object safe: `Locks` holds an `Arc<dyn Store>`.
///
/// Implement the seven operations; `subscribe` and `close` have defaults. Run
/// [`conformance`](crate::conformance) (feature `conformance`) against your store in its tests.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The store as users should see it in messages: its URL without any password.
    fn describe(&self) -> &str;

    /// The store's kind, a short label that is never a URL: the `store` label of metrics
    /// (see [`observe`](crate::observe)). Built-in stores answer their kind in the crate's
    /// table of schemes (`memory`, `sqlite`, `redis`, `redis+cluster`, `redlock`,
    /// `postgres`, `mysql`, `etcd`); the default is `other`.
    fn kind(&self) -> &'static str {
        crate::scheme::OTHER_KIND
    }

    /// What this store can do.
    fn capabilities(&self) -> Capabilities;

    /// Takes `key` for `owner` if no live lease exists (an expired one is taken over), in one
    /// atomic step. A key held by the same owner counts as held: locks are not re-entrant.
    ///
    /// On a store that declares [`Capabilities::shared_locks`] or
    /// [`Capabilities::semaphores`], `request.kind` says how the holding shares the key
    /// (see [`LockKind`]): a shared request joins live shared holders unless another owner's
    /// writer-waiting marker lives; a permit request of N joins live permit holders of N
    /// while fewer than N hold; an exclusive request needs the key free of every holder.
    /// Each holding gets its own lease and a fence from the key's one source, so fences
    /// increase across kinds. Whatever N is, this stays one step. The lock layer never sends
    /// a kind the store does not declare, so a store without them may ignore `kind`.
    ///
    /// # Cancel safety
    /// Must be cancel safe: a future dropped at any point before it returns never leaves a
    /// lock held — whatever its request took is given back, in the background if need be —
    /// and that clean-up never releases a later holding of the key. The lock layer relies on
    /// it and calls this method directly. A store that answers without suspending has nothing
    /// to clean up; one whose request must not be abandoned half-way (a SQL statement) hands
    /// a request its caller dropped to a task of its own, which finishes it and releases a
    /// lock it took.
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError>;

    /// Releases `key` if `owner` holds a live lease on it. `Ok(false)` when it did not.
    /// On a key held by several (readers, permits), `owner` names the holding to release;
    /// `extend` and `set_metadata` work per holding the same way.
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError>;

    /// [`release`](Store::release), told the fence of the holding being released (`None` if
    /// it had none): what the lock layer calls when a guard is released or dropped. The
    /// default ignores the fence. A store whose next fence depends on it overrides this:
    /// each Redlock node that releases the holding sets its fence counter to the released
    /// fence, so that the next holder's fence is above it whichever quorum grants it.
    async fn release_holding(
        &self,
        key: &str,
        owner: &str,
        fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        let _ = fence;
        self.release(key, owner).await
    }

    /// Sets the lease of `key` held by `owner` to `ttl` counted from now. `Ok(None)` when
    /// `owner` does not hold a live lease (it expired, or someone else holds it).
    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError>;

    /// Replaces the metadata of `key` held by `owner`. `Ok(false)` when `owner` does not hold it.
    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Removes the lock on `key` whoever holds it. `Ok(false)` when nothing live was there.
    async fn force_release(&self, key: &str) -> Result<bool, StoreError>;

    /// Reads the live lock on `key`, if any.
    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError>;

    /// Lists live locks whose stored key starts with `prefix` (empty = all), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError>;

    /// Removes the records under `prefix` (empty = all) whose lease has run out and that are
    /// still stored, and returns them (`remaining` = zero), in one atomic step per record: when
    /// several processes call this at once, each record is returned to exactly one of them.
    /// Records released by their owner are not returned. The default answers
    /// [`StoreErrorKind::Unsupported`]; a store that implements it declares
    /// [`Capabilities::expiry_watch`].
    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let _ = prefix;
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            format!("{} cannot report expired locks", self.describe()),
        ))
    }

    /// Makes `request.owner` the holder of `request.key` whatever the key's state (held by
    /// anyone, this owner included; expired; free), in **one atomic step**, with
    /// `request.ttl` and `request.metadata`, and a fence strictly greater than every fence
    /// handed out before for the key (drawn from the same source as
    /// [`try_acquire`](Store::try_acquire)'s). Answers the new lease and the live lease it
    /// replaced, if any (an expired lease is not "displaced": it had already ended).
    ///
    /// The displaced holder is not told: it finds out at its next check, when its extend,
    /// release or metadata update finds another owner. Waiters for the key keep waiting (the
    /// key was never free). Several take-overs of one key at once are serialized by the
    /// store: each displaces the one before, so their fences increase in the order the store
    /// applied them.
    ///
    /// The default answers [`StoreErrorKind::Unsupported`]; a store that implements it
    /// declares [`Capabilities::take_over`]. Like every method, cancelling the future may or
    /// may not leave the take-over done; the lock layer (`Lock::take_over`) runs it so that a
    /// cancelled call never leaves the lock held.
    async fn take_over(&self, request: AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        let _ = request;
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            format!(
                "{} cannot take a held lock over in one atomic step",
                self.describe()
            ),
        ))
    }

    /// Subscribes to releases of `key`. `Ok(None)` (the default) means the store cannot
    /// notify, and waiters poll.
    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        let _ = key;
        Ok(None)
    }

    /// The retry policy this store suggests for `acquire` when the [`Locks`](crate::Locks)
    /// builder is given none (Redlock's `retry_delay`, `retry_jitter`, `retry_count`).
    /// `None` (the default): the lock layer's own default.
    fn default_retry(&self) -> Option<crate::Retry> {
        None
    }

    /// Closes connections. Operations after `close` may fail.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
