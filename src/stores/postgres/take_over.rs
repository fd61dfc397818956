//! The PostgreSQL store's take-over: one transaction.

use super::lease::Leases;
use super::statements::BEGIN;
use crate::store::{AcquireRequest, Displaced, Lease, StoreError, TakeOver};
use crate::stores::sql::group::GROUP_OWNER;
use crate::stores::sql::rows;

impl Leases {
    /// Takes the acquire's per-key advisory lock, then (in statements whose snapshots
    /// follow it) removes a group's holders, reads the live holder (a group's first) and
    /// overwrites the row with a fence from the
    /// table's sequence; commits. Two statements rather than one: a single statement's
    /// snapshot is taken before it waits for the advisory lock, so it could miss the holding
    /// that the take-over or acquire it waited for has just committed.
    pub(super) async fn take_over(&self, r: &AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        let run = async {
            let mut tx = self.table().pool.begin_with(BEGIN).await?;
            sqlx::query(&self.sql.take_over_gate)
                .bind(r.key)
                .bind(&self.names.display)
                .execute(&mut *tx)
                .await?;
            // A group's row: the displaced holder is its first; its holders go.
            let member: Option<(String, Option<i64>)> =
                sqlx::query_as(&self.sql.group.displaced_member)
                    .bind(r.key)
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(&self.sql.group.drop_members)
                .bind(r.key)
                .execute(&mut *tx)
                .await?;
            let (fence, mut owner, mut old_fence): (Option<i64>, Option<String>, Option<i64>) =
                sqlx::query_as(&self.sql.take_over)
                    .bind(r.key)
                    .bind(r.owner)
                    .bind(rows::ttl_ms(r.ttl))
                    .bind(r.metadata)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.commit().await?;
            if owner.as_deref() == Some(GROUP_OWNER) {
                (owner, old_fence) = member.map_or((None, None), |(o, f)| (Some(o), f));
            }
            Ok::<_, sqlx::Error>(TakeOver {
                lease: Lease {
                    fence: rows::fence(fence),
                    ttl: r.ttl,
                },
                displaced: owner.map(|owner| Displaced {
                    owner,
                    fence: rows::fence(old_fence),
                }),
            })
        };
        run.await
            .map_err(|e| self.table().err(e, "taking over", r.key))
    }
}
