//! Creating and checking the SQLite lock table, its holders table (keys held by readers or
//! permits), its fence sequence and triggers.
//!
//! Everything runs in one `BEGIN IMMEDIATE` transaction, so two processes starting at once
//! take turns (the busy timeout makes the second wait) and the second finds the work done.

use sqlx::SqlitePool;

use super::statements as sql;
use crate::store::StoreError;
use crate::stores::sql::errors::SchemaError;
use crate::stores::sql::schema::{check_columns, missing, Column};

/// Nullable columns of ours, added to a table that lacks them (e.g. one Verrou created).
const OURS: &[(&str, &str)] = &[
    ("fence", "INTEGER"),
    ("metadata", "TEXT"),
    ("kind", "TEXT"),
    ("permits", "INTEGER"),
    ("waiter", "TEXT"),
    ("waiter_expiration", "INTEGER"),
];

/// Creates the table, the fence sequence and the triggers if missing, adds our nullable
/// columns to a Verrou table, and checks the columns. Driver errors are mapped with `map`.
pub(super) async fn ensure(
    pool: &SqlitePool,
    table: &str,
    map: impl Fn(sqlx::Error) -> StoreError,
) -> Result<(), SchemaError> {
    let fail = |e: sqlx::Error| SchemaError::Store(map(e));
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
    sqlx::query(&sql::create_table(table))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    let found: Vec<(String, String, i64)> = sqlx::query_as(sql::TABLE_INFO)
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
    // SQLite ignores the case of column names.
    let columns: Vec<Column> = found
        .iter()
        .map(|(name, ty, _)| (name.to_ascii_lowercase(), ty.clone()))
        .collect();
    // Any type will do: SQLite stores what it is given.
    check_columns(table, &columns, '\'', |_| true)?;
    let primary: Vec<String> = found
        .iter()
        .filter(|(_, _, pk)| *pk > 0)
        .map(|(name, _, _)| name.to_ascii_lowercase())
        .collect();
    if primary != ["key"] {
        return Err(SchemaError::Rejected(format!(
            "table '{table}' does not have 'key' as its primary key; it is not a \
             lock table: pick another table with ?table=NAME, or drop it"
        )));
    }
    // A Verrou table: our columns are nullable, so Verrou keeps working.
    for (column, ty) in missing(&columns, OURS) {
        sqlx::query(&sql::add_column(table, column, ty))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
    }
    sqlx::query(&sql::create_holders(table))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    for statement in sql::fencing(table) {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(())
}
