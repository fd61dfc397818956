//! The PostgreSQL store (feature `postgres`): `postgres://user:pass@host:port/db?table=NAME`.
//!
//! # Table
//!
//! One row per held lock in a table (default `cadenas_locks`) whose first three columns
//! are Verrou's — `"key" varchar(255) primary key, "owner" varchar(255) not null,
//! "expiration" bigint null` (epoch milliseconds, `NULL` = never expires) — plus nullable
//! columns of ours, `"fence" bigint`, `"metadata" text` and `"waiting" boolean` (see
//! *Hand-off*), and `"kind" text`, `"permits" integer`, `"waiter" varchar(255)`,
//! `"waiter_expiration" bigint` (see *Semaphores and read-write locks*). A Verrou process inserting only its three columns shares the table
//! (`?table=verrou`); a table Verrou (or an older cadenas) created first gets our nullable
//! columns added, which needs the `ALTER` privilege once. A table that lacks one of Verrou's
//! columns is refused with an error naming it. The table and a sequence `<table>_fence_seq`
//! are created on first use, race-free (see `schema.rs`).
//!
//! URL options: `mode=lease` (the default) or `mode=session` (see *Session mode*),
//! `table=NAME`, `schema=NAME` (default: the connection's `current_schema()`),
//! `unlogged=true`, `synchronous_commit=off`, `pool_size=N` (default 10),
//! `acquire_timeout=DUR` (default 10s), `test_before_acquire=false` (see *Speed*), and the
//! driver's own `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `application_name`,
//! `options`, `statement-cache-capacity`.
//!
//! `unlogged=true` creates the table `UNLOGGED`: writes skip the WAL, so acquire and release
//! are faster, but after a crash of the server (not a clean restart) PostgreSQL empties the
//! table — every lock is released at once, which may let two holders run together — and the
//! table is not replicated to standbys. The fence sequence stays logged, so fences still
//! never go backwards. It only applies when cadenas creates the table.
//!
//! `synchronous_commit=off` (any value of PostgreSQL's setting is accepted) sets
//! `synchronous_commit` on the store's connections: acquire, release and extend answer
//! before their commit is flushed to disk instead of waiting for the flush, which is most
//! of their time on a durable table. The WAL writer flushes them within about three times
//! `wal_writer_delay` (200 ms by default). If the *server* crashes (the machine or the
//! postgres process; a clean restart or a crash of the client loses nothing) the commits of
//! that last moment are lost: an acquisition that was answered may vanish, so **the lock may
//! be granted twice after the crash**, as with `unlogged=true`; a release may come back (the
//! lock stays held until its ttl runs out); an extension may be undone (the lease ends
//! sooner than its holder was told; a watchdog finds it gone and fires the lost signal); and
//! a fence handed out in that moment may be handed out again, because the fence sequence's
//! own progress was not flushed either. Other sessions and a store built with
//! [`PostgresStore::from_pool`] are not affected (set it on your pool's
//! `PgConnectOptions::options` there).
//!
//! # Operations
//!
//! Each operation on a mutex is one SQL statement (the take-over and the force release: one
//! transaction), each operation on readers or permits one transaction (see *Semaphores and
//! read-write locks*), and the **database's clock** (`clock_timestamp()` / `now()`) decides
//! expiry; the client's clock is never used.
//!
//! - acquire: `INSERT … ON CONFLICT ("key") DO UPDATE … WHERE expired OR NOT waiting`, which
//!   takes a free or expired key, with a fence from `nextval` of the table's sequence, and in
//!   the same statement marks a live row `waiting` and names its holder.
//! - release / extend / set_metadata: owner-checked on a live row; force_release deletes.
//! - take-over ([`Store::take_over`](crate::Store::take_over)): one transaction, the
//!   acquire's advisory lock then one statement that reads (and row-locks) the live holder and
//!   overwrites the row with a fence from the sequence.
//!
//! # Semaphores and read-write locks
//!
//! Lease mode holds semaphores ([`LockKind::Permits`](crate::LockKind::Permits)) and readers
//! ([`LockKind::Shared`](crate::LockKind::Shared)) beside mutexes; a mutex's acquire stays the
//! one statement above. A key held by readers or permits (a group) is one row of the lock
//! table whose `owner` is the empty string (no owner can be), with `kind` (`shared` or
//! `permits`), `permits` (N) and an `expiration` that is its latest holder's; its holders are
//! rows of `<table>_holders` (`"key"`, `"owner"`, `expiration`, `fence`, `metadata`, primary
//! key `("key", "owner")`, created with the table, `UNLOGGED` with it), each with its own
//! lease by the database's clock, owner, metadata and a fence from the table's sequence. A
//! plain acquire — and a Verrou process — thus finds the key held exactly while one of its
//! holders lives. Every group operation is one transaction that first takes the acquire's
//! per-key advisory lock (a join: five round trips, `BEGIN` and `COMMIT` included); a
//! client that stalls inside one (its process paused, its network cut) holds the key up for
//! at most 2 s, after which the server ends its session and rolls the transaction back
//! (`idle_in_transaction_session_timeout`, set for each of these transactions and for the
//! take-over's and the expiry watcher's); a permit count other than the one stored with the key is refused
//! (`InvalidInput`); an acquire costs the same statements whatever N is. `release`, `extend`
//! and `set_metadata` try the owner's own row first (one statement, as for a mutex), then its
//! place in the key's group. A group's releases `NOTIFY` like a mutex's once someone found
//! the key held, and a holder that gets in while room is left notifies the next waiter.
//!
//! A writer that waits records its marker on the key's row (`waiter`, `waiter_expiration`);
//! while it lives, readers of other owners find the key held. When the last reader leaves,
//! a key with a live marker keeps its row, expired, for the writer's plain acquire; a marker
//! whose waiter is the row's own owner has done its work. The expiry watcher reports expired
//! holders as it reports expired mutexes. Session mode holds mutexes only (see
//! *Session mode*).
//!
//! **Verrou limit**: a Verrou process that takes a key while cadenas readers or permits hold
//! it finds it held (by an owner with an empty name) until the latest holder's lease ends;
//! but it cannot see the holders, and if it deletes the key's row while they hold it the key
//! is free for anyone beside them: they find out at their next extend or release.
//!
//! # Fences
//!
//! A `SEQUENCE` per table, never reset: fences are globally increasing, so per key too,
//! across releases, expiries, reconnects and restarts (a sequence survives crashes; it may
//! skip values, never repeat them). Because `nextval` for a fresh insert is evaluated
//! before the row exists, the acquire statement first takes a transaction-scoped advisory
//! lock on `(hashtext(table), hashtext(key))`: attempts on one key are thus serialized, and a
//! fence drawn by a slow attempt can never be lower than one handed out meanwhile. Rows
//! written by Verrou have no fence (`None`).
//!
//! # Hand-off
//!
//! An acquire that finds the key held sets the row's `waiting` flag (once per lease; a
//! takeover of an expired lease keeps it, since that lease's waiters still wait). Release
//! and force release of a row with the flag call `pg_notify(channel, key)` in the same
//! statement; one `LISTEN` connection per store, outside its pool, wakes this process's
//! waiters (see `listener.rs`). The lock layer subscribes before its second try, so a waiter
//! has always set the flag on the lease it waits for. Expiries are not notified: waiters poll
//! at the lock layer's delay.
//!
//! Releases nobody waited for do not notify, because a `NOTIFY` is expensive for everyone:
//! PostgreSQL serializes the commits of all notifying transactions of a database behind
//! one lock, held through each commit's WAL flush. Notifying on every release made tasks
//! releasing their own keys wait for each other's disk flushes (BENCHMARKS.md has the
//! measurement).
//!
//! # Speed
//!
//! An acquire+release cycle is two statements, each on a connection checked out of the
//! pool, against two for the server's own `pg_try_advisory_lock`/`pg_advisory_unlock`;
//! BENCHMARKS.md has the figures. What a cycle costs beyond that loop:
//!
//! - **Durable commits.** Acquire and release each commit a row change and wait for its
//!   WAL flush, which the advisory-lock loop never does. With one task the flush latency
//!   of the disk bounds the rate (two flushes per cycle); with many, PostgreSQL flushes
//!   concurrent commits together. `unlogged=true` or `synchronous_commit=off` take the
//!   flush off the path (with the crash trade-offs above); the advisory-lock loop stays
//!   ahead even then, since a row insert, delete and two commits cost the server more than
//!   a lock-table entry.
//! - **The fence sequence.** `nextval` writes WAL once per 32 values and the commit that
//!   drew it waits for that flush, even on an `UNLOGGED` table: the price of fences that
//!   never go backwards after a crash.
//! - **The pool.** sqlx pings a connection when it is checked out (one more round trip)
//!   so that one the server closed — after a restart — is replaced instead of failing the
//!   operation; it pings again when the connection is returned. `test_before_acquire=false`
//!   (or a pool of your own built that way, [`PostgresStore::from_pool`]) saves the first
//!   ping, at the price of one failed operation per stale connection after the database
//!   restarts (a watchdog retries; an `acquire` or `release` returns the error).
//!
//! # Session mode
//!
//! `?mode=session` (or [`PostgresOptions::session_mode`]) holds each lock as a PostgreSQL
//! **session advisory lock** on a connection the store keeps open, instead of a lease row.
//!
//! **Which mode.** Lease mode (the default) writes a durable row: the lock outlives the
//! holder's connection until its ttl, anyone can read its owner, fence and metadata (and
//! `list` it), Verrou shares it, and take-over works. Session mode writes nothing: it runs at
//! the speed of the server's own locks, hands off in the server's wake-up time, and the lock
//! dies with its connection (a crashed holder frees it at once) — but other clients see only
//! which backend holds a key, and Verrou cannot share it. Pick session mode for many short
//! locks, lease mode for locks others must inspect or that must survive a reconnect.
//!
//! - **Keys.** A stored key `k` (with its namespace) is the advisory lock
//!   `hashtextextended(k, 0)`, PostgreSQL's own stable 64-bit text hash, in the bigint key
//!   space (`pg_locks.objsubid = 1`); anyone can compute it in SQL. Two keys with the same
//!   hash exclude each other: never a second holder, at worst a false "held" (with a million
//!   keys held at once, a chance of about 3 in 10⁸). A second advisory lock,
//!   `hashtextextended(k, 1)`, is the key's *gate* (below). Other applications' bigint
//!   advisory locks share the space: one taking `hashtextextended('app:k', 0)` excludes
//!   cadenas on `app:k`, which can be used on purpose.
//! - **Fences** come from the sequence `<table>_fence_seq` (the only object session mode
//!   creates; `table=` names it), drawn with `nextval` in the acquiring statement once the
//!   lock is ours, so they increase per key across clients, releases and server restarts (a
//!   sequence may skip values after a crash, never repeat them).
//! - **Connections.** Up to `pool_size` connections (default 10) hold locks, any number each;
//!   a statement waits `acquire_timeout` for a busy one, then fails saying so. Waiters use up
//!   to `pool_size` more, one per key waited for in this process, kept open between waits
//!   (a new connection costs PostgreSQL a backend process: opened at each wait, it made a
//!   hand-off wait for the backend's start-up) and closed with the store. The locks of a
//!   connection that fails or is closed are released by the server; their holders are told
//!   `Lost` at their next check (the watchdog's extend pings the connection). `close`
//!   releases all.
//! - **Ttl.** PostgreSQL never expires the lock. The ttl bounds how long a holding may go
//!   without a successful liveness check (an extend): when it runs out the store unlocks it.
//!   A holder that is frozen (its process stopped) keeps the lock as long as its connection
//!   lives. `cadenas exec`'s default ttl works unchanged: its watchdog checks every ttl/3.
//! - **Hand-off.** A waiter blocks in `pg_advisory_lock_shared` on the key's gate, which the
//!   holder holds with the lock and gives up right after it: the server wakes the waiter,
//!   which then tries the lock. Waiters never queue on the lock itself, so a waiter that went
//!   away never holds it, not even for an instant. Waits are bounded by `lock_timeout = 1s`
//!   and repeated while someone waits.
//! - **What other clients see.** `inspect` and `cadenas status` name the holder of another
//!   client as `backend PID` (from `pg_locks`), without remaining time, fence or metadata;
//!   force-releasing it is refused (`Unsupported`, naming the `pg_terminate_backend` call that
//!   would end it and every other lock of its connection); `list` and take-over are
//!   `Unsupported`; a token restores only in the client that holds the lock
//!   ([`Capabilities::shared_records`](crate::Capabilities::shared_records) is `false`).
//!   Behind PgBouncer in transaction mode session locks do not work: connect directly.

mod errors;
mod group;
mod lease;
mod listener;
mod schema;
mod session;
mod statements;
mod take_over;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{Capabilities, StoreError, Subscription};
use crate::stores::sql::errors::connect_error;
use crate::stores::sql::options::{split_url, take_table, Mode};
use crate::stores::sql::session::{Limits, SessionLocks};
use crate::stores::sql::store::server_store;
use crate::stores::sql::{check_identifier, pool, DEFAULT_TABLE};
use crate::url::StoreUrl;

use errors::pg_error;
use lease::Leases;
use listener::{Listener, State};
use session::PgSession;
use statements::Names;

/// Connection parameters passed through to the driver.
const DRIVER_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "statement-cache-capacity",
];

/// The store's own URL options, besides `table` and the pool's.
const OPTIONS: &[&str] = &["schema", "unlogged", "synchronous_commit"];

/// The values of PostgreSQL's `synchronous_commit` setting, accepted as a URL option.
const SYNCHRONOUS_COMMIT: &[&str] = &["on", "off", "local", "remote_write", "remote_apply"];

/// How long a first `subscribe` waits for the `LISTEN` connection before it lets waiters poll.
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// Where the PostgreSQL store keeps its locks.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    table: String,
    schema: Option<String>,
    unlogged: bool,
    mode: Mode,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            table: DEFAULT_TABLE.to_owned(),
            schema: None,
            unlogged: false,
            mode: Mode::Lease,
        }
    }
}

impl PostgresOptions {
    /// The default: table `cadenas_locks` in the connection's current schema, logged.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table name (an identifier: ASCII letters, digits, `_`; checked before any SQL).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The schema holding the table (default: `current_schema()`).
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = Some(name.into());
        self
    }

    /// Session mode (`?mode=session`): locks are PostgreSQL session advisory locks on
    /// connections the store keeps open (see the module docs, *Session mode*).
    pub fn session_mode(mut self, on: bool) -> Self {
        self.mode = if on { Mode::Session } else { Mode::Lease };
        self
    }

    /// Creates the table `UNLOGGED` (faster; emptied after a server crash — see the module
    /// docs). Only used when cadenas creates the table.
    pub fn unlogged(mut self, unlogged: bool) -> Self {
        self.unlogged = unlogged;
        self
    }

    fn check(&self) -> Result<()> {
        check_identifier("table", &self.table)?;
        if let Some(s) = &self.schema {
            check_identifier("schema", s)?;
        }
        Ok(())
    }
}

/// What session mode can do: no list (the server cannot name the keys of its advisory
/// locks), no take-over or reaping, and other clients see only the holder's session. Nor
/// semaphores or read-write locks: an advisory lock keeps no count of its holders, so N
/// permits would be N locks and up to N tries per acquire, not O(1); and shared advisory
/// locks carry no lease per holder and no writer-waiting marker with a bounded lease, which
/// the store's read-write locks promise.
const SESSION_CAPABILITIES: Capabilities = Capabilities {
    list: false,
    expiry_watch: false,
    take_over: false,
    shared_records: false,
    ..Capabilities::ALL.exclusive_only()
};

/// A lock store on a PostgreSQL table. See the [module docs](self).
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    owns_pool: bool,
    leases: std::sync::Arc<Leases>,
    session: Option<Arc<SessionLocks<PgSession>>>,
    describe: String,
    notifier: Arc<ReleaseNotifier>,
    listener: OnceCell<Listener>,
    listener_timeout: Duration,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`), creating the table if needed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to a parsed URL whose lock-layer options (`namespace`, `ttl`) were taken out.
    /// Unknown options are refused.
    pub async fn from_url(mut url: StoreUrl) -> Result<Self> {
        crate::scheme::POSTGRES.check(&url)?;
        let mut options = PostgresOptions::new().table(take_table(&mut url)?);
        options.schema = url.take("schema");
        options.unlogged = url.take_bool("unlogged")?.unwrap_or(false);
        options.check()?;
        let synchronous_commit = match url.take("synchronous_commit") {
            None => None,
            Some(v) if SYNCHRONOUS_COMMIT.contains(&v.as_str()) => Some(v),
            Some(v) => {
                return Err(Error::config(format!(
                    "option synchronous_commit={v} in {} is not one of {}",
                    url.redacted,
                    SYNCHRONOUS_COMMIT.join(", ")
                )))
            }
        };
        let split = split_url(url, OPTIONS, DRIVER_PARAMS)?;
        options.mode = split.mode;
        if split.mode == Mode::Session && (options.unlogged || synchronous_commit.is_some()) {
            return Err(Error::config(format!(
                "options unlogged and synchronous_commit in {} apply to lease mode only: session mode writes no rows",
                split.redacted
            )));
        }
        let describe = split.redacted;
        let mut connect_options = PgConnectOptions::from_url(&split.driver_url)
            .map_err(|e| Error::config(format!("{describe}: {e}")))?;
        if let Some(v) = &synchronous_commit {
            connect_options = connect_options.options([("synchronous_commit", v.as_str())]);
        }
        let pool = pool::connect(connect_options, split.pool, &describe, pg_error).await?;
        Self::setup(pool, options, describe, true, split.pool.acquire_timeout).await
    }

    /// Builds a store on your own pool (the analogue of Verrou's Knex adapter). The table is
    /// created if needed. [`close`](crate::Store::close) leaves your pool open. The `LISTEN`
    /// connection is opened separately, with the pool's connect options.
    pub async fn from_pool(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        options.check()?;
        let o = pool.connect_options();
        let describe = pool::describe(
            "postgres",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database(),
        );
        let timeout = pool.options().get_acquire_timeout();
        Self::setup(pool, options, describe, false, timeout).await
    }

    /// Session mode's connection limits, from the pool's.
    fn limits(pool: &PgPool, busy_wait: Duration) -> Limits {
        Limits {
            connections: pool.options().get_max_connections() as usize,
            busy_wait,
        }
    }

    async fn setup(
        pool: PgPool,
        options: PostgresOptions,
        describe: String,
        owns_pool: bool,
        listener_timeout: Duration,
    ) -> Result<Self> {
        let schema = match options.schema {
            Some(s) => s,
            None => {
                let s: Option<String> = sqlx::query_scalar(statements::CURRENT_SCHEMA)
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| {
                        connect_error(&describe, pg_error(e, &format!("connecting to {describe}")))
                    })?;
                s.ok_or_else(|| {
                    Error::config(format!(
                        "{describe}: the connection has no current schema (empty search_path); name one with ?schema=NAME"
                    ))
                })?
            }
        };
        let names = Names::new(&schema, &options.table);
        let session = match options.mode {
            Mode::Lease => {
                schema::ensure(&pool, &names, options.unlogged)
                    .await
                    .map_err(|e| e.into_error(&describe))?;
                None
            }
            Mode::Session => {
                schema::ensure_sequence(&pool, &names)
                    .await
                    .map_err(|e| e.into_error(&describe))?;
                let dialect =
                    PgSession::new((*pool.connect_options()).clone(), &names.sequence_qualified);
                let limits = Self::limits(&pool, listener_timeout);
                Some(SessionLocks::new(dialect, describe.clone(), limits))
            }
        };
        let leases = std::sync::Arc::new(Leases::new(pool.clone(), names));
        Ok(PostgresStore {
            pool,
            owns_pool,
            leases,
            session,
            describe,
            notifier: ReleaseNotifier::new(),
            listener: OnceCell::new(),
            listener_timeout,
        })
    }

    /// The pool the store runs its statements on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table as `schema.table`.
    pub fn qualified_table(&self) -> &str {
        &self.leases.table().display
    }

    /// The statements a lease-mode acquire and release run, for a loop of the same durable
    /// statements on [`pool`](Self::pool) without the lock layer (`bench/compare`'s
    /// ceiling); `None` in session mode. Not a stable API: the text changes with the store.
    #[doc(hidden)]
    pub fn lease_statements(&self) -> Option<LeaseStatements<'_>> {
        if self.session.is_some() {
            return None;
        }
        Some(LeaseStatements {
            acquire: &self.leases.sql.acquire,
            release: &self.leases.sql.release,
            lock_class: &self.leases.names.display,
            channel: self.leases.channel(),
        })
    }
}

/// The text of a lease-mode acquire and release ([`PostgresStore::lease_statements`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct LeaseStatements<'a> {
    /// Binds `$1` key, `$2` owner, `$3` ttl in ms, `$4` metadata, `$5` [`lock_class`](Self::lock_class);
    /// answers one row whose first column is the fence when the key was taken.
    pub acquire: &'a str,
    /// Binds `$1` key, `$2` owner, `$3` [`channel`](Self::channel); a row when released.
    pub release: &'a str,
    /// The acquire's fifth parameter.
    pub lock_class: &'a str,
    /// The release's third parameter.
    pub channel: &'a str,
}

server_store!(PostgresStore, crate::scheme::POSTGRES {
    fn capabilities(&self) -> Capabilities {
        match self.session {
            Some(_) => SESSION_CAPABILITIES,
            None => Capabilities::ALL,
        }
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        if let Some(s) = &self.session {
            return Ok(Some(s.subscribe(key)));
        }
        let subscription = self.notifier.subscribe(key);
        let listener = self
            .listener
            .get_or_init(|| async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(self.listener_timeout)
                    .connect_lazy_with((*self.pool.connect_options()).clone());
                let channel = self.leases.channel().to_owned();
                Listener::start(pool, channel, self.notifier.clone())
            })
            .await;
        // Wait (briefly) for LISTEN to be active, so a release right after our first try is
        // heard. If it cannot connect in time, waiters poll until it can.
        let limit = self.listener_timeout.min(LISTEN_WAIT);
        if listener.started(limit).await != State::Listening {
            tracing::debug!(store = %self.describe, "LISTEN not active yet; waiters poll");
        }
        Ok(Some(subscription))
    }

    async fn close(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.session {
            s.close().await;
        }
        if let Some(listener) = self.listener.get() {
            listener.stop().await;
        }
        if self.owns_pool {
            self.pool.close().await;
        }
        Ok(())
    }
});
