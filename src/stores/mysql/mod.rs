//! The MySQL / MariaDB store (feature `mysql`): `mysql://user:pass@host:port/db?table=NAME`
//! or `mariadb://…` (the same driver).
//!
//! # Table
//!
//! One row per held lock in a table (default `cadenas_locks`) with Verrou's columns —
//! `` `key` varchar(255) primary key, `owner` varchar(255) not null, `expiration` bigint null ``
//! (epoch milliseconds, `NULL` = never) — plus nullable `fence bigint`,
//! `metadata mediumtext` and `waiters text` (the stores to wake on release, see *Hand-off*)
//! and `kind varchar(16)`, `permits int`, `waiter varchar(255)`, `waiter_expiration bigint`
//! (see *Semaphores and read-write locks*) of ours, so a Verrou process (`?table=verrou`)
//! shares it. A table Verrou or an earlier
//! cadenas created gets the columns it lacks added; one lacking a Verrou column is refused,
//! naming it. Tables cadenas creates use a binary no-pad collation (`utf8mb4_nopad_bin` on
//! MariaDB, `utf8mb4_0900_bin` on MySQL 8), so keys compare byte for byte; a table created by
//! someone else keeps its collation (a case-insensitive one makes `A` and `a` one lock).
//! Creation is race-free (see `schema.rs`).
//!
//! URL options: `mode=lease` (the default) or `mode=session` (see *Session mode*),
//! `table=NAME`, `pool_size=N` (default 10), `acquire_timeout=DUR` (default
//! 10s), `test_before_acquire=false` (see *Speed*), and the driver's `ssl-mode`, `ssl-ca`,
//! `ssl-cert`, `ssl-key`, `charset`, `collation`, `socket`, `statement-cache-capacity`.
//!
//! # Operations and clock
//!
//! Expiry is decided by the **database's clock**
//! (`TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000`, independent of
//! the session time zone). Release, extend and metadata of a mutex are one statement each;
//! acquire, the take-over and force release are one short transaction each (below), and so
//! is each operation on readers or permits.
//!
//! # Fences
//!
//! MySQL has no sequences (MariaDB has, since 10.3), and a lock row is deleted on release, so
//! the fence cannot live in it. Each table has a companion `<table>_fences` table with one
//! counter row per key, never reset or deleted. Acquire runs in one transaction:
//!
//! 1. `INSERT INTO <table>_fences … VALUES (key, LAST_INSERT_ID(1)) ON DUPLICATE KEY UPDATE
//!    fence = LAST_INSERT_ID(fence + 1)` — draws the next fence *and* row-locks the key's
//!    counter until commit, so attempts on one key are serialized and fences follow the order
//!    in which acquisitions commit;
//! 2. `INSERT INTO <table> … ON DUPLICATE KEY UPDATE col = IF(expired, new, old)` — takes a
//!    free or expired key with that fence (expiration assigned last, as MySQL evaluates the
//!    assignments left to right). `LAST_INSERT_ID` in the reply tells whether it did: our
//!    fence if taken, 0 if held.
//!
//! Only when the key is held is the row read (after the commit) to name the holder. A
//! take-over is the same draw, a locking read of the live holder, then an unconditional write.
//!
//! A per-key counter (rather than one global counter row) keeps acquisitions of different
//! keys from queuing behind one hot row; a failed attempt skips a value, which is harmless.
//! Deadlocks (InnoDB error 1213) are retried a few times, then reported as `Transient`.
//!
//! # Semaphores and read-write locks
//!
//! Lease mode holds semaphores ([`LockKind::Permits`](crate::LockKind::Permits)) and readers
//! ([`LockKind::Shared`](crate::LockKind::Shared)) beside mutexes, in the layout of the
//! PostgreSQL store (its docs, *Semaphores and read-write locks*, say what a group's row,
//! its holders and a waiting writer's marker are): the key's row has the empty string as its
//! owner, `kind`, `permits` and its latest holder's expiration, and its holders are rows of
//! `<table>_holders` (`` `key` ``, `owner`, `expiration`, `fence`, `metadata`, primary key
//! `` (`key`, owner) ``, created with the table). A mutex's operations stay the statements
//! above. Each group operation is one transaction: a join first draws the new holder's fence
//! from the key's counter, which row-locks it as a plain acquire does, so that the two take
//! turns; a release, extend or force release first row-locks the key's row. Every
//! transaction takes its row locks in the order counter, row, holders, and runs `READ
//! COMMITTED` (so that reading a row that does not exist yet takes no gap lock), so that
//! they do not deadlock each other (a deadlock InnoDB reports all the same is retried, as
//! for acquire). `READ COMMITTED` writes need row-based or mixed binary logging (the
//! servers' default) where the binary log is on: a server with `binlog_format=STATEMENT`
//! refuses them, and the error says so.
//! A permit count other than the stored one is refused (`InvalidInput`); an acquire costs
//! the same statements whatever N is. A release of a place, and a join that leaves room for
//! more, wakes this store's next waiter and the stores written into the row's `waiters`
//! (then emptied: they write themselves in again if they find the key held once more). The
//! expiry watcher reports expired holders as it reports expired mutexes. Session mode holds
//! mutexes only.
//!
//! **A client that stalls inside a transaction** (its process paused, its network cut)
//! keeps the key's counter or row locked. On MariaDB (10.3 and later) every transaction of
//! lease mode begins by setting `idle_transaction_timeout` to 2 s for its session, in the
//! same round trip: the server then closes the stalled session and rolls its transaction
//! back, so the key is held up for at most 2 s. MySQL has no such setting: there the locks
//! stay until the connection dies, and the key's other clients fail their operations after
//! `innodb_lock_wait_timeout` (50 s by default) meanwhile.
//!
//! **Verrou limit**: a Verrou process finds a key held by readers or permits held (by an
//! owner with an empty name) until the latest holder's lease ends, but cannot see the
//! holders; if it deletes the key's row while they hold it, the key is free for anyone
//! beside them, and they find out at their next extend or release.
//!
//! # Hand-off
//!
//! MySQL has no notification channel; lease mode makes one from the server's user locks
//! (`wake.rs` has the details). A store whose tasks wait keeps one connection of its own
//! sleeping in `SELECT SLEEP(60)` while it holds the user lock `cadenas-waiter:TOKEN`
//! (random per store). A try that finds a key held by another process, while a task of this
//! store waits for it, writes the token into the row's `waiters` column; a release or force
//! release of that row looks up, for each token, which connection holds its user lock
//! (`IS_USED_LOCK`) and ends that connection's sleep (`KILL QUERY`), and the woken store's
//! waiters try again. So [`Capabilities::notify`] is `true`: hand-off across processes
//! takes a millisecond or two, not a poll delay (BENCHMARKS.md). Waiters in this process are
//! woken by its releases without the server.
//!
//! What it costs: nothing on a release nobody waits for (the `DELETE` has `AND waiters IS
//! NULL`; on MariaDB it is one `DELETE … RETURNING waiters`), one connection per waiting
//! store, and on a release others wait for, a transaction that reads `waiters` (MySQL 8)
//! and two short statements per waiting store. Only a connection holding a store's user
//! lock is ever sent `KILL QUERY`: a name nobody holds is skipped, and the server does not
//! reuse connection ids while it runs. It is best effort, and a waiter polls at the lock
//! layer's delay when it is not woken: when a Verrou process releases, when the releasing
//! user may not end another user's query (that needs `CONNECTION_ADMIN` or `SUPER`; the
//! same user always may), or when a release comes while the sleeper is between two sleeps.
//!
//! # Speed
//!
//! An acquire+release cycle is five statements on two pooled connections (`BEGIN`, the
//! fence draw, the take and `COMMIT`; then the release) against two for the server's own
//! `GET_LOCK`/`RELEASE_LOCK`, and two InnoDB commits, each waiting for its redo-log flush
//! with the server's default `innodb_flush_log_at_trx_commit=1`, where `GET_LOCK` writes
//! nothing. With one task the disk's flush latency bounds the rate; BENCHMARKS.md has the
//! figures. That setting is the server's, not a session's: a store cannot relax it.
//! Setting it to 2 on the server (the log is flushed about once a second) trades the last
//! second of commits on a machine crash — locks granted twice, fences repeated — for a
//! higher rate.
//!
//! sqlx pings a pooled connection before each use so that one the server closed (after a
//! restart) is replaced instead of failing the operation; `test_before_acquire=false` (or
//! a pool of your own built that way, [`MySqlStore::from_pool`]) saves that round trip, at
//! the price of one failed operation per stale connection after the database restarts.
//!
//! # Session mode
//!
//! `?mode=session` (or [`MySqlOptions::session_mode`]) holds each lock with `GET_LOCK` on a
//! connection the store keeps open, instead of a lease row; nothing is created in the
//! database. Lease mode (the default) gives a lock that outlives its connection until its
//! ttl, readable by anyone and shared with Verrou; session mode runs at the speed of the
//! server's own locks, hands off in the server's wake-up time, and the lock dies with its
//! connection, but other clients see only which connection holds a key. The PostgreSQL store's
//! docs (*Session mode*) say what a ttl means, how connections are shared and limited
//! (`pool_size`, `acquire_timeout`), and what other clients see; here:
//!
//! - **Names.** A stored key `k` is the lock `SHA2(k, 256)` (64 hex characters, the servers'
//!   limit, computed by the server: never truncated, byte-exact whatever the server's name
//!   comparison); its gate, on which waiters wait, is `SHA2(CONCAT(k, CHAR(0)), 256)`.
//!   `SELECT IS_USED_LOCK(SHA2('app:k', 256))` shows the holder's connection id.
//! - **Fences** are `UUID_SHORT()`, drawn in the acquiring statement once the lock is ours:
//!   `(server_id & 255) << 56 | startup time in seconds << 24 | a counter`, increasing with
//!   every call on one server and across its restarts — unless the server's clock went back
//!   across a restart, it was restarted twice within a second, it handed out more than 2²⁴
//!   values per second of uptime on average, or `server_id` changed (a failover to a replica
//!   with a lower one). Within those caveats they increase per key; cost: none measurable
//!   (BENCHMARKS.md). Needs MySQL 5.7+ or MariaDB 10.0.2+ (several locks per connection).
//! - **Killed connections** (`KILL`) release their locks; holders are told `Lost` at their
//!   next liveness check. Force-releasing another client's lock is refused, naming the
//!   `KILL` that would end it (and every other lock of that connection).

mod errors;
mod group;
mod lease;
mod schema;
mod session;
mod statements;
mod take_over;
mod wake;

use std::sync::Arc;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::ConnectOptions;

use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{Capabilities, StoreError, Subscription};
use crate::stores::sql::errors::connect_error;
use crate::stores::sql::options::{split_url, take_table, Mode};
use crate::stores::sql::session::{Limits, SessionLocks};
use crate::stores::sql::store::server_store;
use crate::stores::sql::{check_identifier, pool, DEFAULT_TABLE};
use crate::url::StoreUrl;

use errors::my_error;
use lease::Leases;
use session::MySession;
use statements::Names;
use wake::Wakeups;

/// Connection parameters passed through to the driver.
const DRIVER_PARAMS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "ssl-key",
    "sslkey",
    "charset",
    "collation",
    "socket",
    "statement-cache-capacity",
];

/// Where the MySQL store keeps its locks.
#[derive(Debug, Clone)]
pub struct MySqlOptions {
    table: String,
    mode: Mode,
    delete_returning: bool,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        MySqlOptions {
            table: DEFAULT_TABLE.to_owned(),
            mode: Mode::Lease,
            delete_returning: true,
        }
    }
}

impl MySqlOptions {
    /// The default: table `cadenas_locks` in the connection's database.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table name (an identifier: ASCII letters, digits, `_`; checked before any SQL).
    /// The fence table is named after it with `_fences`.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Whether releases use `DELETE … RETURNING` where the server has it (MariaDB; the
    /// default): `false` runs MySQL 8's statements on MariaDB, for testing them.
    #[doc(hidden)]
    pub fn delete_returning(mut self, on: bool) -> Self {
        self.delete_returning = on;
        self
    }

    /// Session mode (`?mode=session`): locks are `GET_LOCK` locks on connections the store
    /// keeps open (see the module docs, *Session mode*).
    pub fn session_mode(mut self, on: bool) -> Self {
        self.mode = if on { Mode::Session } else { Mode::Lease };
        self
    }
}

/// A lock store on a MySQL or MariaDB table. See the [module docs](self).
#[derive(Debug)]
pub struct MySqlStore {
    pool: MySqlPool,
    owns_pool: bool,
    leases: Arc<Leases>,
    session: Option<Arc<SessionLocks<MySession>>>,
    describe: String,
    notifier: Arc<ReleaseNotifier>,
}

/// What session mode can do: no list (the server cannot name the keys of its locks), no
/// take-over or reaping, and other clients see only the holder's connection. Nor semaphores
/// or read-write locks: `GET_LOCK` is exclusive only and keeps no count of holders, so N
/// permits would be N locks and up to N tries per acquire, not O(1), and it has no shared
/// mode and no writer preference for a read-write lock.
const SESSION_CAPABILITIES: Capabilities = Capabilities {
    list: false,
    expiry_watch: false,
    take_over: false,
    shared_records: false,
    ..Capabilities::ALL.exclusive_only()
};

impl MySqlStore {
    /// Connects to `url` (`mysql://` or `mariadb://`), creating the tables if needed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to a parsed URL whose lock-layer options (`namespace`, `ttl`) were taken out.
    /// Unknown options are refused.
    pub async fn from_url(mut url: StoreUrl) -> Result<Self> {
        crate::scheme::MYSQL.check(&url)?;
        let mut options = MySqlOptions::new().table(take_table(&mut url)?);
        let split = split_url(url, &[], DRIVER_PARAMS)?;
        options.mode = split.mode;
        let describe = split.redacted;
        let mut driver_url = split.driver_url;
        if driver_url.scheme() == "mariadb" {
            let _ = driver_url.set_scheme("mysql");
        }
        let connect_options = MySqlConnectOptions::from_url(&driver_url)
            .map_err(|e| Error::config(format!("{describe}: {e}")))?;
        let pool = pool::connect(connect_options, split.pool, &describe, my_error).await?;
        Self::setup(pool, options, describe, true).await
    }

    /// Builds a store on your own pool (the analogue of Verrou's Knex adapter). The tables
    /// are created if needed. [`close`](crate::Store::close) leaves your pool open.
    pub async fn from_pool(pool: MySqlPool, options: MySqlOptions) -> Result<Self> {
        check_identifier("table", &options.table)?;
        let o = pool.connect_options();
        let describe = pool::describe(
            "mysql",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database(),
        );
        Self::setup(pool, options, describe, false).await
    }

    async fn setup(
        pool: MySqlPool,
        options: MySqlOptions,
        describe: String,
        owns_pool: bool,
    ) -> Result<Self> {
        let (database, version): (Option<String>, String) = sqlx::query_as(statements::DATABASE)
            .fetch_one(&pool)
            .await
            .map_err(|e| {
                connect_error(&describe, my_error(e, &format!("connecting to {describe}")))
            })?;
        let database = database.ok_or_else(|| {
            Error::config(format!(
                "{describe} names no database; add one to the URL path (mysql://host/DATABASE)"
            ))
        })?;
        let names = Names::new(&database, &options.table);
        let session = match options.mode {
            Mode::Lease => {
                schema::ensure(&pool, &names)
                    .await
                    .map_err(|e| e.into_error(&describe))?;
                None
            }
            Mode::Session => {
                let limits = Limits {
                    connections: pool.options().get_max_connections() as usize,
                    busy_wait: pool.options().get_acquire_timeout(),
                };
                let dialect = MySession::new((*pool.connect_options()).clone());
                Some(SessionLocks::new(dialect, describe.clone(), limits))
            }
        };
        let notifier = ReleaseNotifier::new();
        let wakeups = Wakeups::new((*pool.connect_options()).clone(), notifier.clone());
        let returning = options.delete_returning && version.contains("MariaDB");
        let leases = Arc::new(Leases::new(
            pool.clone(),
            names,
            returning,
            statements::bounds_idle_transactions(&version),
            notifier.clone(),
            wakeups,
        ));
        Ok(MySqlStore {
            pool,
            owns_pool,
            leases,
            session,
            describe,
            notifier,
        })
    }

    /// The pool the store runs its statements on.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table as `database.table`.
    pub fn qualified_table(&self) -> &str {
        &self.leases.table().display
    }

    /// The statements a lease-mode acquire and release run, for a loop of the same durable
    /// statements on [`pool`](Self::pool) without the lock layer (`bench/compare`'s
    /// ceiling); `None` in session mode. Not a stable API: the text changes with the store.
    #[doc(hidden)]
    pub fn lease_statements(&self) -> Option<LeaseStatements<'_>> {
        let sql = &self.leases.sql;
        self.session.is_none().then_some(LeaseStatements {
            draw_fence: &sql.draw_fence,
            take: &sql.take,
            release: sql.release_returning.as_deref().unwrap_or(&sql.release),
            release_returns_row: sql.release_returning.is_some(),
        })
    }
}

/// The text of a lease-mode acquire and release ([`MySqlStore::lease_statements`]). An
/// acquire is one transaction: [`draw_fence`](Self::draw_fence), then
/// [`take`](Self::take), then `COMMIT`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct LeaseStatements<'a> {
    /// Binds the key; its `LAST_INSERT_ID()` is the drawn fence.
    pub draw_fence: &'a str,
    /// Binds key, owner, ttl in ms, fence, metadata; the key was taken when its
    /// `LAST_INSERT_ID()` is the drawn fence.
    pub take: &'a str,
    /// Binds key, owner; one row affected when released, or with
    /// [`release_returns_row`](Self::release_returns_row) one row returned (its waiters).
    pub release: &'a str,
    /// [`release`](Self::release) is a `DELETE … RETURNING` (MariaDB).
    pub release_returns_row: bool,
}

server_store!(MySqlStore, crate::scheme::MYSQL {
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
        // This store's releases wake it; others', once its sleeper is up and its next try
        // of the key has written it into the row (`wake.rs`).
        let subscription = self.notifier.subscribe(key);
        self.leases.wakeups.listen().await;
        Ok(Some(subscription))
    }

    async fn close(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.session {
            s.close().await;
        }
        self.leases.wakeups.stop();
        if self.owns_pool {
            self.pool.close().await;
        }
        Ok(())
    }
});
