//! Keys held by readers or permits in the SQLite store: each operation one `BEGIN IMMEDIATE`
//! transaction (SQLite runs one writer at a time, so nothing changes the key between its
//! statements). The layout is the SQL stores' (`crate::stores::sql::group`).

use std::time::Duration;

use sqlx::{Sqlite, Transaction};

use super::{ttl_millis, Inner};
use crate::store::{Acquire, Holder, Lease, LockInfo, LockKind, StoreError};
use crate::stores::sql::group::{self, StateRow, Step, GROUP_OWNER};
use crate::stores::sql::rows::{self, Row};

/// A group request: what `try_acquire` was asked, owned so that it can finish in a task of
/// its own.
pub(super) struct Join<'a> {
    pub key: &'a str,
    pub owner: &'a str,
    pub ttl: Option<Duration>,
    pub metadata: Option<&'a str>,
    pub kind: LockKind,
}

impl Inner {
    /// Takes a reader's or a permit's place in `j.key`'s group, in one transaction. Answers
    /// whether room is left for another holder, so the caller wakes the next waiter.
    pub(super) async fn join(&self, j: &Join<'_>) -> Result<(Acquire, bool), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.error(e))?;
        let answer = self.join_in(&mut tx, j).await;
        // Committed whatever the answer: a refusal may have pruned expired holders.
        tx.commit().await.map_err(|e| self.error(e))?;
        answer
    }

    async fn join_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        j: &Join<'_>,
    ) -> Result<(Acquire, bool), StoreError> {
        let g = &self.sql.group;
        let err = |e| self.error(e);
        let ttl = ttl_millis(j.ttl);
        let state: Option<StateRow> = sqlx::query_as(&g.state)
            .bind(j.key)
            .bind(j.owner)
            .fetch_optional(&mut **tx)
            .await
            .map_err(err)?;
        // The holders already in the group this request joins (`None`: it opens one).
        let joining = match group::first_step(state, j.kind) {
            Step::Held(holder) => return Ok((Acquire::Held(holder), false)),
            Step::Join(theirs) => {
                sqlx::query(&g.prune)
                    .bind(j.key)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                let (count, mine): (i64, i64) = sqlx::query_as(&g.count)
                    .bind(j.key)
                    .bind(j.owner)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(err)?;
                if !group::gets_in(theirs, j.kind, count, mine)? {
                    return Ok((Acquire::Held(self.first_in(tx, j.key).await?), false));
                }
                sqlx::query(&g.stretch)
                    .bind(j.key)
                    .bind(j.owner)
                    .bind(ttl)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                Some(count)
            }
            Step::Open => {
                // A free key, or one whose lease ran out: a new group, without the holders
                // of an earlier one (expired, or orphaned by a foreign delete of the row).
                sqlx::query(&self.sql.drop_members)
                    .bind(j.key)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                let (kind, permits) = group::columns(j.kind);
                sqlx::query(&g.open)
                    .bind(j.key)
                    .bind(j.owner)
                    .bind(ttl)
                    .bind(j.metadata)
                    .bind(kind)
                    .bind(permits)
                    .execute(&mut **tx)
                    .await
                    .map_err(err)?;
                None
            }
        };
        let fence: Option<i64> = sqlx::query_scalar(&g.join)
            .bind(j.key)
            .bind(j.owner)
            .bind(ttl)
            .bind(j.metadata)
            .fetch_one(&mut **tx)
            .await
            .map_err(err)?;
        let room_left = group::room_left(j.kind, joining);
        let lease = Lease {
            fence: rows::fence(fence),
            ttl: j.ttl,
        };
        Ok((Acquire::Acquired(lease), room_left))
    }

    /// The group's holder that ends first, as a waiter is told.
    async fn first_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        key: &str,
    ) -> Result<Holder, StoreError> {
        let first = sqlx::query_as(&self.sql.group.first)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| self.error(e))?;
        Ok(rows::holder(first))
    }

    /// Whoever holds `key` after a plain acquire found it held, the row's owner being
    /// `owner` with `remaining_ms` left: for a group's row, its holder that ends first.
    pub(super) async fn held_by(
        &self,
        key: &str,
        owner: Option<String>,
        remaining_ms: Option<i64>,
    ) -> Result<Holder, StoreError> {
        let first = if owner.as_deref() == Some(GROUP_OWNER) {
            sqlx::query_as(&self.sql.group.first)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error(e))?
        } else {
            None
        };
        Ok(group::holder(owner, remaining_ms, || first))
    }

    /// Records `owner`'s writer-waiting marker on the held `key` for `lease` (unless another
    /// writer's lives), and reads the holder: one statement. `None` when the statement found
    /// no live row to mark, or another writer's marker.
    pub(super) async fn mark_writer(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Holder>, StoreError> {
        let row: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as(&self.sql.group.mark_writer)
                .bind(key)
                .bind(owner)
                .bind(ttl_millis(Some(lease)))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
        match row {
            Some((owner, remaining_ms)) => Ok(Some(self.held_by(key, owner, remaining_ms).await?)),
            None => Ok(None),
        }
    }

    /// Releases `owner`'s place in `key`'s group, in one transaction: the group's row goes
    /// with its last live holder (unless a waiting writer's marker lives: then the row stays,
    /// expired, to hold new readers back), else its expiration follows its latest holder's.
    /// `Some(live)` when a holding was removed.
    pub(super) async fn leave(&self, key: &str, owner: &str) -> Result<Option<bool>, StoreError> {
        let g = &self.sql.group;
        let run = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let live: Option<bool> = sqlx::query_scalar(&g.leave)
                .bind(key)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            if live.is_some() {
                self.settle(&mut tx, key).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(live)
        };
        run.await.map_err(|e| self.error(e))
    }

    /// After a holder left or changed its lease: removes the group's row if nothing holds
    /// it any more, or sets its expiration to its latest holder's.
    async fn settle(&self, tx: &mut Transaction<'_, Sqlite>, key: &str) -> sqlx::Result<()> {
        let g = &self.sql.group;
        sqlx::query(&g.close).bind(key).execute(&mut **tx).await?;
        sqlx::query(&g.refresh).bind(key).execute(&mut **tx).await?;
        Ok(())
    }

    /// Sets `owner`'s lease in `key`'s group to `ttl` from now, and the group row's
    /// expiration to follow, in one transaction. `None` when it holds no live place there.
    pub(super) async fn extend_in_group(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let fence: Option<Option<i64>> = sqlx::query_scalar(&self.sql.group.extend)
                .bind(key)
                .bind(owner)
                .bind(ttl_millis(ttl))
                .fetch_optional(&mut *tx)
                .await?;
            if fence.is_some() {
                self.settle(&mut tx, key).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(fence)
        };
        let fence = run.await.map_err(|e| self.error(e))?;
        Ok(fence.map(|f| Lease {
            fence: rows::fence(f),
            ttl,
        }))
    }

    /// Sets `owner`'s metadata in `key`'s group: one statement. Whether it holds a live
    /// place there.
    pub(super) async fn set_metadata_in_group(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.group.set_metadata)
            .bind(key)
            .bind(owner)
            .bind(metadata)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the key's row and its group's holders in one transaction. `Some(live)` when
    /// something was removed, `live` when it was held.
    pub(super) async fn force_release(&self, key: &str) -> Result<Option<bool>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let row: Option<bool> = sqlx::query_scalar(&self.sql.force_release)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            let members: Vec<bool> = sqlx::query_scalar(&self.sql.drop_members)
                .bind(key)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let removed = row.is_some() || !members.is_empty();
            let live = row == Some(true) || members.contains(&true);
            Ok::<_, sqlx::Error>(removed.then_some(live))
        };
        run.await.map_err(|e| self.error(e))
    }

    /// The expiry watcher's sweep under `prefix`, in one transaction: expired holders of
    /// groups and expired plain rows, removed and returned; the rows of groups with no live
    /// holder and no live writer marker, removed.
    pub(super) async fn reap(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut reaped: Vec<Row> = sqlx::query_as(&self.sql.reap)
                .bind(prefix)
                .fetch_all(&mut *tx)
                .await?;
            let members: Vec<Row> = sqlx::query_as(&self.sql.reap_members)
                .bind(prefix)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(&self.sql.reap_groups)
                .bind(prefix)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            reaped.extend(members);
            Ok::<_, sqlx::Error>(reaped)
        };
        let reaped = run.await.map_err(|e| self.error(e))?;
        Ok(reaped.into_iter().map(rows::lock_info).collect())
    }
}
