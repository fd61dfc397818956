//! Keys held by readers or permits in the MySQL store (lease mode): each operation one
//! transaction, which row-locks the key's fence counter (a join, drawing the holder's fence
//! as a plain acquire does) or the key's row before it changes the group, so that it and
//! every acquire of the key take turns. The layout is the SQL stores'
//! (`crate::stores::sql::group`). Releases wake this store's waiters and the stores written
//! into the row's `waiters` (`wake.rs`), as a mutex's do; a holder that gets in while room
//! is left wakes them too.

use std::time::Duration;

use sqlx::{MySql, MySqlConnection, Transaction};

use super::lease::Leases;
use crate::store::{Acquire, AcquireRequest, Holder, Lease, LockInfo, StoreError};
use crate::stores::sql::group::{self, StateRow, Step};
use crate::stores::sql::like_prefix;
use crate::stores::sql::rows::{self, Row};

/// [`StateRow`], then the stores waiting for the key.
type MyStateRow = (
    String,
    bool,
    Option<String>,
    Option<i64>,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// What a join's transaction decided: the answer, and whether to wake waiters once it
/// commits (`Some`: room is left), with the stores to wake besides this one's next waiter.
type Joined = (Result<Acquire, StoreError>, Option<Option<String>>);

impl Leases {
    async fn begin_group(&self) -> sqlx::Result<Transaction<'static, MySql>> {
        self.table().pool.begin_with(self.sql.begin_group).await
    }

    /// Takes a reader's or a permit's place in the key's group, in one transaction.
    pub(super) async fn join(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let (answer, wake) = self
            .retrying_deadlocks("acquiring", r.key, || self.join_once(r))
            .await?;
        if let Some(waiters) = wake {
            self.wake_waiters(r.key, waiters).await;
        }
        answer
    }

    async fn join_once(&self, r: &AcquireRequest<'_>) -> Result<Joined, sqlx::Error> {
        let mut tx = self.begin_group().await?;
        let joined = self.join_in(&mut tx, r).await?;
        // Committed whatever the answer: a refusal may have pruned holders or registered
        // this store as a waiter. An invalid request changed nothing and rolls back.
        if joined.0.is_ok() {
            tx.commit().await?;
        }
        Ok(joined)
    }

    async fn join_in(
        &self,
        tx: &mut Transaction<'static, MySql>,
        r: &AcquireRequest<'_>,
    ) -> Result<Joined, sqlx::Error> {
        let g = &self.sql.group;
        let ttl = rows::ttl_ms(r.ttl);
        // The gate, and the new holder's fence.
        let fence = sqlx::query(&self.sql.draw_fence)
            .bind(r.key)
            .execute(&mut **tx)
            .await?
            .last_insert_id();
        let state: Option<MyStateRow> = sqlx::query_as(&g.state)
            .bind(r.owner)
            .bind(r.key)
            .fetch_optional(&mut **tx)
            .await?;
        let waiters = state.as_ref().and_then(|s| s.8.clone());
        let state: Option<StateRow> =
            state.map(|(a, b, c, d, e, f, g, h, _)| (a, b, c, d, e, f, g, h));
        // The holders already in the group this request joins (`None`: it opens one).
        let joining = match group::first_step(state, r.kind) {
            Step::Held(holder) => {
                self.register(tx, r.key).await?;
                return Ok((Ok(Acquire::Held(holder)), None));
            }
            Step::Join(theirs) => {
                sqlx::query(&g.prune).bind(r.key).execute(&mut **tx).await?;
                let (count, mine): (i64, i64) = sqlx::query_as(&g.count)
                    .bind(r.owner)
                    .bind(r.key)
                    .fetch_one(&mut **tx)
                    .await?;
                match group::gets_in(theirs, r.kind, count, mine) {
                    Err(invalid) => return Ok((Err(invalid), None)),
                    Ok(false) => {
                        self.register(tx, r.key).await?;
                        let first = sqlx::query_as(&g.first)
                            .bind(r.key)
                            .fetch_optional(&mut **tx)
                            .await?;
                        return Ok((Ok(Acquire::Held(rows::holder(first))), None));
                    }
                    Ok(true) => {}
                }
                sqlx::query(&g.stretch)
                    .bind(ttl)
                    .bind(ttl)
                    .bind(r.key)
                    .execute(&mut **tx)
                    .await?;
                Some(count)
            }
            Step::Open => {
                // A free key, or one whose lease ran out: a new group, without the holders
                // of an earlier one (expired, or orphaned by a foreign delete of the row).
                sqlx::query(&g.drop_members)
                    .bind(r.key)
                    .execute(&mut **tx)
                    .await?;
                let (kind, permits) = group::columns(r.kind);
                sqlx::query(&g.open)
                    .bind(r.key)
                    .bind(ttl)
                    .bind(kind)
                    .bind(permits)
                    .execute(&mut **tx)
                    .await?;
                None
            }
        };
        sqlx::query(&g.join)
            .bind(r.key)
            .bind(r.owner)
            .bind(ttl)
            .bind(fence)
            .bind(r.metadata)
            .execute(&mut **tx)
            .await?;
        // Someone waits and there is room for them: a release woke each waiting store once.
        let wake = if group::room_left(r.kind, joining) {
            Some(self.take_waiters(tx, r.key, waiters).await?)
        } else {
            None
        };
        let lease = Lease {
            fence: Some(fence),
            ttl: r.ttl,
        };
        Ok((Ok(Acquire::Acquired(lease)), wake))
    }

    /// Writes this store's token into the key's row if a task of it waits (`wake.rs`).
    async fn register(&self, tx: &mut MySqlConnection, key: &str) -> sqlx::Result<()> {
        if let Some(token) = self.wakeups.token_for(key) {
            sqlx::query(&self.sql.group.register)
                .bind(token)
                .bind(token)
                .bind(token)
                .bind(key)
                .execute(tx)
                .await?;
        }
        Ok(())
    }

    /// Empties the row's `waiters`, which the caller wakes once it commits (they write
    /// themselves in again if they find the key held once more). `None`: nobody to wake.
    async fn take_waiters(
        &self,
        tx: &mut MySqlConnection,
        key: &str,
        waiters: Option<String>,
    ) -> sqlx::Result<Option<String>> {
        let Some(waiters) = waiters else {
            return Ok(None);
        };
        sqlx::query(&self.sql.group.clear_waiters)
            .bind(key)
            .execute(tx)
            .await?;
        Ok(Some(waiters))
    }

    /// Wakes this process's next waiter of `key`, and the stores named in `waiters`.
    async fn wake_waiters(&self, key: &str, waiters: Option<String>) {
        self.notifier.notify(key);
        if let Some(waiters) = waiters {
            self.wakeups.wake(&self.table().pool, &waiters).await;
        }
    }

    /// Whoever holds `key` after a plain acquire found it held by the row's `owner` with
    /// `remaining_ms` left: for a group's row, its holder that ends first.
    pub(super) async fn held_by(
        &self,
        key: &str,
        owner: Option<String>,
        remaining_ms: Option<i64>,
    ) -> Result<Holder, StoreError> {
        let first = &self.sql.group.first;
        self.table().held_by(first, key, owner, remaining_ms).await
    }

    /// Records `owner`'s writer-waiting marker on the held `key` for `lease` (unless another
    /// writer's lives) and reads its holder. `None` when there was no live row to mark, or
    /// another writer's marker.
    pub(super) async fn mark_writer(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Holder>, StoreError> {
        let err = |e| self.table().err(e, "acquiring", key);
        let marked = sqlx::query(&self.sql.group.mark_writer)
            .bind(owner)
            .bind(rows::ttl_ms(Some(lease)))
            .bind(key)
            .bind(owner)
            .execute(&self.table().pool)
            .await
            .map_err(err)?;
        if marked.rows_affected() == 0 {
            return Ok(None);
        }
        let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&self.sql.read_back)
            .bind(key)
            .fetch_optional(&self.table().pool)
            .await
            .map_err(err)?;
        match row {
            Some((owner, ms)) => Ok(Some(self.held_by(key, owner, ms).await?)),
            None => Ok(None),
        }
    }

    /// Releases `owner`'s place in `key`'s group in one transaction (the group's row goes
    /// with its last live holder unless a waiting writer's marker lives; else its expiration
    /// follows its latest holder's), waking waiters. Whether a live place was released.
    pub(super) async fn leave(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let (released, waiters) = self
            .retrying_deadlocks("releasing", key, || self.leave_once(key, owner))
            .await?;
        if released {
            self.wake_waiters(key, waiters).await;
        }
        Ok(released)
    }

    async fn leave_once(
        &self,
        key: &str,
        owner: &str,
    ) -> Result<(bool, Option<String>), sqlx::Error> {
        let g = &self.sql.group;
        let mut tx = self.begin_group().await?;
        let row = self.lock_row(&mut tx, key).await?;
        let live: Option<bool> = sqlx::query_scalar(&g.holder_live)
            .bind(key)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_none() {
            return Ok((false, None)); // not a holder: the transaction rolls back on drop
        }
        sqlx::query(&g.leave)
            .bind(key)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        let (in_group, waiters) = row.unwrap_or((false, None));
        let released = live == Some(true) && in_group;
        // Only a released place wakes the waiting stores (an expired one was no one's).
        let waiters = match released {
            true => self.take_waiters(&mut tx, key, waiters).await?,
            false => None,
        };
        self.settle(&mut tx, key).await?;
        tx.commit().await?;
        Ok((released, waiters))
    }

    /// The key's row, row-locked: whether it is a group's, and the stores waiting for it.
    async fn lock_row(
        &self,
        tx: &mut MySqlConnection,
        key: &str,
    ) -> sqlx::Result<Option<(bool, Option<String>)>> {
        sqlx::query_as(&self.sql.group.row)
            .bind(key)
            .fetch_optional(tx)
            .await
    }

    async fn settle(&self, tx: &mut MySqlConnection, key: &str) -> sqlx::Result<()> {
        let g = &self.sql.group;
        sqlx::query(&g.close)
            .bind(key)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&g.refresh)
            .bind(key)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Sets `owner`'s lease in `key`'s group to `ttl` from now (and the group row's
    /// expiration to follow) in one transaction. `None` when it holds no live place there.
    pub(super) async fn extend_in_group(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let fence = self
            .retrying_deadlocks("extending", key, || self.extend_once(key, owner, ttl))
            .await?;
        Ok(fence.map(|f| Lease {
            fence: rows::fence(Some(f)),
            ttl,
        }))
    }

    async fn extend_once(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<i64>, sqlx::Error> {
        let g = &self.sql.group;
        let mut tx = self.begin_group().await?;
        let row = self.lock_row(&mut tx, key).await?;
        if !matches!(row, Some((true, _))) {
            return Ok(None);
        }
        let done = sqlx::query(&g.extend)
            .bind(rows::ttl_ms(ttl))
            .bind(key)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let fence = i64::try_from(done.last_insert_id()).ok();
        sqlx::query(&g.refresh)
            .bind(key)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(fence)
    }

    /// Sets `owner`'s metadata in `key`'s group: one statement.
    pub(super) async fn set_metadata_in_group(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let set = || async {
            sqlx::query(&self.sql.group.set_metadata)
                .bind(metadata)
                .bind(key)
                .bind(owner)
                .bind(key)
                .execute(&self.table().pool)
                .await
        };
        let done = self
            .retrying_deadlocks("setting metadata of", key, set)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the key's live row and every holder of its group in one transaction, then
    /// wakes the key's waiters. Whether something live was removed.
    pub(super) async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        self.wakeups.given_up(key);
        let (released, waiters) = self
            .retrying_deadlocks("force-releasing", key, || self.force_once(key))
            .await?;
        if released {
            self.wake_waiters(key, waiters).await;
        }
        Ok(released)
    }

    async fn force_once(&self, key: &str) -> Result<(bool, Option<String>), sqlx::Error> {
        let g = &self.sql.group;
        let mut tx = self.begin_group().await?;
        let row: Option<(bool, Option<String>)> = sqlx::query_as(&g.force_read)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let members: i64 = sqlx::query_scalar(&g.live_members)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        let (live, waiters) = row.unwrap_or((false, None));
        if !live && members == 0 {
            return Ok((false, None)); // nothing live: the transaction rolls back on drop
        }
        sqlx::query(&g.force_delete)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&g.drop_members)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((true, waiters))
    }

    /// The key's live row, and its group's live holders: one statement.
    pub(super) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.table().inspect(&self.sql.group.inspect, key).await
    }

    /// The live rows under `prefix` with their groups' holders, in byte order of their keys:
    /// one statement.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.table().list(&self.sql.group.list, prefix).await
    }

    /// The expiry watcher's sweep of group holders under `prefix`: candidates, then a
    /// conditional `DELETE` each (a holder is reported by the caller whose `DELETE` removed
    /// it); then the rows of groups whose lease and writer's marker ran out.
    pub(super) async fn reap_members(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let g = &self.sql.group;
        let pattern = like_prefix(prefix, '!');
        let candidates: Vec<Row> = sqlx::query_as(&g.expired_members)
            .bind(&pattern)
            .fetch_all(&self.table().pool)
            .await
            .map_err(|e| {
                self.table()
                    .err(e, "looking for expired locks under", prefix)
            })?;
        let reaped = self.reap_each(prefix, candidates, &g.reap_member).await?;
        sqlx::query(&g.reap_groups)
            .bind(&pattern)
            .execute(&self.table().pool)
            .await
            .map_err(|e| self.table().err(e, "reaping expired locks under", prefix))?;
        Ok(reaped)
    }
}
