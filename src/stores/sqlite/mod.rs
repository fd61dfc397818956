//! The SQLite store (`sqlite://PATH`): locks shared by the processes of one host, and the
//! CLI's embedded default. Feature `sqlite` (on by default).
//!
//! # Layout
//!
//! One table, `cadenas_locks` unless the URL says `?table=NAME`, with Verrou's columns plus
//! two nullable ones, so a Verrou process inserting only its three columns shares the locks:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `key` | `TEXT PRIMARY KEY` | the stored key (namespace included) |
//! | `owner` | `TEXT NOT NULL` | the holder |
//! | `expiration` | `INTEGER NULL` | epoch milliseconds by SQLite's clock; `NULL` = never |
//! | `fence` | `INTEGER NULL` | the holder's fence (cadenas only) |
//! | `metadata` | `TEXT NULL` | the holder's metadata (cadenas only) |
//! | `kind`, `permits` | `TEXT NULL`, `INTEGER NULL` | a group's row: `shared`, or `permits` and N |
//! | `waiter`, `waiter_expiration` | `TEXT NULL`, `INTEGER NULL` | a waiting writer's marker |
//!
//! A row whose `expiration` has passed is not a lock: it is never reported and the next
//! acquire takes it over. The table, and what fencing needs, is created on connect inside one
//! `BEGIN IMMEDIATE` transaction, so two processes starting at once take turns. An existing
//! table (Verrou's, or an earlier cadenas's) gets the nullable columns it lacks added; a table
//! without `key`, `owner` or `expiration` is refused with an error naming the missing column.
//!
//! # Semaphores and read-write locks
//!
//! The store holds semaphores ([`LockKind::Permits`]) and readers ([`LockKind::Shared`]) as
//! well as mutexes. A mutex is one row, as above, and its acquire is the one statement below
//! whether or not groups exist. A key held by readers or permits (a group) is one row of the
//! lock table whose `owner` is the empty string (no owner can be), with `kind` and `permits`
//! saying how it is held and an `expiration` that is its latest holder's; its holders are rows
//! of `{table}_holders` (`key`, `owner`, `expiration`, `fence`, `metadata`, primary key
//! `(key, owner)`), each with its own lease by SQLite's clock, owner, metadata and a fence from
//! the same sequence as a mutex's. So a plain acquire — and a Verrou process — finds the key
//! held exactly while one of its holders lives. Every group operation is one `BEGIN IMMEDIATE`
//! transaction; a permit count other than the one stored with the key is refused
//! ([`StoreErrorKind::InvalidInput`]), and an acquire costs the same few statements whatever
//! N is. `release`, `extend` and `set_metadata` try the owner's own row first (one statement,
//! as for a mutex), then its place in the key's group.
//!
//! A writer that waits for a held key records its marker on the key's row (`waiter`,
//! `waiter_expiration`, by SQLite's clock); while it lives, readers of other owners find the
//! key held. When the last reader leaves, a key with a live marker keeps its row, expired, so
//! the writer's plain acquire takes it (and readers still wait); a marker whose waiter is the
//! row's own owner has done its work and counts for nothing. The expiry watcher reports
//! expired holders of groups as it reports expired mutexes.
//!
//! **Verrou limit**: a Verrou process that takes a key while cadenas readers or permits hold
//! it finds it held (by an owner with an empty name) until the latest holder's lease ends, as
//! it would a mutex; but it cannot see the holders themselves, and if it deletes the key's row
//! (a force release) while they hold it, the key is free for anyone beside them: they find out
//! at their next extend or release, which finds them gone.
//!
//! The database runs in WAL mode with a 5 s busy timeout and `synchronous=NORMAL`: a commit
//! survives the crash of any process (one fsync per checkpoint rather than per operation);
//! an OS crash or power cut may undo the last commits, which can
//! only matter for fences, and the fence scheme below covers that.
//!
//! # Fences
//!
//! A one-row table `{table}_fence` holds the highest fence ever handed out; it is never reset
//! or lowered. Acquire is a single `INSERT … ON CONFLICT(key) DO UPDATE … WHERE expired …
//! RETURNING fence`, and triggers on the lock table raise the sequence to every fence
//! written — so taking the lock and advancing the sequence are one atomic statement. The
//! fence is the larger of the sequence plus one and the current time in milliseconds × 1000:
//! strictly increasing per key (in fact across the whole table) through releases, expiries,
//! takeovers, restarts and several processes, and still ahead of every earlier fence if the
//! database file is deleted or a power cut undoes commits (unless the clock was set back
//! meanwhile). Fences are therefore large numbers (about 1.7 × 10^15 in 2025), exact as
//! JavaScript numbers until the year 2255.
//!
//! # Clock
//!
//! "Now" is computed inside each statement by SQLite (`julianday('now')`), so every process
//! on the host agrees on expiry. Every operation on a mutex is one statement, but the
//! take-over ([`Store::take_over`]) and the force release (one `BEGIN IMMEDIATE`
//! transaction each, which also remove a group's holders); every operation on a group is one
//! `BEGIN IMMEDIATE` transaction.
//!
//! # Cancellation
//!
//! [`Store::try_acquire`] never abandons its statement: if the caller's future is dropped
//! before it returned, the statement is finished in a task of its own and a lock it took is
//! released in the background, so a cancelled acquire never leaves a lock held. Other
//! operations, cancelled, may or may not have happened.
//!
//! # Across processes
//!
//! Waiters in this process wake the moment a lock (a reader, a permit) is released through
//! any `SqliteStore` of this process on the same file and table ([`Store::subscribe`]); a
//! reader or permit holder that gets in while room is left wakes the next waiter. Releases by other
//! processes are not signalled: waiters find them by polling at their retry delay.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use cadenas::stores::sqlite::SqliteStore;
//! use cadenas::{Acquire, AcquireRequest, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite://{}?table=my_locks", dir.path().join("locks.db").display());
//! let store = SqliteStore::connect(&url).await?;
//! let request = AcquireRequest::new("reports", "me", Some(Duration::from_secs(30)));
//! let Acquire::Acquired(lease) = store.try_acquire(request).await? else { panic!("held") };
//! println!("fence {:?}", lease.fence);
//! assert!(store.release("reports", "me").await?);
//! store.close().await?;
//! # Ok(()) }
//! ```

mod errors;
mod group;
mod schema;
mod statements;
mod take_over;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Holder, Lease, LockInfo, LockKind, Store, StoreError,
    StoreErrorKind, Subscription,
};
use crate::stores::sql::errors::connect_error;
use crate::stores::sql::group::{lock_infos, JoinedRow, GROUP_OWNER};
use crate::stores::sql::options::take_table;
use crate::stores::sql::rows;
use crate::stores::sql::{self as core, check_identifier};
use crate::url::{StoreUrl, COMMON_OPTIONS};

use errors::{map_error, Target};
use statements::Sql;

/// The table used unless the URL says `?table=NAME`.
pub const DEFAULT_TABLE: &str = core::DEFAULT_TABLE;
/// How long a statement waits for another connection's write before failing as busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections a store opens to a file (one for `sqlite::memory:`).
const MAX_CONNECTIONS: u32 = 4;

/// Locks in a SQLite database, shared by every process of the host that opens the same file.
/// See the [module docs](self) for the layout and guarantees.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    sql: Sql,
    describe: String,
    /// The database file, to name it in errors (`None` for memory).
    path: Option<PathBuf>,
    notifier: Arc<ReleaseNotifier>,
    /// `sqlite::memory:`: a connection of its own, never used, that keeps the in-memory
    /// database (a shared-cache one) alive while the pool replaces its connection (sqlx
    /// closes one whose ping fails on release, for instance after a cancelled statement).
    _keeper: Option<Mutex<sqlx::SqliteConnection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("database", &self.inner.describe)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database a URL names: `sqlite://PATH` (relative),
    /// `sqlite:///ABSOLUTE/PATH`, `sqlite:PATH`, or `sqlite::memory:` (private to this store).
    /// Option `table=NAME` picks the table; the lock-layer options `namespace` and `ttl` are
    /// ignored here; any other option is an error. The directory must exist.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        let mut url = StoreUrl::parse(url)?;
        for name in COMMON_OPTIONS {
            url.take(name);
        }
        Self::from_url(url).await
    }

    /// Like [`connect`](Self::connect), from a parsed URL whose lock-layer options have been
    /// taken out.
    pub async fn from_url(mut url: StoreUrl) -> Result<SqliteStore> {
        crate::scheme::SQLITE.check(&url)?;
        let table = take_table(&mut url)?;
        url.reject_unknown(&["table"])?;
        let target = Target::from_url(&url.url)?;
        let describe = target.describe();
        let (options, pool) = match &target {
            Target::Memory => (
                SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(|e| Error::config(format!("sqlite::memory: ({e})")))?,
                // One connection that never closes: the database lives as long as it does.
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
            ),
            Target::File(path) => (
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
                SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS),
            ),
        };
        let path = match target {
            Target::File(path) => Some(path),
            Target::Memory => None,
        };
        let pool = pool.acquire_timeout(BUSY_TIMEOUT * 2);
        let options = options.busy_timeout(BUSY_TIMEOUT);
        // Switching a new file to WAL needs a moment alone with it, and SQLite answers "busy"
        // at once (without its busy handler) while another process is doing the same: two
        // processes starting together take turns here.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let pool = loop {
            match pool.clone().connect_with(options.clone()).await {
                Ok(p) => break p,
                Err(e) => {
                    let e = map_error(e, &describe, path.as_deref());
                    if e.kind != StoreErrorKind::Transient || std::time::Instant::now() >= deadline
                    {
                        return Err(connect_error(&describe, e));
                    }
                    let pause = rand::random_range(5..50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        };
        Self::build(pool, &table, describe, path).await
    }

    /// Uses a pool you built. Set WAL mode and a busy timeout on it for use across processes;
    /// for an in-memory database give it one connection that never closes. The table is
    /// created if missing, as with [`connect`](Self::connect).
    pub async fn from_pool(pool: SqlitePool, table: &str) -> Result<SqliteStore> {
        check_identifier("table", table)?;
        let file = pool.connect_options().get_filename().to_path_buf();
        let name = file.to_string_lossy();
        if name == ":memory:" || name.starts_with("file:sqlx-in-memory-") {
            return Self::build(pool, table, "sqlite::memory:".to_owned(), None).await;
        }
        let describe = Target::File(file.clone()).describe();
        Self::build(pool, table, describe, Some(file)).await
    }

    async fn build(
        pool: SqlitePool,
        table: &str,
        describe: String,
        path: Option<PathBuf>,
    ) -> Result<SqliteStore> {
        let map = |e| map_error(e, &describe, path.as_deref());
        if let Err(e) = schema::ensure(&pool, table, map).await {
            pool.close().await;
            return Err(e.into_error(&describe));
        }
        let notifier = shared_notifier(path.as_deref(), table);
        let shared_memory = pool
            .connect_options()
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-");
        let mut keeper = None;
        if shared_memory {
            match sqlx::ConnectOptions::connect(&*pool.connect_options()).await {
                Ok(c) => keeper = Some(Mutex::new(c)),
                Err(e) => {
                    pool.close().await;
                    return Err(connect_error(&describe, map(e)));
                }
            }
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                pool,
                sql: Sql::new(table),
                describe,
                path,
                notifier,
                _keeper: keeper,
            }),
        })
    }

    /// The connection pool, e.g. to inspect the table yourself.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }
}

/// One notifier per (file, table) in this process, so a release through one store wakes
/// waiters of another store on the same file.
fn shared_notifier(path: Option<&Path>, table: &str) -> Arc<ReleaseNotifier> {
    type Registry = Mutex<HashMap<(PathBuf, String), Weak<ReleaseNotifier>>>;
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let Some(path) = path else {
        return ReleaseNotifier::new();
    };
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut map = REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.retain(|_, notifier| notifier.strong_count() > 0);
    let key = (path, table.to_owned());
    if let Some(notifier) = map.get(&key).and_then(Weak::upgrade) {
        return notifier;
    }
    let notifier = ReleaseNotifier::new();
    map.insert(key, Arc::downgrade(&notifier));
    notifier
}

/// A ttl in whole milliseconds, rounded up so the store never holds less than asked.
fn ttl_millis(ttl: Option<Duration>) -> Option<i64> {
    // Capped (at about 285,000 years) far below overflow of `now + ttl`.
    ttl.map(|t| {
        i64::try_from(crate::duration::ttl_millis(t))
            .map_or(i64::MAX / 1024, |ms| ms.min(i64::MAX / 1024))
    })
}

/// A `try_acquire` request, owned so that a dropped acquire finishes it in a task of its own.
struct Request {
    key: String,
    owner: String,
    ttl: Option<Duration>,
    metadata: Option<String>,
    kind: LockKind,
    writer_waiting: Option<Duration>,
}

impl Inner {
    fn error(&self, e: sqlx::Error) -> StoreError {
        map_error(e, &self.describe, self.path.as_deref())
    }

    /// One try: the plain statement for an exclusive request (then, when the key is held, an
    /// informational read of the holder, and a waiting writer's marker when readers or
    /// permits hold it); one transaction for a reader or a permit.
    async fn acquire(&self, r: &Request) -> std::result::Result<Acquire, StoreError> {
        if r.kind != LockKind::Exclusive {
            let join = group::Join {
                key: &r.key,
                owner: &r.owner,
                ttl: r.ttl,
                metadata: r.metadata.as_deref(),
                kind: r.kind,
            };
            let (answer, room_left) = self.join(&join).await?;
            if room_left && matches!(answer, Acquire::Acquired(_)) {
                // Let the next waiter in too: a release woke only this one.
                self.notifier.notify(&r.key);
            }
            return Ok(answer);
        }
        let took: Option<Option<i64>> = sqlx::query_scalar(&self.sql.acquire)
            .bind(&r.key)
            .bind(&r.owner)
            .bind(ttl_millis(r.ttl))
            .bind(r.metadata.as_deref())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        if let Some(fence) = took {
            let fence = rows::fence(fence);
            return Ok(Acquire::Acquired(Lease { fence, ttl: r.ttl }));
        }
        // Informational, so a separate read: the holder may have left meanwhile.
        let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&self.sql.holder)
            .bind(&r.key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let Some((owner, remaining_ms)) = row else {
            return Ok(Acquire::Held(Holder::default()));
        };
        if let Some(lease) = r
            .writer_waiting
            .filter(|_| owner.as_deref() == Some(GROUP_OWNER))
        {
            // Readers or permits hold the key: hold new readers back. (A mutex's row would
            // take the marker with it when released, so a mutex's waiters write nothing.)
            if let Some(holder) = self.mark_writer(&r.key, &r.owner, lease).await? {
                return Ok(Acquire::Held(holder));
            }
        }
        Ok(Acquire::Held(
            self.held_by(&r.key, owner, remaining_ms).await?,
        ))
    }

    /// The plain statement; when `owner` holds no row of its own, its place in the key's
    /// group, if any.
    async fn release(&self, key: &str, owner: &str) -> std::result::Result<bool, StoreError> {
        let live = sqlx::query_scalar(&self.sql.release)
            .bind(key)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let live = match live {
            Some(live) => Some(live),
            None => self.leave(key, owner).await?,
        };
        Ok(self.released(key, live))
    }

    /// Notifies waiters when a row was deleted (`live` is whether its lease was live), and
    /// tells whether it was.
    fn released(&self, key: &str, live: Option<bool>) -> bool {
        let Some(live) = live else {
            return false;
        };
        self.notifier.notify(key);
        live
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::SQLITE.kind
    }

    /// Everything: fencing, notification (same process only; other processes are found by
    /// polling), ttl none, list, sharing between processes, the expiry watcher, semaphores
    /// and read-write locks.
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    /// One statement for a mutex, one transaction for a reader or a permit
    /// (`stores::detach`): if the future is dropped, the request is finished in a task of its
    /// own and a lock it took is released in the background.
    async fn try_acquire(
        &self,
        request: AcquireRequest<'_>,
    ) -> std::result::Result<Acquire, StoreError> {
        let (inner, gone) = (self.inner.clone(), self.inner.clone());
        let r = Request {
            key: request.key.to_owned(),
            owner: request.owner.to_owned(),
            ttl: request.ttl,
            metadata: request.metadata.map(str::to_owned),
            kind: request.kind,
            writer_waiting: request.writer_waiting,
        };
        let (k, o) = (r.key.clone(), r.owner.clone());
        let statement = async move { inner.acquire(&r).await };
        let release = move || {
            let (gone, k, o) = (gone.clone(), k.clone(), o.clone());
            async move { gone.release(&k, &o).await }
        };
        crate::stores::detach::acquire(request.key, &self.inner.describe, statement, release).await
    }

    async fn release(&self, key: &str, owner: &str) -> std::result::Result<bool, StoreError> {
        self.inner.release(key, owner).await
    }

    /// One `BEGIN IMMEDIATE` transaction (read the live holder, overwrite the row).
    async fn take_over(
        &self,
        request: AcquireRequest<'_>,
    ) -> std::result::Result<crate::store::TakeOver, StoreError> {
        self.inner.take_over(&request).await
    }

    /// The plain statement; when `owner` holds no row of its own, its place in the key's
    /// group (one transaction).
    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> std::result::Result<Option<Lease>, StoreError> {
        let inner = &self.inner;
        let extended: Option<Option<i64>> = sqlx::query_scalar(&inner.sql.extend)
            .bind(key)
            .bind(owner)
            .bind(ttl_millis(ttl))
            .fetch_optional(&inner.pool)
            .await
            .map_err(|e| inner.error(e))?;
        match extended {
            Some(fence) => Ok(Some(Lease {
                fence: rows::fence(fence),
                ttl,
            })),
            None => inner.extend_in_group(key, owner, ttl).await,
        }
    }

    /// The plain statement; when `owner` holds no row of its own, its place in the key's
    /// group.
    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> std::result::Result<bool, StoreError> {
        let inner = &self.inner;
        let done = sqlx::query(&inner.sql.set_metadata)
            .bind(key)
            .bind(owner)
            .bind(metadata)
            .execute(&inner.pool)
            .await
            .map_err(|e| inner.error(e))?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        inner.set_metadata_in_group(key, owner, metadata).await
    }

    /// One transaction: the key's row and every holder of its group.
    async fn force_release(&self, key: &str) -> std::result::Result<bool, StoreError> {
        let live = self.inner.force_release(key).await?;
        Ok(self.inner.released(key, live))
    }

    /// One statement: the key's row joined with its group's live holders.
    async fn inspect(&self, key: &str) -> std::result::Result<Option<LockInfo>, StoreError> {
        let inner = &self.inner;
        let found: Vec<JoinedRow> = sqlx::query_as(&inner.sql.inspect)
            .bind(key)
            .fetch_all(&inner.pool)
            .await
            .map_err(|e| inner.error(e))?;
        Ok(lock_infos(found).into_iter().next())
    }

    /// One statement, as [`inspect`](Store::inspect).
    async fn list(&self, prefix: &str) -> std::result::Result<Vec<LockInfo>, StoreError> {
        let inner = &self.inner;
        let found: Vec<JoinedRow> = sqlx::query_as(&inner.sql.list)
            .bind(prefix)
            .fetch_all(&inner.pool)
            .await
            .map_err(|e| inner.error(e))?;
        Ok(lock_infos(found))
    }

    /// One transaction: `DELETE … RETURNING` of the expired rows and group holders under
    /// `prefix` (and of the rows of groups left with no holder and no waiting writer).
    async fn reap_expired(&self, prefix: &str) -> std::result::Result<Vec<LockInfo>, StoreError> {
        let mut infos = self.inner.reap(prefix).await?;
        infos.sort_by(|a, b| a.key.cmp(&b.key).then(a.fence.cmp(&b.fence)));
        Ok(infos)
    }

    /// Wakes on releases made through any `SqliteStore` of this process on the same file and
    /// table; releases by other processes are found by the waiter's polling.
    async fn subscribe(&self, key: &str) -> std::result::Result<Option<Subscription>, StoreError> {
        Ok(Some(self.inner.notifier.subscribe(key)))
    }

    /// Closes the pool; waiters wake and find the store closed on their next try.
    async fn close(&self) -> std::result::Result<(), StoreError> {
        self.inner.pool.close().await;
        self.inner.notifier.notify_all();
        Ok(())
    }
}
