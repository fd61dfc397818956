//! The lease row, the PostgreSQL store's way of holding a lock: one row per held lock whose
//! `expiration` the database's clock judges, each operation on a mutex one statement of
//! `statements.rs` (those on readers and permits are in `group.rs`). Another locking mode would sit beside this one, on the same pool.

use std::time::Duration;

use sqlx::{PgPool, Postgres};

use super::errors::pg_error;
use super::statements::{self, Names, Sql};
use crate::store::{Acquire, AcquireRequest, Lease, LockKind, StoreError};
use crate::stores::sql::group::GROUP_OWNER;
use crate::stores::sql::lease::Table;
use crate::stores::sql::rows;

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

    /// Takes a free or expired key, or names its holder (and marks the lease `waiting`): the
    /// one acquire statement for a mutex (then, for a waiting writer on a key held by readers
    /// or permits, the statement that records its marker); one transaction for a reader or a
    /// permit.
    pub(super) async fn try_acquire(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        if r.kind != LockKind::Exclusive {
            return self.join(r).await;
        }
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
        let (owner, remaining) = match row {
            Some((Some(fence), None, _)) => {
                return Ok(Acquire::Acquired(Lease {
                    fence: rows::fence(Some(fence)),
                    ttl: r.ttl,
                }))
            }
            Some((_, owner, remaining)) => (owner, remaining),
            // Held by a row committed after this statement's snapshot.
            None => (None, None),
        };
        if owner.as_deref() == Some(GROUP_OWNER) {
            // Readers or permits hold the key: a waiting writer holds new readers back. (A
            // mutex's row would take the marker with it when released, so a mutex's waiters
            // write nothing more.)
            if let Some(lease) = r.writer_waiting {
                if let Some(holder) = self.mark_writer(r.key, r.owner, lease).await? {
                    return Ok(Acquire::Held(holder));
                }
            }
            return Ok(Acquire::Held(self.held_by(r.key, owner, remaining).await?));
        }
        Ok(Acquire::Held(rows::holder(Some((owner, remaining)))))
    }

    /// Deletes our live row, notifying the channel if someone waited for it; when `owner`
    /// holds no row of its own, releases its place in the key's group, if any.
    pub(super) async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .bind(&self.names.channel)
            .fetch_all(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "releasing", key))?;
        if !deleted.is_empty() {
            return Ok(true);
        }
        self.leave(key, owner).await
    }

    /// Replaces the metadata of the owner's live row, or of its place in the key's group.
    pub(super) async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        if self.table.set_metadata(key, owner, metadata).await? {
            return Ok(true);
        }
        self.set_metadata_in_group(key, owner, metadata).await
    }

    /// Moves our live row's expiration to now + `ttl`, or that of the owner's place in the
    /// key's group.
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
        match row {
            Some((fence,)) => Ok(Some(Lease {
                fence: rows::fence(fence),
                ttl,
            })),
            None => self.extend_in_group(key, owner, ttl).await,
        }
    }
}
