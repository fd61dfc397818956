//! The MySQL / MariaDB store (feature `mysql`): `mysql://user:pass@host:port/db?table=NAME`
//! or `mariadb://…` (the same driver).
//!
//! # Table
//!
//! One row per held lock in a table (default `cadenas_locks`) with Verrou's columns —
//! `` `key` varchar(255) primary key, `owner` varchar(255) not null, `expiration` bigint null ``
//! (epoch milliseconds, `NULL` = never) — plus nullable `fence bigint` and
//! `metadata mediumtext` of ours, so a Verrou process (`?table=verrou`) shares it. A table
//! Verrou created first gets our two columns added; one lacking a Verrou column is refused,
//! naming it. Tables cadenas creates use a binary no-pad collation (`utf8mb4_nopad_bin` on
//! MariaDB, `utf8mb4_0900_bin` on MySQL 8), so keys compare byte for byte; a table created by
//! someone else keeps its collation (a case-insensitive one makes `A` and `a` one lock).
//! Creation is race-free (see `schema.rs`).
//!
//! URL options: `table=NAME`, `pool_size=N` (default 10), `acquire_timeout=DUR` (default
//! 10s), `test_before_acquire=false` (see *Speed*), and the driver's `ssl-mode`, `ssl-ca`,
//! `ssl-cert`, `ssl-key`, `charset`, `collation`, `socket`, `statement-cache-capacity`.
//!
//! # Operations and clock
//!
//! Expiry is decided by the **database's clock**
//! (`TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000`, independent of
//! the session time zone). Release, extend, metadata and force release are one statement
//! each; acquire and the take-over are one short transaction each (below).
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
//! # Hand-off
//!
//! MySQL has no notification channel, so [`Capabilities::notify`] is `false` and waiters in
//! other processes poll at the lock layer's delay. Waiters in *this* process are woken at
//! once when this store releases a key (through [`Store::subscribe`]).
//!
//! # Speed
//!
//! An acquire+release cycle is five statements on two pooled connections (`BEGIN`, the
//! fence draw, the take and `COMMIT`; then the release) against two for the server's own
//! `GET_LOCK`/`RELEASE_LOCK`, and two InnoDB commits, each waiting for its redo-log flush
//! with the server's default `innodb_flush_log_at_trx_commit=1`, where `GET_LOCK` writes
//! nothing. With one task the disk's flush latency bounds the rate; BENCHMARKS.md has the
//! figures (0.1–0.2 of the `GET_LOCK` loop with one task, 0.25 with 16, on the test
//! machine). That setting is the server's, not a session's: a store cannot relax it.
//! Setting it to 2 on the server (the log is flushed about once a second) trades the last
//! second of commits on a machine crash — locks granted twice, fences repeated — for a
//! higher rate (on a private server, 0.45–0.63 of its `GET_LOCK` loop with one task).
//!
//! sqlx pings a pooled connection before each use so that one the server closed (after a
//! restart) is replaced instead of failing the operation; `test_before_acquire=false` (or
//! a pool of your own built that way, [`MySqlStore::from_pool`]) saves that round trip, at
//! the price of one failed operation per stale connection after the database restarts.

mod schema;
mod take_over;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::ConnectOptions;

use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Holder, Lease, LockInfo, Store, StoreError,
    StoreErrorKind, Subscription,
};
use crate::stores::sql_common::{self as common, DEFAULT_TABLE};
use crate::url::{check_identifier, StoreUrl};

use schema::SchemaError;

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

/// The database's clock in epoch milliseconds (constant within a statement).
const NOW_MS: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";

/// How many times acquire retries after an InnoDB deadlock.
const DEADLOCK_RETRIES: u32 = 3;

/// Where the MySQL store keeps its locks.
#[derive(Debug, Clone)]
pub struct MySqlOptions {
    table: String,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        MySqlOptions {
            table: DEFAULT_TABLE.to_owned(),
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
}

/// Names of the objects the store uses.
#[derive(Debug)]
pub(crate) struct Names {
    table: String,
    quoted: String,
    fences: String,
    fences_quoted: String,
    display: String,
}

impl Names {
    fn new(database: &str, table: &str) -> Names {
        let fences = common::derived_name(table, "_fences", 63);
        Names {
            quoted: format!("`{table}`"),
            fences_quoted: format!("`{fences}`"),
            display: format!("{database}.{table}"),
            table: table.to_owned(),
            fences,
        }
    }
}

/// SQL text, built once per store.
#[derive(Debug)]
struct Sql {
    draw_fence: String,
    take: String,
    read_back: String,
    release: String,
    extend: String,
    set_metadata: String,
    force_release: String,
    inspect: String,
    list: String,
    expired: String,
    reap_one: String,
}

impl Sql {
    fn new(n: &Names) -> Sql {
        let t = &n.quoted;
        let live = format!("(expiration IS NULL OR expiration > {NOW_MS})");
        let expired = format!("(expiration IS NOT NULL AND expiration <= {NOW_MS})");
        let remaining = format!(
            "CASE WHEN expiration IS NULL THEN NULL ELSE CAST(GREATEST(CAST(expiration AS SIGNED) - {NOW_MS}, 0) AS SIGNED) END"
        );
        let columns = format!(
            "CAST(`key` AS CHAR), CAST(owner AS CHAR), {remaining}, fence, CAST(metadata AS CHAR)"
        );
        Sql {
            draw_fence: format!(
                "INSERT INTO {} (`key`, fence) VALUES (?, LAST_INSERT_ID(1)) \
                 ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)",
                n.fences_quoted
            ),
            // key, owner, ttl ms, fence, metadata. `LAST_INSERT_ID` ends as our fence when
            // the key was free or expired (the VALUES row is evaluated first), as 0 when it
            // is held: the reply tells which, without reading the row back.
            take: format!(
                "INSERT INTO {t} (`key`, owner, expiration, fence, metadata) \
                 VALUES (?, ?, {NOW_MS} + ?, LAST_INSERT_ID(?), ?) \
                 ON DUPLICATE KEY UPDATE \
                 owner = IF({expired}, VALUES(owner), owner), \
                 metadata = IF({expired}, VALUES(metadata), metadata), \
                 fence = IF({expired}, VALUES(fence), IF(LAST_INSERT_ID(0), NULL, fence)), \
                 expiration = IF({expired}, VALUES(expiration), expiration)"
            ),
            read_back: format!(
                "SELECT CAST(owner AS CHAR), {remaining} FROM {t} WHERE `key` = ? AND {live}"
            ),
            release: format!("DELETE FROM {t} WHERE `key` = ? AND owner = ? AND {live}"),
            // ttl ms, key, owner. `LAST_INSERT_ID(expr)` hands the fence back in the reply.
            extend: format!(
                "UPDATE {t} SET expiration = {NOW_MS} + ?, fence = LAST_INSERT_ID(COALESCE(fence, 0)) \
                 WHERE `key` = ? AND owner = ? AND {live}"
            ),
            set_metadata: format!(
                "UPDATE {t} SET metadata = ? WHERE `key` = ? AND owner = ? AND {live}"
            ),
            force_release: format!("DELETE FROM {t} WHERE `key` = ? AND {live}"),
            inspect: format!("SELECT {columns} FROM {t} WHERE `key` = ? AND {live}"),
            list: format!("SELECT {columns} FROM {t} WHERE `key` LIKE ? ESCAPE '!' AND {live}"),
            // The expiry watcher: candidates (with their raw expiration), then one conditional
            // DELETE per candidate. Only one caller's DELETE finds the row, and a takeover
            // makes it live (and changes owner and expiration) so it no longer matches.
            expired: format!(
                "SELECT CAST(`key` AS CHAR), CAST(owner AS CHAR), CAST(expiration AS SIGNED), \
                 fence, CAST(metadata AS CHAR) FROM {t} WHERE `key` LIKE ? ESCAPE '!' AND {expired}"
            ),
            reap_one: format!(
                "DELETE FROM {t} WHERE `key` = ? AND owner = ? AND expiration = ? AND {expired}"
            ),
        }
    }
}

/// A lock store on a MySQL or MariaDB table. See the [module docs](self).
#[derive(Debug)]
pub struct MySqlStore {
    pool: MySqlPool,
    owns_pool: bool,
    names: Names,
    sql: Sql,
    describe: String,
    notifier: Arc<ReleaseNotifier>,
}

type Row = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

impl MySqlStore {
    /// Connects to `url` (`mysql://` or `mariadb://`), creating the tables if needed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to a parsed URL whose lock-layer options (`namespace`, `ttl`) were taken out.
    /// Unknown options are refused.
    pub async fn from_url(mut url: StoreUrl) -> Result<Self> {
        crate::scheme::MYSQL.check(&url)?;
        let mut options = MySqlOptions::new();
        if let Some(t) = url.take("table") {
            options.table = t;
        }
        check_identifier("table", &options.table)?;
        let split = common::split_url(url, &["table"], DRIVER_PARAMS)?;
        let describe = split.redacted.clone();
        let mut driver_url = split.driver_url;
        if driver_url.scheme() == "mariadb" {
            let _ = driver_url.set_scheme("mysql");
        }
        let connect_options = MySqlConnectOptions::from_url(&driver_url)
            .map_err(|e| Error::config(format!("{describe}: {e}")))?;
        // One direct connection first, so that a database that is down or a wrong password
        // fails now with the real cause, not after the pool's retries.
        let probe = connect_options.connect().await.map_err(|e| {
            common::connect_error(&describe, my_error(e, &format!("connecting to {describe}")))
        })?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(split.pool_size)
            .acquire_timeout(split.acquire_timeout)
            .test_before_acquire(split.test_before_acquire)
            .connect_lazy_with(connect_options);
        Self::setup(pool, options, describe, true).await
    }

    /// Builds a store on your own pool (the analogue of Verrou's Knex adapter). The tables
    /// are created if needed. [`close`](Store::close) leaves your pool open.
    pub async fn from_pool(pool: MySqlPool, options: MySqlOptions) -> Result<Self> {
        check_identifier("table", &options.table)?;
        let o = pool.connect_options();
        let describe = format!(
            "mysql://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        );
        Self::setup(pool, options, describe, false).await
    }

    async fn setup(
        pool: MySqlPool,
        options: MySqlOptions,
        describe: String,
        owns_pool: bool,
    ) -> Result<Self> {
        let database: Option<String> = sqlx::query_scalar("SELECT CAST(DATABASE() AS CHAR)")
            .fetch_one(&pool)
            .await
            .map_err(|e| {
                common::connect_error(&describe, my_error(e, &format!("connecting to {describe}")))
            })?;
        let database = database.ok_or_else(|| {
            Error::config(format!(
                "{describe} names no database; add one to the URL path (mysql://host/DATABASE)"
            ))
        })?;
        let names = Names::new(&database, &options.table);
        schema::ensure(&pool, &names).await.map_err(|e| match e {
            SchemaError::Store(s) => common::connect_error(&describe, s),
            SchemaError::Rejected(m) => common::rejected(&describe, m),
        })?;
        Ok(MySqlStore {
            sql: Sql::new(&names),
            pool,
            owns_pool,
            names,
            describe,
            notifier: ReleaseNotifier::new(),
        })
    }

    /// The pool the store runs its statements on.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The table as `database.table`.
    pub fn qualified_table(&self) -> &str {
        &self.names.display
    }

    fn err(&self, e: sqlx::Error, what: &str, key: &str) -> StoreError {
        my_error(
            e,
            &format!("{what} '{key}' in table {}", self.names.display),
        )
    }

    async fn acquire_once(&self, r: &AcquireRequest<'_>) -> Result<Acquire, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let drawn = sqlx::query(&self.sql.draw_fence)
            .bind(r.key)
            .execute(&mut *tx)
            .await?;
        let fence = drawn.last_insert_id();
        let took = sqlx::query(&self.sql.take)
            .bind(r.key)
            .bind(r.owner)
            .bind(common::ttl_ms(r.ttl))
            .bind(fence)
            .bind(r.metadata)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if fence > 0 && took.last_insert_id() == fence {
            return Ok(Acquire::Acquired(Lease {
                fence: Some(fence),
                ttl: r.ttl,
            }));
        }
        // Held: who holds it, and for how long (it may be gone already).
        let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&self.sql.read_back)
            .bind(r.key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Acquire::Held(match row {
            Some((owner, remaining)) => Holder {
                owner,
                remaining: common::remaining(remaining),
            },
            None => Holder::default(),
        }))
    }
}

/// The server's error number, for MySQL database errors.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

/// Maps a MySQL driver error to a [`StoreError`] whose message starts with `what`.
pub(crate) fn my_error(e: sqlx::Error, what: &str) -> StoreError {
    let number = error_number(&e);
    let kind = common::classify(&e, |_| match number {
        // Access denied, unknown database, host blocked, can't connect.
        Some(1044 | 1045 | 1049 | 1129 | 1130 | 1698 | 2002 | 2003 | 2005) => {
            StoreErrorKind::Unavailable
        }
        // Too many connections, shutdown, lock wait timeout, deadlock, killed, gone away,
        // lost connection, read-only failover.
        Some(1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 2006 | 2013 | 1290 | 1836 | 4031) => {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Rejected,
    });
    common::store_error(kind, what, e)
}

#[async_trait]
impl Store for MySqlStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::MYSQL.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notify: false,
            ..Capabilities::ALL
        }
    }

    async fn try_acquire(&self, r: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let mut attempt = 0;
        loop {
            match self.acquire_once(&r).await {
                Ok(a) => return Ok(a),
                Err(e) if error_number(&e) == Some(1213) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    let pause = rand::random_range(1..=5u64 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(self.err(e, "acquiring", r.key)),
            }
        }
    }

    async fn take_over(&self, r: AcquireRequest<'_>) -> Result<crate::store::TakeOver, StoreError> {
        self.take_over_retrying(&r).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "releasing", key))?;
        let released = done.rows_affected() > 0;
        if released {
            self.notifier.notify(key);
        }
        Ok(released)
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let done = sqlx::query(&self.sql.extend)
            .bind(common::ttl_ms(ttl))
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "extending", key))?;
        // The driver asks for "found rows": a matched row counts even if unchanged.
        Ok((done.rows_affected() > 0).then(|| Lease {
            fence: common::fence(i64::try_from(done.last_insert_id()).ok()),
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
            .bind(metadata)
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "setting metadata of", key))?;
        Ok(done.rows_affected() > 0)
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.force_release)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "force-releasing", key))?;
        let released = done.rows_affected() > 0;
        if released {
            self.notifier.notify(key);
        }
        Ok(released)
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&self.sql.inspect)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "inspecting", key))?;
        Ok(row.map(info))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&self.sql.list)
            .bind(common::like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing", prefix))?;
        // The table's collation may be case-insensitive or pad spaces: filter and sort by
        // bytes here so every store lists alike.
        let mut infos: Vec<LockInfo> = rows
            .into_iter()
            .map(info)
            .filter(|i| i.key.starts_with(prefix))
            .collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    /// Candidates, then a conditional `DELETE` each: a row is returned by the caller whose
    /// `DELETE` removed it, so each expiry is reported once.
    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&self.sql.expired)
            .bind(common::like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "looking for expired locks under", prefix))?;
        let mut reaped = Vec::new();
        for (key, owner, expiration, fence, metadata) in rows {
            let (Some(key), Some(owner), Some(expiration)) = (key, owner, expiration) else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue; // a case-insensitive collation matched more than the prefix
            }
            let done = sqlx::query(&self.sql.reap_one)
                .bind(&key)
                .bind(&owner)
                .bind(expiration)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e, "removing expired lock", &key))?;
            if done.rows_affected() > 0 {
                reaped.push(LockInfo::new(
                    key,
                    owner,
                    Some(Duration::ZERO),
                    common::fence(fence),
                    metadata,
                ));
            }
        }
        reaped.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(reaped)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        // Releases by this process only; the lock layer keeps polling for the others.
        Ok(Some(self.notifier.subscribe(key)))
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.owns_pool {
            self.pool.close().await;
        }
        Ok(())
    }
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
