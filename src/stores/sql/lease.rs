//! The lease-row operations whose SQL has the same shape in every server dialect (set
//! metadata, inspect, list, naming a group's first holder), written once over the driver;
//! each dialect's `lease.rs` and `group.rs` hold the others (acquire, release, extend, force
//! release, reap), whose statements and answers differ.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::store::{Holder, LockInfo, StoreError};

use super::errors::doing;
use super::group::{self, lock_infos, JoinedRow, GROUP_OWNER};
use super::like_prefix;

/// How many rows a statement changed (each driver has its own result type).
pub(crate) trait Affected {
    /// The rows changed, or matched where the driver counts those.
    fn rows_affected(&self) -> u64;
}

#[cfg(feature = "postgres")]
impl Affected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "mysql")]
impl Affected for sqlx::mysql::MySqlQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// The statements a [`Table`] runs itself, written by the dialect.
#[derive(Debug)]
pub(crate) struct Common {
    /// Binds metadata, key, owner: sets the metadata of the owner's live row.
    pub set_metadata: String,
}

/// A lock table of a server store: its pool, its name for messages, the dialect's error
/// mapping, and the operations alike in every dialect.
#[derive(Debug)]
pub(crate) struct Table<DB: Database> {
    /// The store's pool.
    pub pool: Pool<DB>,
    /// `container.table`, for messages.
    pub display: String,
    error: fn(sqlx::Error, &str) -> StoreError,
    sql: Common,
}

impl<DB> Table<DB>
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    /// The table `display` on `pool`; `error` maps the dialect's driver errors.
    pub(crate) fn new(
        pool: Pool<DB>,
        display: String,
        error: fn(sqlx::Error, &str) -> StoreError,
        sql: Common,
    ) -> Self {
        Table {
            pool,
            display,
            error,
            sql,
        }
    }

    /// A driver error while `what` (e.g. "releasing") on `key`, as a [`StoreError`].
    pub(crate) fn err(&self, e: sqlx::Error, what: &str, key: &str) -> StoreError {
        (self.error)(e, &doing(what, key, &self.display))
    }

    /// Replaces the metadata of the owner's live row.
    pub(crate) async fn set_metadata(
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

    /// The key's live row joined with its group's live holders, by `statement` (the
    /// dialect's, binding the key).
    pub(crate) async fn inspect(
        &self,
        statement: &str,
        key: &str,
    ) -> Result<Option<LockInfo>, StoreError>
    where
        JoinedRow: for<'r> FromRow<'r, DB::Row>,
    {
        let found: Vec<JoinedRow> = sqlx::query_as(statement)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "inspecting", key))?;
        Ok(lock_infos(found).into_iter().next())
    }

    /// The live rows under `prefix` joined with their groups' live holders, by `statement`
    /// (the dialect's, binding a `LIKE` pattern escaped with `!`), in byte order of their
    /// keys. The table's collation may be case-insensitive or pad spaces (MySQL): rows are
    /// filtered and sorted by bytes here so that every store lists alike.
    pub(crate) async fn list(
        &self,
        statement: &str,
        prefix: &str,
    ) -> Result<Vec<LockInfo>, StoreError>
    where
        JoinedRow: for<'r> FromRow<'r, DB::Row>,
    {
        let pattern = like_prefix(prefix, '!');
        let found: Vec<JoinedRow> = sqlx::query_as(statement)
            .bind(pattern.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing", prefix))?;
        let mut infos: Vec<LockInfo> = lock_infos(found)
            .into_iter()
            .filter(|i| i.key.starts_with(prefix))
            .collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    /// Whoever holds `key` after a plain acquire found it held by the row's `owner` with
    /// `remaining_ms` left: for a group's row, its holder that ends first, read by `first`
    /// (the dialect's statement, binding the key: owner, remaining ms).
    pub(crate) async fn held_by(
        &self,
        first: &str,
        key: &str,
        owner: Option<String>,
        remaining_ms: Option<i64>,
    ) -> Result<Holder, StoreError>
    where
        (Option<String>, Option<i64>): for<'r> FromRow<'r, DB::Row>,
    {
        let first = if owner.as_deref() == Some(GROUP_OWNER) {
            sqlx::query_as(first)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e, "acquiring", key))?
        } else {
            None
        };
        Ok(group::holder(owner, remaining_ms, || first))
    }
}
