//! The PostgreSQL store (feature `postgres`): `postgres://user:pass@host:port/db?table=NAME`.
//!
//! # Table
//!
//! One row per held lock in a table (default `cadenas_locks`) whose first three columns
//! are Verrou's — `"key" varchar(255) primary key, "owner" varchar(255) not null,
//! "expiration" bigint null` (epoch milliseconds, `NULL` = never expires) — plus three
//! nullable columns of ours, `"fence" bigint`, `"metadata" text` and `"waiting" boolean`
//! (see *Hand-off*). A Verrou process inserting only its three columns shares the table
//! (`?table=verrou`); a table Verrou (or an older cadenas) created first gets our nullable
//! columns added, which needs the `ALTER` privilege once. A table that lacks one of Verrou's
//! columns is refused with an error naming it. The table and a sequence `<table>_fence_seq`
//! are created on first use, race-free (see `schema.rs`).
//!
//! URL options: `table=NAME`, `schema=NAME` (default: the connection's `current_schema()`),
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
//! Each operation is one SQL statement, and the **database's clock** (`clock_timestamp()` /
//! `now()`) decides expiry; the client's clock is never used.
//!
//! - acquire: `INSERT … ON CONFLICT ("key") DO UPDATE … WHERE expired OR NOT waiting`, which
//!   takes a free or expired key, with a fence from `nextval` of the table's sequence, and in
//!   the same statement marks a live row `waiting` and names its holder.
//! - release / extend / set_metadata: owner-checked on a live row; force_release deletes.
//! - take-over ([`Store::take_over`]): one transaction, the acquire's advisory lock then one
//!   statement that reads (and row-locks) the live holder and overwrites the row with a fence
//!   from the sequence.
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
//! one lock, held through each commit's WAL flush. Notifying on every release made 16
//! tasks releasing their own keys wait for each other's disk flushes: in `pgbench` on the
//! test machine, 330 acquire+release cycles/s with a notify per release against 3,006
//! without.
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
//!   flush off the path (with the crash trade-offs above); they reach 0.4–0.6 of the
//!   advisory-lock loop with one task on the test machine and 0.3–0.37 with 16, where both
//!   processes share two cores and a row insert, delete and two commits cost the server
//!   more than a lock-table entry.
//! - **The fence sequence.** `nextval` writes WAL once per 32 values and the commit that
//!   drew it waits for that flush, even on an `UNLOGGED` table: the price of fences that
//!   never go backwards after a crash.
//! - **The pool.** sqlx pings a connection when it is checked out (one more round trip)
//!   so that one the server closed — after a restart — is replaced instead of failing the
//!   operation; it pings again when the connection is returned. `test_before_acquire=false`
//!   (or a pool of your own built that way, [`PostgresStore::from_pool`]) saves the first
//!   ping, at the price of one failed operation per stale connection after the database
//!   restarts (a watchdog retries; an `acquire` or `release` returns the error).

mod listener;
mod schema;
mod statements;
mod take_over;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Holder, Lease, LockInfo, Store, StoreError,
    StoreErrorKind, Subscription,
};
use crate::stores::sql_common::{self as common, DEFAULT_TABLE};
use crate::url::{check_identifier, StoreUrl};

use listener::{Listener, State};
use schema::SchemaError;
use statements::Sql;

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

/// The values of PostgreSQL's `synchronous_commit` setting, accepted as a URL option.
const SYNCHRONOUS_COMMIT: &[&str] = &["on", "off", "local", "remote_write", "remote_apply"];

/// The database's clock at statement start, in epoch milliseconds.
const NOW_MS: &str = "(extract(epoch FROM now()) * 1000)::bigint";

/// How long a first `subscribe` waits for the `LISTEN` connection before it lets waiters poll.
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// Where the PostgreSQL store keeps its locks.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    table: String,
    schema: Option<String>,
    unlogged: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            table: DEFAULT_TABLE.to_owned(),
            schema: None,
            unlogged: false,
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

/// Names of the objects the store uses, quoted where SQL needs it.
#[derive(Debug)]
pub(crate) struct Names {
    schema: String,
    table: String,
    /// `"schema"."table"`.
    qualified: String,
    /// `schema.table`, for messages.
    display: String,
    /// The sequence's bare name.
    sequence: String,
    /// `"schema"."sequence"`.
    sequence_qualified: String,
    /// The same, as text for `to_regclass` and `nextval`.
    sequence_regclass: String,
    /// The NOTIFY channel.
    channel: String,
}

impl Names {
    fn new(schema: &str, table: &str) -> Names {
        let sequence = common::derived_name(table, "_fence_seq", 63);
        let display = format!("{schema}.{table}");
        let channel = if display.len() + 8 <= 63 {
            format!("cadenas.{display}")
        } else {
            format!("cadenas.{:016x}", common::fnv1a(&display))
        };
        Names {
            schema: schema.to_owned(),
            table: table.to_owned(),
            qualified: format!("\"{schema}\".\"{table}\""),
            sequence_qualified: format!("\"{schema}\".\"{sequence}\""),
            sequence_regclass: format!("\"{schema}\".\"{sequence}\""),
            sequence,
            display,
            channel,
        }
    }
}

/// A lock store on a PostgreSQL table. See the [module docs](self).
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    owns_pool: bool,
    names: Names,
    sql: Sql,
    describe: String,
    notifier: Arc<ReleaseNotifier>,
    listener: OnceCell<Listener>,
    listener_timeout: Duration,
}

type Row = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`), creating the table if needed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to a parsed URL whose lock-layer options (`namespace`, `ttl`) were taken out.
    /// Unknown options are refused.
    pub async fn from_url(mut url: StoreUrl) -> Result<Self> {
        crate::scheme::POSTGRES.check(&url)?;
        let mut options = PostgresOptions::new();
        if let Some(t) = url.take("table") {
            options.table = t;
        }
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
        let split = common::split_url(
            url,
            &["table", "schema", "unlogged", "synchronous_commit"],
            DRIVER_PARAMS,
        )?;
        let describe = split.redacted.clone();
        let mut connect_options = PgConnectOptions::from_url(&split.driver_url)
            .map_err(|e| Error::config(format!("{describe}: {e}")))?;
        if let Some(v) = &synchronous_commit {
            connect_options = connect_options.options([("synchronous_commit", v.as_str())]);
        }
        // One direct connection first, so that a database that is down or a wrong password
        // fails now with the real cause, not after the pool's retries.
        let probe = connect_options.connect().await.map_err(|e| {
            common::connect_error(&describe, pg_error(e, &format!("connecting to {describe}")))
        })?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(split.pool_size)
            .acquire_timeout(split.acquire_timeout)
            .test_before_acquire(split.test_before_acquire)
            .connect_lazy_with(connect_options);
        Self::setup(pool, options, describe, true, split.acquire_timeout).await
    }

    /// Builds a store on your own pool (the analogue of Verrou's Knex adapter). The table is
    /// created if needed. [`close`](Store::close) leaves your pool open. The `LISTEN`
    /// connection is opened separately, with the pool's connect options.
    pub async fn from_pool(pool: PgPool, options: PostgresOptions) -> Result<Self> {
        options.check()?;
        let o = pool.connect_options();
        let describe = format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        );
        let timeout = pool.options().get_acquire_timeout();
        Self::setup(pool, options, describe, false, timeout).await
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
                let s: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| {
                        common::connect_error(
                            &describe,
                            pg_error(e, &format!("connecting to {describe}")),
                        )
                    })?;
                s.ok_or_else(|| {
                    Error::config(format!(
                        "{describe}: the connection has no current schema (empty search_path); name one with ?schema=NAME"
                    ))
                })?
            }
        };
        let names = Names::new(&schema, &options.table);
        schema::ensure(&pool, &names, options.unlogged)
            .await
            .map_err(|e| match e {
                SchemaError::Store(s) => common::connect_error(&describe, s),
                SchemaError::Rejected(m) => common::rejected(&describe, m),
            })?;
        Ok(PostgresStore {
            sql: Sql::new(&names),
            pool,
            owns_pool,
            names,
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
        &self.names.display
    }

    fn err(&self, e: sqlx::Error, what: &str, key: &str) -> StoreError {
        pg_error(
            e,
            &format!("{what} '{key}' in table {}", self.names.display),
        )
    }

    fn info(row: Row) -> LockInfo {
        let (key, owner, remaining, fence, metadata) = row;
        LockInfo::new(
            key.unwrap_or_default(),
            owner.unwrap_or_default(),
            common::remaining(remaining),
            common::fence(fence),
            metadata,
        )
    }
}

/// Maps a PostgreSQL driver error to a [`StoreError`] whose message starts with `what`.
pub(crate) fn pg_error(e: sqlx::Error, what: &str) -> StoreError {
    let kind = common::classify(&e, |db| {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        match code.as_str() {
            "28000" | "28P01" | "3D000" => StoreErrorKind::Unavailable,
            c if c.starts_with("08") => StoreErrorKind::Unavailable,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "55P03" => {
                StoreErrorKind::Transient
            }
            c if c.starts_with("53") => StoreErrorKind::Transient,
            _ => StoreErrorKind::Rejected,
        }
    });
    common::store_error(kind, what, e)
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::POSTGRES.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn try_acquire(&self, r: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let row: Option<(Option<i64>, Option<String>, Option<i64>)> =
            sqlx::query_as(&self.sql.acquire)
                .bind(r.key)
                .bind(r.owner)
                .bind(common::ttl_ms(r.ttl))
                .bind(r.metadata)
                .bind(&self.names.display)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e, "acquiring", r.key))?;
        Ok(match row {
            Some((Some(fence), None, _)) => Acquire::Acquired(Lease {
                fence: common::fence(Some(fence)),
                ttl: r.ttl,
            }),
            Some((_, owner, remaining)) => Acquire::Held(Holder {
                owner,
                remaining: common::remaining(remaining),
            }),
            // Held by a row committed after this statement's snapshot.
            None => Acquire::Held(Holder::default()),
        })
    }

    /// One transaction: the acquire's advisory lock, then one statement that reads the
    /// live holder and overwrites the row.
    async fn take_over(&self, r: AcquireRequest<'_>) -> Result<crate::store::TakeOver, StoreError> {
        self.take_over_once(&r).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let rows = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .bind(&self.names.channel)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "releasing", key))?;
        Ok(!rows.is_empty())
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(&self.sql.extend)
            .bind(key)
            .bind(owner)
            .bind(common::ttl_ms(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "extending", key))?;
        Ok(row.map(|(fence,)| Lease {
            fence: common::fence(fence),
            ttl,
        }))
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.set_metadata)
            .bind(key)
            .bind(owner)
            .bind(metadata)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "setting metadata of", key))?;
        Ok(done.rows_affected() > 0)
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let row: Option<(bool, Option<String>)> = sqlx::query_as(&self.sql.force_release)
            .bind(key)
            .bind(&self.names.channel)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "force-releasing", key))?;
        Ok(matches!(row, Some((true, _))))
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&self.sql.inspect)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "inspecting", key))?;
        Ok(row.map(Self::info))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&self.sql.list)
            .bind(common::like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing", prefix))?;
        Ok(rows.into_iter().map(Self::info).collect())
    }

    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&self.sql.reap)
            .bind(common::like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "reaping expired locks under", prefix))?;
        let mut infos: Vec<LockInfo> = rows.into_iter().map(Self::info).collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        let subscription = self.notifier.subscribe(key);
        let listener = self
            .listener
            .get_or_init(|| async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(self.listener_timeout)
                    .connect_lazy_with((*self.pool.connect_options()).clone());
                Listener::start(pool, self.names.channel.clone(), self.notifier.clone())
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
        if let Some(listener) = self.listener.get() {
            listener.stop().await;
        }
        if self.owns_pool {
            self.pool.close().await;
        }
        Ok(())
    }
}
