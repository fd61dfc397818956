//! The lease row, the MySQL store's way of holding a lock: one row per held lock whose
//! `expiration` the database's clock judges, with a per-key fence counter beside it (the
//! statements are in `statements.rs`). Another locking mode would sit beside this one, on
//! the same pool. MySQL has no notification channel: a release wakes this process's
//! waiters only.

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;

use super::errors::{error_number, my_error, DEADLOCK};
use super::statements::{Names, Sql};
use crate::notify::ReleaseNotifier;
use crate::store::{Acquire, AcquireRequest, Lease, LockInfo, StoreError};
use crate::stores::sql::errors::doing;
use crate::stores::sql::like_prefix;
use crate::stores::sql::rows::{self, Row};

/// How many times acquire retries after an InnoDB deadlock.
const DEADLOCK_RETRIES: u32 = 3;

/// The lease-row operations on one table.
#[derive(Debug)]
pub(super) struct Leases {
    pool: MySqlPool,
    names: Names,
    sql: Sql,
    notifier: Arc<ReleaseNotifier>,
}

impl Leases {
    /// The operations on the (ready) tables `names` through `pool`; releases wake the
    /// waiters of `notifier`.
    pub(super) fn new(pool: MySqlPool, names: Names, notifier: Arc<ReleaseNotifier>) -> Leases {
        Leases {
            sql: Sql::new(&names),
            pool,
            names,
            notifier,
        }
    }

    /// Wakes this process's waiters for `key` if it was released.
    fn released(&self, key: &str, done: sqlx::mysql::MySqlQueryResult) -> bool {
        let released = done.rows_affected() > 0;
        if released {
            self.notifier.notify(key);
        }
        released
    }

    /// The table's names.
    pub(super) fn names(&self) -> &Names {
        &self.names
    }

    fn err(&self, e: sqlx::Error, what: &str, key: &str) -> StoreError {
        my_error(e, &doing(what, key, &self.names.display))
    }

    /// One transaction: draw the key's next fence, then take the key if free or expired.
    /// An InnoDB deadlock is retried a few times after a short random pause.
    pub(super) async fn try_acquire(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let mut attempt = 0;
        loop {
            match self.acquire_once(r).await {
                Ok(a) => return Ok(a),
                Err(e) if error_number(&e) == Some(DEADLOCK) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    let pause = rand::random_range(1..=5u64 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(self.err(e, "acquiring", r.key)),
            }
        }
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
            .bind(rows::ttl_ms(r.ttl))
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
        let row = sqlx::query_as(&self.sql.read_back)
            .bind(r.key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Acquire::Held(rows::holder(row)))
    }

    /// Deletes our live row.
    pub(super) async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "releasing", key))?;
        Ok(self.released(key, done))
    }

    /// Moves our live row's expiration to now + `ttl`.
    pub(super) async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let done = sqlx::query(&self.sql.extend)
            .bind(rows::ttl_ms(ttl))
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "extending", key))?;
        // The driver asks for "found rows": a matched row counts even if unchanged.
        Ok((done.rows_affected() > 0).then(|| Lease {
            fence: rows::fence(i64::try_from(done.last_insert_id()).ok()),
            ttl,
        }))
    }

    /// Replaces our live row's metadata.
    pub(super) async fn set_metadata(
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

    /// Deletes the live row whoever holds it.
    pub(super) async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.force_release)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "force-releasing", key))?;
        Ok(self.released(key, done))
    }

    /// The live row of `key`.
    pub(super) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&self.sql.inspect)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "inspecting", key))?;
        Ok(row.map(rows::lock_info))
    }

    /// The live rows under `prefix`, in byte order of their keys.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let found: Vec<Row> = sqlx::query_as(&self.sql.list)
            .bind(like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing", prefix))?;
        // The table's collation may be case-insensitive or pad spaces: filter and sort by
        // bytes here so every store lists alike.
        let mut infos: Vec<LockInfo> = found
            .into_iter()
            .map(rows::lock_info)
            .filter(|i| i.key.starts_with(prefix))
            .collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    /// Candidates, then a conditional `DELETE` each: a row is returned by the caller whose
    /// `DELETE` removed it, so each expiry is reported once.
    pub(super) async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let candidates: Vec<Row> = sqlx::query_as(&self.sql.expired)
            .bind(like_prefix(prefix, '!'))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "looking for expired locks under", prefix))?;
        let mut reaped = Vec::new();
        for (key, owner, expiration, fence, metadata) in candidates {
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
                    rows::fence(fence),
                    metadata,
                ));
            }
        }
        reaped.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(reaped)
    }
}
