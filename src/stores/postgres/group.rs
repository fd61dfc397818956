//! Keys held by readers or permits in the PostgreSQL store (lease mode): each operation one
//! transaction, which first takes the acquire's per-key advisory lock where it changes the
//! key's row, so that it and every acquire of the key take turns (and its later statements'
//! snapshots see what they committed). The layout is the SQL stores'
//! (`crate::stores::sql::group`).

use std::time::Duration;

use sqlx::{PgConnection, Postgres, Transaction};

use super::lease::Leases;
use super::statements::BEGIN;
use crate::store::{Acquire, AcquireRequest, Holder, Lease, LockInfo, StoreError};
use crate::stores::sql::group::{self, Step};
use crate::stores::sql::like_prefix;
use crate::stores::sql::rows::{self, Row};

/// The key's row as a join reads it (`GroupSql::state`): the SQL stores' state row, then
/// the row's `waiting` flag, how many holders live and how many of them are the request's
/// owner.
type State = (
    String,
    bool,
    Option<String>,
    Option<i64>,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    i64,
    i64,
);

impl Leases {
    async fn begin_gated(&self, key: &str) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = self.table().pool.begin_with(BEGIN).await?;
        sqlx::query(&self.sql.take_over_gate)
            .bind(key)
            .bind(&self.names.display)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Takes a reader's or a permit's place in the key's group, in one transaction.
    pub(super) async fn join(&self, r: &AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let err = |e| self.table().err(e, "acquiring", r.key);
        let mut tx = self.begin_gated(r.key).await.map_err(err)?;
        let answer = self.join_in(&mut tx, r).await;
        // Committed whatever the answer: a refusal may have pruned holders or set `waiting`.
        tx.commit().await.map_err(err)?;
        answer
    }

    async fn join_in(
        &self,
        tx: &mut PgConnection,
        r: &AcquireRequest<'_>,
    ) -> Result<Acquire, StoreError> {
        let g = &self.sql.group;
        let err = |e| self.table().err(e, "acquiring", r.key);
        let ttl = rows::ttl_ms(r.ttl);
        let read: Option<State> = sqlx::query_as(&g.state)
            .bind(r.key)
            .bind(r.owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
        let (state, waiting, count, mine) = match read {
            Some((o, l, k, p, m, w, wm, rm, waiting, count, mine)) => (
                Some((o, l, k, p, m, w, wm, rm)),
                waiting.unwrap_or(false),
                count,
                mine,
            ),
            None => (None, false, 0, 0),
        };
        // The holders already in the group this request joins (`None`: it opens one).
        let joining = match group::first_step(state, r.kind) {
            Step::Held(holder) => {
                sqlx::query(&g.flag_waiting)
                    .bind(r.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                return Ok(Acquire::Held(holder));
            }
            Step::Join(theirs) => {
                if !group::gets_in(theirs, r.kind, count, mine)? {
                    let first = sqlx::query_as(&g.refuse)
                        .bind(r.key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                    return Ok(Acquire::Held(rows::holder(first)));
                }
                Some(count)
            }
            Step::Open => {
                // A free key, or one whose lease ran out: a new group, without the holders
                // of an earlier one (expired, or orphaned by a foreign delete of the row).
                let (kind, permits) = group::columns(r.kind);
                sqlx::query(&g.open)
                    .bind(r.key)
                    .bind(ttl)
                    .bind(kind)
                    .bind(permits.map(|n| n as i32))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                None
            }
        };
        let fence: Option<i64> = sqlx::query_scalar(&g.join)
            .bind(r.key)
            .bind(r.owner)
            .bind(ttl)
            .bind(r.metadata)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        if waiting && group::room_left(r.kind, joining) {
            // Someone waits and there is room for them: a release woke only one waiter.
            self.notify(tx, r.key).await.map_err(err)?;
        }
        Ok(Acquire::Acquired(Lease {
            fence: rows::fence(fence),
            ttl: r.ttl,
        }))
    }

    async fn notify(&self, tx: &mut PgConnection, key: &str) -> sqlx::Result<()> {
        sqlx::query(&self.sql.group.notify)
            .bind(self.channel())
            .bind(key)
            .execute(tx)
            .await
            .map(drop)
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
        let row: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as(&self.sql.group.mark_writer)
                .bind(key)
                .bind(owner)
                .bind(rows::ttl_ms(Some(lease)))
                .fetch_optional(&self.table().pool)
                .await
                .map_err(|e| self.table().err(e, "acquiring", key))?;
        match row {
            Some((owner, ms)) => Ok(Some(self.held_by(key, owner, ms).await?)),
            None => Ok(None),
        }
    }

    /// Releases `owner`'s place in `key`'s group in one transaction (the group's row goes
    /// with its last live holder unless a waiting writer's marker lives; else its expiration
    /// follows its latest holder's), notifying waiters. Whether a live place was released.
    pub(super) async fn leave(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let g = &self.sql.group;
        let run = async {
            let mut tx = self.begin_gated(key).await?;
            let left: Option<(bool, Option<bool>)> = sqlx::query_as(&g.leave)
                .bind(key)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((_, waiting)) = left {
                self.settle(&mut tx, key).await?;
                if waiting == Some(true) {
                    self.notify(&mut tx, key).await?;
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(matches!(left, Some((true, _))))
        };
        run.await.map_err(|e| self.table().err(e, "releasing", key))
    }

    async fn settle(&self, tx: &mut PgConnection, key: &str) -> sqlx::Result<()> {
        let g = &self.sql.group;
        sqlx::query(&g.close).bind(key).execute(&mut *tx).await?;
        sqlx::query(&g.refresh).bind(key).execute(&mut *tx).await?;
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
        let run = async {
            let mut tx = self.begin_gated(key).await?;
            let fence: Option<Option<i64>> = sqlx::query_scalar(&self.sql.group.extend)
                .bind(key)
                .bind(owner)
                .bind(rows::ttl_ms(ttl))
                .fetch_optional(&mut *tx)
                .await?;
            if fence.is_some() {
                self.settle(&mut tx, key).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(fence)
        };
        let fence = run
            .await
            .map_err(|e| self.table().err(e, "extending", key))?;
        Ok(fence.map(|f| Lease {
            fence: rows::fence(f),
            ttl,
        }))
    }

    /// Sets `owner`'s metadata in `key`'s group: one statement.
    pub(super) async fn set_metadata_in_group(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.group.set_metadata)
            .bind(metadata)
            .bind(key)
            .bind(owner)
            .execute(&self.table().pool)
            .await
            .map_err(|e| self.table().err(e, "setting metadata of", key))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes the key's row (notifying its waiters) and every holder of its group, in one
    /// transaction. Whether something live was removed.
    pub(super) async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let run = async {
            let mut tx = self.begin_gated(key).await?;
            let row: Option<(bool, Option<String>)> = sqlx::query_as(&self.sql.force_release)
                .bind(key)
                .bind(self.channel())
                .fetch_optional(&mut *tx)
                .await?;
            let members: Vec<bool> = sqlx::query_scalar(&self.sql.group.drop_members)
                .bind(key)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(matches!(row, Some((true, _))) || members.contains(&true))
        };
        run.await
            .map_err(|e| self.table().err(e, "force-releasing", key))
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

    /// The expiry watcher's sweep under `prefix`, in one transaction: expired plain rows and
    /// group holders, removed and returned (a concurrent sweep waits for ours and finds them
    /// gone); rows of groups with no live holder and no live writer marker, removed.
    pub(super) async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let pattern = like_prefix(prefix, '!');
        let run = async {
            let mut tx = self.table().pool.begin_with(BEGIN).await?;
            let mut reaped: Vec<Row> = sqlx::query_as(&self.sql.reap)
                .bind(&pattern)
                .fetch_all(&mut *tx)
                .await?;
            let members: Vec<Row> = sqlx::query_as(&self.sql.group.reap_members)
                .bind(&pattern)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(&self.sql.group.reap_groups)
                .bind(&pattern)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            reaped.extend(members);
            Ok::<_, sqlx::Error>(reaped)
        };
        let reaped = run
            .await
            .map_err(|e| self.table().err(e, "reaping expired locks under", prefix))?;
        let mut infos: Vec<LockInfo> = reaped.into_iter().map(rows::lock_info).collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key).then(a.fence.cmp(&b.fence)));
        Ok(infos)
    }
}
