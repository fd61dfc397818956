//! Creating and checking the MySQL/MariaDB lock table and its per-key fence table.
//!
//! Creation is race-free: it runs on one connection holding `GET_LOCK` on a name derived
//! from the database and table, looks again under the lock, and uses
//! `CREATE TABLE IF NOT EXISTS` (an "already exists" error is tolerated all the same).
//! A table that is already complete needs no lock and no DDL privilege.

use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlPool};

use super::{my_error, Names};
use crate::store::StoreError;
use crate::stores::sql_common as common;

/// Columns the lock layer cannot work without (Verrou's three).
const REQUIRED: &[&str] = &["key", "owner", "expiration"];

/// Why the table could not be made ready.
#[derive(Debug)]
pub(super) enum SchemaError {
    /// The database failed.
    Store(StoreError),
    /// The table exists but is not usable.
    Rejected(String),
}

async fn columns(
    conn: &mut PoolConnection<MySql>,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(&mut **conn)
    .await
}

fn check(names: &Names, cols: &[(String, String)]) -> Result<(), SchemaError> {
    for want in REQUIRED {
        match cols.iter().find(|(c, _)| c.eq_ignore_ascii_case(want)) {
            None => {
                return Err(SchemaError::Rejected(format!(
                    "table {} exists but has no column `{want}`; it needs `key` varchar(255) primary key, `owner` varchar(255) not null, `expiration` bigint null (epoch ms) — use another table with ?table=NAME",
                    names.display
                )))
            }
            Some((_, ty)) if *want == "expiration" && !ty.to_ascii_lowercase().contains("int") && ty != "decimal" => {
                return Err(SchemaError::Rejected(format!(
                    "column `expiration` of table {} has type {ty}; it must be bigint (epoch milliseconds)",
                    names.display
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn has(cols: &[(String, String)], name: &str) -> bool {
    cols.iter().any(|(c, _)| c.eq_ignore_ascii_case(name))
}

/// Makes sure both tables exist with the columns we need.
pub(super) async fn ensure(pool: &MySqlPool, names: &Names) -> Result<(), SchemaError> {
    let what = format!("preparing table {}", names.display);
    let fail = |e: sqlx::Error| SchemaError::Store(my_error(e, &what));
    let mut conn = pool.acquire().await.map_err(fail)?;
    let cols = columns(&mut conn, &names.table).await.map_err(fail)?;
    if !cols.is_empty() {
        check(names, &cols)?;
        let fences: Vec<(String, String)> =
            columns(&mut conn, &names.fences).await.map_err(fail)?;
        if has(&cols, "fence") && has(&cols, "metadata") && has(&fences, "fence") {
            return Ok(());
        }
    }
    let lock = format!("cadenas:{:016x}", common::fnv1a(&names.display));
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
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
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
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
    super::error_number(e).is_some_and(|n| n == 1050 || n == 1060)
}

async fn run(conn: &mut PoolConnection<MySql>, sql: &str, what: &str) -> Result<(), SchemaError> {
    match sqlx::query(sql).execute(&mut **conn).await {
        Ok(_) => Ok(()),
        Err(e) if tolerated(&e) => Ok(()),
        Err(e) => Err(SchemaError::Store(my_error(e, what))),
    }
}

async fn create(conn: &mut PoolConnection<MySql>, names: &Names) -> Result<(), SchemaError> {
    let what = format!("creating table {}", names.display);
    // A binary, no-pad collation: keys compare byte for byte ('a' ≠ 'A' ≠ 'a ').
    let bin: Option<String> = sqlx::query_scalar(
        "SELECT CAST(COLLATION_NAME AS CHAR) FROM information_schema.COLLATIONS \
         WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin') ORDER BY COLLATION_NAME LIMIT 1",
    )
    .fetch_optional(&mut **conn)
    .await
    .map_err(|e| SchemaError::Store(my_error(e, &what)))?;
    let bin = bin.unwrap_or_else(|| "utf8mb4_bin".to_owned());
    let text = format!("CHARACTER SET utf8mb4 COLLATE {bin}");
    let cols = columns(conn, &names.table)
        .await
        .map_err(|e| SchemaError::Store(my_error(e, &what)))?;
    if cols.is_empty() {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             `key` varchar(255) {text} NOT NULL PRIMARY KEY, \
             `owner` varchar(255) {text} NOT NULL, \
             `expiration` bigint NULL, \
             `fence` bigint NULL, \
             `metadata` mediumtext {text} NULL) ENGINE=InnoDB",
            names.quoted
        );
        run(conn, &sql, &what).await?;
    } else {
        check(names, &cols)?;
        if !has(&cols, "fence") {
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN `fence` bigint NULL",
                names.quoted
            );
            run(conn, &sql, &what).await?;
        }
        if !has(&cols, "metadata") {
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN `metadata` mediumtext {text} NULL",
                names.quoted
            );
            run(conn, &sql, &what).await?;
        }
    }
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `key` varchar(255) {text} NOT NULL PRIMARY KEY, \
         `fence` bigint NOT NULL) ENGINE=InnoDB",
        names.fences_quoted
    );
    run(conn, &sql, &what).await
}
