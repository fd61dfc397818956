//! Creating and checking the PostgreSQL lock table, its holders table (keys held by readers
//! or permits) and its fence sequence.
//!
//! Creation is race-free: the checks and `CREATE`s run in one transaction holding
//! `pg_advisory_xact_lock(hashtext(table))` (the same lock Verrou's Knex adapter takes
//! around its own creation), because two concurrent `CREATE TABLE IF NOT EXISTS` can still
//! fail with a unique violation on `pg_type`. A table that is already complete needs no lock
//! and no DDL privilege.

use sqlx::{PgExecutor, PgPool};

use super::errors::pg_error;
use super::statements::{self as sql, Names};
use crate::stores::sql::errors::SchemaError;
use crate::stores::sql::schema::{check_columns, missing, Column};

/// Nullable columns of ours, added to a table that lacks them (e.g. one Verrou created).
const OURS: &[(&str, &str)] = &[
    ("fence", "bigint"),
    ("metadata", "text"),
    ("waiting", "boolean"),
    ("kind", "text"),
    ("permits", "integer"),
    ("waiter", "varchar(255)"),
    ("waiter_expiration", "bigint"),
];

/// The types an `expiration` column may have: integers in epoch milliseconds.
fn expiration_ok(ty: &str) -> bool {
    matches!(ty, "bigint" | "integer" | "numeric")
}

async fn columns(e: impl PgExecutor<'_>, names: &Names) -> Result<Vec<Column>, sqlx::Error> {
    sqlx::query_as(sql::COLUMNS)
        .bind(&names.schema)
        .bind(&names.table)
        .fetch_all(e)
        .await
}

/// Makes sure the table and sequence exist with the columns we need.
pub(super) async fn ensure(
    pool: &PgPool,
    names: &Names,
    unlogged: bool,
) -> Result<(), SchemaError> {
    let found = columns(pool, names).await.map_err(|e| {
        SchemaError::Store(pg_error(
            e,
            &format!("reading the columns of table {}", names.display),
        ))
    })?;
    let sequence: bool = sqlx::query_scalar(sql::SEQUENCE_EXISTS)
        .bind(&names.sequence_qualified)
        .fetch_one(pool)
        .await
        .map_err(|e| {
            SchemaError::Store(pg_error(
                e,
                &format!("looking for sequence {}", names.sequence),
            ))
        })?;
    let holders: bool = sqlx::query_scalar(sql::SEQUENCE_EXISTS)
        .bind(&names.holders)
        .fetch_one(pool)
        .await
        .map_err(|e| {
            SchemaError::Store(pg_error(e, &format!("looking for table {}", names.holders)))
        })?;
    if !found.is_empty() {
        check_columns(&names.display, &found, '"', expiration_ok)?;
        if missing(&found, OURS).is_empty() && sequence && holders {
            return Ok(());
        }
    }
    create(pool, names, unlogged).await
}

async fn create(pool: &PgPool, names: &Names, unlogged: bool) -> Result<(), SchemaError> {
    let fail = |e: sqlx::Error| {
        SchemaError::Store(pg_error(
            e,
            &format!("creating table {} (needs CREATE privilege on the schema; or create it yourself, see the docs)", names.display),
        ))
    };
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query(sql::SETUP_LOCK)
        .bind(&names.table)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    // Under the lock: look again, another process may have done it meanwhile.
    let found = columns(&mut *tx, names).await.map_err(fail)?;
    if found.is_empty() {
        let ddl = sql::create_table(names, unlogged);
        sqlx::query(&ddl).execute(&mut *tx).await.map_err(fail)?;
    } else {
        check_columns(&names.display, &found, '"', expiration_ok)?;
        for (column, ty) in missing(&found, OURS) {
            let ddl = sql::add_column(names, column, ty);
            sqlx::query(&ddl).execute(&mut *tx).await.map_err(fail)?;
        }
    }
    let ddl = sql::create_holders(names, unlogged);
    sqlx::query(&ddl).execute(&mut *tx).await.map_err(fail)?;
    // The sequence stays logged even for an UNLOGGED table: after a crash the table is
    // emptied but fences keep growing.
    let ddl = sql::create_sequence(names);
    sqlx::query(&ddl).execute(&mut *tx).await.map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(())
}

/// Session mode's only object: the fence sequence, created under the setup lock if missing.
pub(super) async fn ensure_sequence(pool: &PgPool, names: &Names) -> Result<(), SchemaError> {
    let fail = |e: sqlx::Error| {
        SchemaError::Store(pg_error(
            e,
            &format!(
                "creating the fence sequence {} (needs CREATE privilege on the schema, once)",
                names.sequence
            ),
        ))
    };
    let exists: bool = sqlx::query_scalar(sql::SEQUENCE_EXISTS)
        .bind(&names.sequence_qualified)
        .fetch_one(pool)
        .await
        .map_err(fail)?;
    if exists {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query(sql::SETUP_LOCK)
        .bind(&names.table)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    sqlx::query(&sql::create_sequence(names))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(())
}
