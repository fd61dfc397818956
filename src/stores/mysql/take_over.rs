//! The MySQL / MariaDB store's take-over: one transaction.

use super::lease::Leases;
use crate::store::{AcquireRequest, Displaced, Lease, StoreError, TakeOver};
use crate::stores::sql::group::GROUP_OWNER;
use crate::stores::sql::rows;

impl Leases {
    /// One transaction: draw the next fence of the key (row-locking its counter, so
    /// acquires and take-overs of the key are serialized and fences follow commit order),
    /// read the live holder (a group's first, whose holders go), overwrite the row.
    /// Deadlocks are retried as in acquire.
    pub(super) async fn take_over(&self, r: &AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        self.retrying_deadlocks("taking over", r.key, || self.take_over_once(r))
            .await
    }

    async fn take_over_once(&self, r: &AcquireRequest<'_>) -> Result<TakeOver, sqlx::Error> {
        let mut tx = self.table().pool.begin_with(self.sql.begin).await?;
        let fence = sqlx::query(&self.sql.draw_fence)
            .bind(r.key)
            .execute(&mut *tx)
            .await?
            .last_insert_id();
        let mut old: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&self.sql.displaced)
            .bind(r.key)
            .fetch_optional(&mut *tx)
            .await?;
        if matches!(&old, Some((Some(owner), _)) if owner == GROUP_OWNER) {
            // A group's row: the displaced holder is its first.
            let member: Option<(Option<String>, Option<i64>)> =
                sqlx::query_as(&self.sql.group.displaced_member)
                    .bind(r.key)
                    .fetch_optional(&mut *tx)
                    .await?;
            old = member;
        }
        // The holders of a group (live, or left over) go with the take-over.
        sqlx::query(&self.sql.group.drop_members)
            .bind(r.key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&self.sql.take_over)
            .bind(r.key)
            .bind(r.owner)
            .bind(rows::ttl_ms(r.ttl))
            .bind(fence)
            .bind(r.metadata)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.wakeups.taken(r.key);
        Ok(TakeOver {
            lease: Lease {
                fence: Some(fence),
                ttl: r.ttl,
            },
            displaced: old.map(|(owner, fence)| Displaced {
                owner: owner.unwrap_or_default(),
                fence: rows::fence(fence),
            }),
        })
    }
}
