//! Creating and checking the MySQL/MariaDB lock table, its per-key fence table and its
//! holders table (keys held by readers or permits).
//!
//! Creation is race-free: it runs on one connection holding `GET_LOCK` on a name derived
//! from the database and table, looks again under the lock, and uses
//! `CREATE TABLE IF NOT EXISTS` (an "already exists" error is tolerated all the same).
//! A table that is already complete needs no lock and no DDL privilege.

use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlPool};

use super::errors::{error_number, my_error};
use super::statements::{self as sql, Names};
use crate::store::StoreError;
use crate::stores::sql::errors::SchemaError;
use crate::stores::sql::schema::{check_columns, has, missing, Column};

/// The nullable columns of ours in the lock table, added to a table that lacks them (one
/// Verrou or an earlier cadenas created); their types are in `create`.
const OURS: [&str; 7] = [
    "fence",
    "metadata",
    "waiters",
    "kind",
    "permits",
    "waiter",
    "waiter_expiration",
];

/// The types an `expiration` column may have: integers (Verrou's is unsigned) in epoch
/// milliseconds.
fn expiration_ok(ty: &str) -> bool {
    ty.to_ascii_lowercase().contains("int") || ty == "decimal"
}

/// The columns of `table`, names in lower case (MySQL ignores their case).
async fn columns(
    conn: &mut PoolConnection<MySql>,
    table: &str,
) -> Result<Vec<Column>, sqlx::Error> {
    let found: Vec<Column> = sqlx::query_as(sql::COLUMNS)
        .bind(table)
        .fetch_all(&mut **conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|(c, ty)| (c.to_ascii_lowercase(), ty))
        .collect())
}

/// Makes sure both tables exist with the columns we need.
pub(super) async fn ensure(pool: &MySqlPool, names: &Names) -> Result<(), SchemaError> {
    let what = format!("preparing table {}", names.display);
    let fail = |e: sqlx::Error| SchemaError::Store(my_error(e, &what));
    let mut conn = pool.acquire().await.map_err(fail)?;
    let cols = columns(&mut conn, &names.table).await.map_err(fail)?;
    if !cols.is_empty() {
        check_columns(&names.display, &cols, '`', expiration_ok)?;
        let fences = columns(&mut conn, &names.fences).await.map_err(fail)?;
        let holders = columns(&mut conn, &names.holders).await.map_err(fail)?;
        let complete =
            OURS.iter().all(|c| has(&cols, c)) && has(&fences, "fence") && has(&holders, "owner");
        if complete {
            return Ok(());
        }
    }
    let lock = names.setup_lock();
    let got: Option<i64> = sqlx::query_scalar(sql::SETUP_LOCK)
        .bind(&lock)
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    if got != Some(1) {
        return Err(SchemaError::Rejected(format!(
            "timed out waiting for another process creating table {}",
            names.display
        )));
    }
    let result = create(&mut conn, names).await;
    let _ = sqlx::query(sql::SETUP_UNLOCK)
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    result.map_err(|e| match e {
        SchemaError::Store(s) => SchemaError::Store(StoreError {
            message: format!(
                "{} (creating it needs the CREATE and ALTER privileges; or create it yourself, see the docs)",
                s.message
            ),
            ..s
        }),
        other => other,
    })
}

/// Tolerates "table exists" (1050) and "duplicate column" (1060) from a concurrent creator.
fn tolerated(e: &sqlx::Error) -> bool {
    error_number(e).is_some_and(|n| n == 1050 || n == 1060)
}

async fn run(conn: &mut PoolConnection<MySql>, ddl: &str, what: &str) -> Result<(), SchemaError> {
    match sqlx::query(ddl).execute(&mut **conn).await {
        Ok(_) => Ok(()),
        Err(e) if tolerated(&e) => Ok(()),
        Err(e) => Err(SchemaError::Store(my_error(e, what))),
    }
}

async fn create(conn: &mut PoolConnection<MySql>, names: &Names) -> Result<(), SchemaError> {
    let what = format!("creating table {}", names.display);
    let fail = |e: sqlx::Error| SchemaError::Store(my_error(e, &what));
    let bin: Option<String> = sqlx::query_scalar(sql::BINARY_COLLATION)
        .fetch_optional(&mut **conn)
        .await
        .map_err(fail)?;
    let bin = bin.unwrap_or_else(|| "utf8mb4_bin".to_owned());
    let text = format!("CHARACTER SET utf8mb4 COLLATE {bin}");
    // Under the lock: look again, another process may have done it meanwhile.
    let cols = columns(conn, &names.table).await.map_err(fail)?;
    if cols.is_empty() {
        run(conn, &sql::create_table(names, &text), &what).await?;
    } else {
        check_columns(&names.display, &cols, '`', expiration_ok)?;
        let (metadata, waiters) = (format!("mediumtext {text}"), format!("text {text}"));
        let (kind, waiter) = (
            format!("varchar(16) {text}"),
            format!("varchar(255) {text}"),
        );
        let types = [
            "bigint", &metadata, &waiters, &kind, "int", &waiter, "bigint",
        ];
        let ours: Vec<(&str, &str)> = OURS.iter().copied().zip(types).collect();
        for (column, ty) in missing(&cols, &ours) {
            run(conn, &sql::add_column(names, column, ty), &what).await?;
        }
    }
    run(conn, &sql::create_fences(names, &text), &what).await?;
    run(conn, &sql::create_holders(names, &text), &what).await
}
