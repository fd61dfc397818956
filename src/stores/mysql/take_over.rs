//! The MySQL / MariaDB store's take-over: one transaction, its statements built here.

use std::time::Duration;

use super::{error_number, MySqlStore, Names, DEADLOCK_RETRIES, NOW_MS};
use crate::store::{AcquireRequest, Displaced, Lease, StoreError, TakeOver};
use crate::stores::sql_common as common;

/// The statements of a take-over (after the acquire's fence draw, which also row-locks the
/// key's counter until commit).
#[derive(Debug)]
pub(super) struct TakeOverSql {
    /// The live holder, row-locked so that a release or extend waits for our commit.
    displaced: String,
    /// Insert, or overwrite the row whatever its state.
    take: String,
}

impl TakeOverSql {
    pub(super) fn new(n: &Names) -> TakeOverSql {
        let t = &n.quoted;
        TakeOverSql {
            displaced: format!(
                "SELECT CAST(owner AS CHAR), fence FROM {t} \
                 WHERE `key` = ? AND (expiration IS NULL OR expiration > {NOW_MS}) FOR UPDATE"
            ),
            // key, owner, ttl ms, fence, metadata; expiration assigned last, as in acquire.
            take: format!(
                "INSERT INTO {t} (`key`, owner, expiration, fence, metadata) \
                 VALUES (?, ?, {NOW_MS} + ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE owner = VALUES(owner), metadata = VALUES(metadata), \
                 fence = VALUES(fence), expiration = VALUES(expiration)"
            ),
        }
    }
}

impl MySqlStore {
    /// One transaction: draw the next fence of the key (row-locking its counter, so
    /// acquires and take-overs of the key are serialized and fences follow commit order),
    /// read the live holder, overwrite the row. Deadlocks are retried as in acquire.
    pub(super) async fn take_over_retrying(
        &self,
        r: &AcquireRequest<'_>,
    ) -> Result<TakeOver, StoreError> {
        let sql = TakeOverSql::new(&self.names);
        let mut attempt = 0;
        loop {
            match self.take_over_once(&sql, r).await {
                Ok(t) => return Ok(t),
                Err(e) if error_number(&e) == Some(1213) && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    let pause = rand::random_range(1..=5u64 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(self.err(e, "taking over", r.key)),
            }
        }
    }

    async fn take_over_once(
        &self,
        sql: &TakeOverSql,
        r: &AcquireRequest<'_>,
    ) -> Result<TakeOver, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let fence = sqlx::query(&self.sql.draw_fence)
            .bind(r.key)
            .execute(&mut *tx)
            .await?
            .last_insert_id();
        let old: Option<(Option<String>, Option<i64>)> = sqlx::query_as(&sql.displaced)
            .bind(r.key)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(&sql.take)
            .bind(r.key)
            .bind(r.owner)
            .bind(common::ttl_ms(r.ttl))
            .bind(fence)
            .bind(r.metadata)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(TakeOver {
            lease: Lease {
                fence: Some(fence),
                ttl: r.ttl,
            },
            displaced: old.map(|(owner, fence)| Displaced {
                owner: owner.unwrap_or_default(),
                fence: common::fence(fence),
            }),
        })
    }
}
