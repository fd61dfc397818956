//! Creating and checking the PostgreSQL lock table and its fence sequence.
//!
//! Creation is race-free: the checks and `CREATE`s run in one transaction holding
//! `pg_advisory_xact_lock(hashtext(table))` (the same lock Verrou's Knex adapter takes
//! around its own creation), because two concurrent `CREATE TABLE IF NOT EXISTS` can still
//! fail with a unique violation on `pg_type`. A table that is already complete needs no lock
//! and no DDL privilege.

use sqlx::PgPool;

use super::{pg_error, Names};
use crate::store::StoreError;

/// Columns the lock layer cannot work without (Verrou's three).
const REQUIRED: &[&str] = &["key", "owner", "expiration"];
/// Nullable columns of ours, added to a table that lacks them (e.g. one Verrou created).
const OURS: &[(&str, &str)] = &[
    ("fence", "bigint"),
    ("metadata", "text"),
    ("waiting", "boolean"),
];

/// What the catalog says about the table.
struct Found {
    /// `(column, data type)` pairs; empty when the table does not exist.
    columns: Vec<(String, String)>,
    /// Whether the fence sequence exists.
    sequence: bool,
}

async fn look(pool: &PgPool, names: &Names) -> Result<Found, StoreError> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&names.schema)
    .bind(&names.table)
    .fetch_all(pool)
    .await
    .map_err(|e| {
        pg_error(
            e,
            &format!("reading the columns of table {}", names.display),
        )
    })?;
    let sequence: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&names.sequence_regclass)
        .fetch_one(pool)
        .await
        .map_err(|e| pg_error(e, &format!("looking for sequence {}", names.sequence)))?;
    Ok(Found { columns, sequence })
}

/// Checks that the required columns exist with usable types; `Err(message)` names the
/// first problem.
fn check_columns(names: &Names, columns: &[(String, String)]) -> Result<(), String> {
    for want in REQUIRED {
        match columns.iter().find(|(c, _)| c == want) {
            None => {
                return Err(format!(
                    "table {} exists but has no column \"{want}\"; it needs \"key\" varchar(255) primary key, \"owner\" varchar(255) not null, \"expiration\" bigint null (epoch ms) — use another table with ?table=NAME",
                    names.display
                ))
            }
            Some((_, ty)) if *want == "expiration" && !matches!(ty.as_str(), "bigint" | "integer" | "numeric") => {
                return Err(format!(
                    "column \"expiration\" of table {} has type {ty}; it must be bigint (epoch milliseconds)",
                    names.display
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Makes sure the table and sequence exist with the columns we need.
pub(super) async fn ensure(
    pool: &PgPool,
    names: &Names,
    unlogged: bool,
) -> Result<(), SchemaError> {
    let found = look(pool, names).await.map_err(SchemaError::Store)?;
    if !found.columns.is_empty() {
        check_columns(names, &found.columns).map_err(SchemaError::Rejected)?;
        let complete = OURS
            .iter()
            .all(|(c, _)| found.columns.iter().any(|(have, _)| have == c));
        if complete && found.sequence {
            return Ok(());
        }
    }
    create(pool, names, unlogged).await
}

/// Why the table could not be made ready.
#[derive(Debug)]
pub(super) enum SchemaError {
    /// The database failed.
    Store(StoreError),
    /// The table exists but is not usable.
    Rejected(String),
}

async fn create(pool: &PgPool, names: &Names, unlogged: bool) -> Result<(), SchemaError> {
    let fail = |e: sqlx::Error| {
        SchemaError::Store(pg_error(
            e,
            &format!("creating table {} (needs CREATE privilege on the schema; or create it yourself, see the docs)", names.display),
        ))
    };
    let mut tx = pool.begin().await.map_err(fail)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(&names.table)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    // Under the lock: look again, another process may have done it meanwhile.
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&names.schema)
    .bind(&names.table)
    .fetch_all(&mut *tx)
    .await
    .map_err(fail)?;
    if columns.is_empty() {
        let sql = format!(
            "CREATE {}TABLE IF NOT EXISTS {} (\
             \"key\" varchar(255) NOT NULL PRIMARY KEY, \
             \"owner\" varchar(255) NOT NULL, \
             \"expiration\" bigint NULL, \
             \"fence\" bigint NULL, \
             \"metadata\" text NULL, \
             \"waiting\" boolean NULL)",
            if unlogged { "UNLOGGED " } else { "" },
            names.qualified
        );
        sqlx::query(&sql).execute(&mut *tx).await.map_err(fail)?;
    } else {
        let have: Vec<(String, String)> =
            columns.into_iter().map(|(c,)| (c, String::new())).collect();
        if let Some(missing) = REQUIRED.iter().find(|c| !have.iter().any(|(h, _)| h == *c)) {
            return Err(SchemaError::Rejected(format!(
                "table {} exists but has no column \"{missing}\"",
                names.display
            )));
        }
        for (col, ty) in OURS {
            if !have.iter().any(|(h, _)| h == col) {
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS \"{col}\" {ty} NULL",
                    names.qualified
                );
                sqlx::query(&sql).execute(&mut *tx).await.map_err(fail)?;
            }
        }
    }
    // The sequence stays logged even for an UNLOGGED table: after a crash the table is
    // emptied but fences keep growing.
    let sql = format!("CREATE SEQUENCE IF NOT EXISTS {}", names.sequence_qualified);
    sqlx::query(&sql).execute(&mut *tx).await.map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(())
}
