//! The lease row, the MySQL store's way of holding a lock: one row per held lock whose
//! `expiration` the database's clock judges, with a per-key fence counter beside it (the
//! statements are in `statements.rs`). Another locking mode would sit beside this one, on
//! the same pool. A release wakes this store's waiters, and those of other stores that
//! wrote themselves into the row's `waiters` (`wake.rs`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{MySql, MySqlPool};

use super::errors::{error_number, my_error, DEADLOCK};
use super::statements::{self, Names, Sql};
use super::wake::Wakeups;
use crate::notify::ReleaseNotifier;
use crate::store::{Acquire, AcquireRequest, Lease, LockInfo, LockKind, StoreError};
use crate::stores::sql::group::GROUP_OWNER;
use crate::stores::sql::lease::Table;
use crate::stores::sql::like_prefix;
use crate::stores::sql::rows::{self, Row};

/// A held key's row as an acquire reads it back: owner, remaining ms.
type HeldRow = (Option<String>, Option<i64>);

/// How many times acquire retries after an InnoDB deadlock.
const DEADLOCK_RETRIES: u32 = 3;

/// The lease-row operations on one table.
#[derive(Debug)]
pub(super) struct Leases {
    table: Table<MySql>,
    pub(super) sql: Sql,
    pub(super) notifier: Arc<ReleaseNotifier>,
    pub(super) wakeups: Wakeups,
}

impl Leases {
    /// The operations on the (ready) tables `names` through `pool` (releasing with
    /// `DELETE … RETURNING` if `returning`; bounding idle transactions if `bound_idle`);
    /// releases wake the waiters of `notifier`, and the other stores `wakeups` names.
    pub(super) fn new(
        pool: MySqlPool,
        names: Names,
        returning: bool,
        bound_idle: bool,
        notifier: Arc<ReleaseNotifier>,
        wakeups: Wakeups,
    ) -> Leases {
        let common = statements::common(&names);
        Leases {
            table: Table::new(pool, names.display.clone(), my_error, common),
            sql: Sql::new(&names, returning, bound_idle),
            notifier,
            wakeups,
        }
    }

    /// The table, and the operations alike in every dialect.
    pub(super) fn table(&self) -> &Table<MySql> {
        &self.table
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

    /// Wakes this process's waiters for `key` if it was released.
    fn released(&self, key: &str, done: sqlx::mysql::MySqlQueryResult) -> bool {
        let released = done.rows_affected() > 0;
        if released {
            self.notifier.notify(key);
        }
        released
    }

    /// One transaction: draw the key's next fence, then take the key if free or expired
    /// (then, for a waiting writer on a key held by readers or permits, the statement that
    /// records its marker); for a reader or a permit, the group's transaction (`group.rs`).
    pub(super) async fn try_acquire(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        if r.kind != LockKind::Exclusive {
            return self.join(r).await;
        }
        let (owner, remaining) = match self
            .retrying_deadlocks("acquiring", r.key, || self.acquire_once(r))
            .await?
        {
            Ok(lease) => return Ok(Acquire::Acquired(lease)),
            Err(row) => row.unwrap_or((None, None)),
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

    /// Runs the transaction `once` makes, again after a short random pause when InnoDB
    /// chose it as a deadlock victim (a few times), and names `doing` and `key` on failure.
    pub(super) async fn retrying_deadlocks<T, F, Fut>(
        &self,
        doing: &str,
        key: &str,
        once: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempt = 0;
        loop {
            match once().await {
                Ok(a) => return Ok(a),
                Err(e) if error_number(&e) == Some(DEADLOCK) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    let pause = rand::random_range(1..=5u64 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(self.table.err(e, doing, key)),
            }
        }
    }

    /// The lease, or the live row's owner and remaining ms (`None`: gone already).
    async fn acquire_once(
        &self,
        r: &AcquireRequest<'_>,
    ) -> Result<Result<Lease, Option<HeldRow>>, sqlx::Error> {
        let mut tx = self.table.pool.begin_with(self.sql.begin).await?;
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
        let taken = fence > 0 && took.last_insert_id() == fence;
        if !taken {
            if let Some(token) = self.wakeups.token_for(r.key) {
                // A task of this store waits: have the holder's release wake it.
                sqlx::query(&self.sql.register)
                    .bind(token)
                    .bind(token)
                    .bind(token)
                    .bind(r.key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        if taken {
            self.wakeups.taken(r.key);
            return Ok(Ok(Lease {
                fence: Some(fence),
                ttl: r.ttl,
            }));
        }
        // Held: who holds it, and for how long (it may be gone already).
        let row = sqlx::query_as(&self.sql.read_back)
            .bind(r.key)
            .fetch_optional(&self.table.pool)
            .await?;
        Ok(Err(row))
    }

    /// Deletes our live row, and wakes the stores that wait for it; when `owner` holds no
    /// row of its own, releases its place in the key's group, if any.
    pub(super) async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        if self.release_row(key, owner).await? {
            return Ok(true);
        }
        self.leave(key, owner).await
    }

    async fn release_row(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.wakeups.given_up(key);
        let err = |e| self.table.err(e, "releasing", key);
        if let Some(returning) = &self.sql.release_returning {
            // MariaDB: `DELETE … RETURNING waiters`, released if it returned a row.
            let deleted: Option<Option<String>> = sqlx::query_scalar(returning)
                .bind(key)
                .bind(owner)
                .fetch_optional(&self.table.pool)
                .await
                .map_err(err)?;
            let Some(waiters) = deleted else {
                return Ok(false);
            };
            self.notifier.notify(key);
            if let Some(waiters) = waiters {
                self.wakeups.wake(&self.table.pool, &waiters).await;
            }
            return Ok(true);
        }
        let done = sqlx::query(&self.sql.release)
            .bind(key)
            .bind(owner)
            .execute(&self.table.pool)
            .await
            .map_err(err)?;
        if self.released(key, done) {
            return Ok(true);
        }
        // Not ours, or others wait for it.
        self.release_waited(key, owner).await.map_err(err)
    }

    /// One transaction: our live row's `waiters`, row-locked so that no store writes itself
    /// in unseen, then the delete; then the waiters are woken.
    async fn release_waited(&self, key: &str, owner: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.table.pool.begin_with(self.sql.begin).await?;
        let waiters: Option<Option<String>> = sqlx::query_scalar(&self.sql.waiters_of_ours)
            .bind(key)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(waiters) = waiters else {
            return Ok(false); // no such live row: the transaction rolls back on drop
        };
        let done = sqlx::query(&self.sql.release_any)
            .bind(key)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let released = self.released(key, done);
        if let (true, Some(waiters)) = (released, waiters) {
            self.wakeups.wake(&self.table.pool, &waiters).await;
        }
        Ok(released)
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
            .execute(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "extending", key))?;
        // The driver asks for "found rows": a matched row counts even if unchanged.
        if done.rows_affected() == 0 {
            return self.extend_in_group(key, owner, ttl).await;
        }
        Ok(Some(Lease {
            fence: rows::fence(i64::try_from(done.last_insert_id()).ok()),
            ttl,
        }))
    }

    /// Candidates, then a conditional `DELETE` each: a row is returned by the caller whose
    /// `DELETE` removed it, so each expiry is reported once; then the same for the holders
    /// of groups (`group.rs`).
    pub(super) async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let candidates: Vec<Row> = sqlx::query_as(&self.sql.expired)
            .bind(like_prefix(prefix, '!'))
            .fetch_all(&self.table.pool)
            .await
            .map_err(|e| self.table.err(e, "looking for expired locks under", prefix))?;
        let mut reaped = self
            .reap_each(prefix, candidates, &self.sql.reap_one)
            .await?;
        reaped.extend(self.reap_members(prefix).await?);
        reaped.sort_by(|a, b| a.key.cmp(&b.key).then(a.fence.cmp(&b.fence)));
        Ok(reaped)
    }

    /// Removes each of `candidates` (expired rows under `prefix`) with `delete` (binding key,
    /// owner and raw expiration), returning those this call removed.
    pub(super) async fn reap_each(
        &self,
        prefix: &str,
        candidates: Vec<Row>,
        delete: &str,
    ) -> Result<Vec<LockInfo>, StoreError> {
        let mut reaped = Vec::new();
        for (key, owner, expiration, fence, metadata) in candidates {
            let (Some(key), Some(owner), Some(expiration)) = (key, owner, expiration) else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue; // a case-insensitive collation matched more than the prefix
            }
            let done = sqlx::query(delete)
                .bind(&key)
                .bind(&owner)
                .bind(expiration)
                .execute(&self.table.pool)
                .await
                .map_err(|e| self.table.err(e, "removing expired lock", &key))?;
            if done.rows_affected() > 0 {
                // Reported with no time left.
                reaped.push(rows::lock_info((
                    Some(key),
                    Some(owner),
                    Some(0),
                    fence,
                    metadata,
                )));
            }
        }
        Ok(reaped)
    }
}
