//! The SQLite store's take-over: one `BEGIN IMMEDIATE` transaction.

use sqlx::Row;

use super::{ttl_millis, Inner};
use crate::store::{AcquireRequest, Displaced, Lease, StoreError, TakeOver};
use crate::stores::sql::group::GROUP_OWNER;
use crate::stores::sql::rows;

impl Inner {
    /// Reads the live holder (a group's first holder), removes a group's holders and
    /// overwrites the row in one `BEGIN IMMEDIATE` transaction:
    /// SQLite runs one writer at a time, so nothing changes the row between the two
    /// statements. The fence comes from the acquire's sequence. An expired row is simply
    /// overwritten, as an acquire would.
    pub(super) async fn take_over(
        &self,
        r: &AcquireRequest<'_>,
    ) -> std::result::Result<TakeOver, StoreError> {
        let run = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut old = sqlx::query(&self.sql.displaced)
                .bind(r.key)
                .fetch_optional(&mut *tx)
                .await?;
            let grouped = match &old {
                Some(row) => row.try_get::<String, _>("owner")? == GROUP_OWNER,
                None => false,
            };
            if grouped {
                // A group's row: the displaced holder is its first.
                old = sqlx::query(&self.sql.displaced_member)
                    .bind(r.key)
                    .fetch_optional(&mut *tx)
                    .await?;
            }
            sqlx::query(&self.sql.drop_members)
                .bind(r.key)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(&self.sql.take_over)
                .bind(r.key)
                .bind(r.owner)
                .bind(ttl_millis(r.ttl))
                .bind(r.metadata)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            let displaced = match old {
                Some(old) => Some(Displaced {
                    owner: old.try_get("owner")?,
                    fence: rows::fence(old.try_get("fence")?),
                }),
                None => None,
            };
            let lease = Lease {
                fence: rows::fence(row.try_get("fence")?),
                ttl: r.ttl,
            };
            Ok::<_, sqlx::Error>(TakeOver { lease, displaced })
        };
        run.await.map_err(|e| self.error(e))
    }
}
