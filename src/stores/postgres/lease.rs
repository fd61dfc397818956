//! The lease row, the PostgreSQL store's way of holding a lock: one row per held lock whose
//! `expiration` the database's clock judges, each operation one statement of
//! `statements.rs`. Another locking mode would sit beside this one, on the same pool.

use std::time::Duration;

use sqlx::{PgPool, Postgres};

use super::errors::pg_error;
use super::statements::{self, Names, Sql};
use crate::store::{Acquire, AcquireRequest, Holder, Lease, LockInfo, StoreError};
use crate::stores::sql::lease::Table;
use crate::stores::sql::like_prefix;
use crate::stores::sql::rows::{self, Row};

/// The lease-row operations on one table.
#[derive(Debug)]
pub(super) struct Leases {
    table: Table<Postgres>,
    pub(super) names: Names,
    pub(super) sql: Sql,
}

impl Leases {
    /// The operations on the (ready) table `names` through `pool`.
    pub(super) fn new(pool: PgPool, names: Names) -> Leases {
        let common = statements::common(&names);
        Leases {
            table: Table::new(pool, names.display.clone(), pg_error, common),
            sql: Sql::new(&names),
            names,
        }
    }

    /// The `NOTIFY` channel of the table's releases.
    pub(super) fn channel(&self) -> &str {
        &self.names.channel
    }

    /// The table, and the operations alike in every dialect.
    pub(super) fn table(&self) -> &Table<Postgres> {
        &self.table
    }

    /// Takes a free or expired key, or names its holder (and marks the lease `waiting`).
    pub(super) async fn try_acquire(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let row: Option<(Option<i64>, Option<String>, Option<i64>)> =
            sqlx::query_as(&self.sql.acquire)
                .bind(r.key)
                .bind(r.owner)
                .bind(rows::ttl_ms(r.ttl))
                .bind(r.metadata)
                .bind(&self.names.display)
                .fetch_optional(&self.table.pool)
                .await
                .map_err(|e| self.table.err(e, "acquiring", r.key))?;
        Ok(match row {
            Some((Some(fence), None, _)) => Acquire::Acquired(Lease {
                fence: rows::fence(Some(fence)),
                ttl: r.ttl,
            }),
            Some((_, owner, remaining)) => Acquire::Held(rows::holder(Some((owner, remaining)))),
            // Held by a row committed after this statement's snapshot.
            None => Acquire::Held(Holder::default()),
        })
    }

    /// Deletes our live row; notifies the channel if someone waited for it.
    pub(super) async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .bind(&self.names.channel)
            .fetch_all(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "releasing", key))?;
        Ok(!deleted.is_empty())
    }

    /// Moves our live row's expiration to now + `ttl`.
    pub(super) async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(&self.sql.extend)
            .bind(key)
            .bind(owner)
            .bind(rows::ttl_ms(ttl))
            .fetch_optional(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "extending", key))?;
        Ok(row.map(|(fence,)| Lease {
            fence: rows::fence(fence),
            ttl,
        }))
    }

    /// Deletes the row whoever holds it; tells whether its lease was live.
    pub(super) async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let row: Option<(bool, Option<String>)> = sqlx::query_as(&self.sql.force_release)
            .bind(key)
            .bind(&self.names.channel)
            .fetch_optional(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "force-releasing", key))?;
        Ok(matches!(row, Some((true, _))))
    }

    /// Deletes the expired rows under `prefix` and returns them, each to one caller only.
    pub(super) async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let reaped: Vec<Row> = sqlx::query_as(&self.sql.reap)
            .bind(like_prefix(prefix, '!'))
            .fetch_all(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "reaping expired locks under", prefix))?;
        let mut infos: Vec<LockInfo> = reaped.into_iter().map(rows::lock_info).collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }
}
