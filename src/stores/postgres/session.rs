//! Session mode on PostgreSQL: session advisory locks (see the module docs, *Session mode*).

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;

use super::errors::pg_error;
use crate::store::StoreError;
use crate::stores::sql::session::Dialect;

/// The advisory-lock key of a stored key: PostgreSQL's own 64-bit text hash, so anyone can
/// compute it in SQL (`hashtextextended('app:key', 0)`).
const KEY: &str = "hashtextextended($1, 0)";

/// The key's gate: a second advisory lock (the same hash with seed 1) its holder also holds,
/// on which waiters wait. Waiters never queue on the lock itself, so a waiter that went away
/// can never be granted the lock, not even for an instant.
const GATE: &str = "hashtextextended($1, 1)";

/// The statements of session mode, built once from the fence sequence's name.
pub(super) struct PgSession {
    options: PgConnectOptions,
    try_lock: String,
}

impl PgSession {
    /// Session mode over connections made with `options`, fences from `sequence`
    /// (`"schema"."name"`).
    pub(super) fn new(options: PgConnectOptions, sequence: &str) -> PgSession {
        let literal = sequence.replace('\'', "''");
        PgSession {
            options,
            // CASE goes on only once the lock is ours: then the gate (held for an instant at
            // most by a waiter being woken; bounded by lock_timeout) and the fence, drawn while
            // the key is held, so every later holder's is greater.
            try_lock: format!(
                "SELECT CASE WHEN pg_try_advisory_lock({KEY}) THEN \
                 (SELECT nextval('{literal}') FROM (SELECT pg_advisory_lock({GATE})) g) END"
            ),
        }
    }
}

/// Without the connect options, which hold the password.
impl std::fmt::Debug for PgSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgSession")
    }
}

#[async_trait]
impl Dialect for PgSession {
    type Conn = PgConnection;
    const SESSION: &'static str = "backend";

    async fn connect(&self) -> Result<(PgConnection, u64), sqlx::Error> {
        let mut conn = self.options.connect().await?;
        // Bounds a wait; nothing else here ever waits for a lock.
        sqlx::query("SET lock_timeout = '1s'")
            .execute(&mut conn)
            .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        Ok((conn, pid as u64))
    }

    async fn try_lock(
        &self,
        conn: &mut PgConnection,
        key: &str,
    ) -> Result<Option<Option<u64>>, sqlx::Error> {
        let fence: Option<i64> = sqlx::query_scalar(&self.try_lock)
            .bind(key)
            .fetch_one(conn)
            .await?;
        Ok(fence.map(|f| u64::try_from(f).ok()))
    }

    async fn unlock(&self, conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
        // The key first: a waiter the gate wakes finds it free.
        sqlx::query(&format!(
            "SELECT pg_advisory_unlock({KEY}), pg_advisory_unlock({GATE})"
        ))
        .bind(key)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn wait(&self, conn: &mut PgConnection, key: &str) -> Result<bool, sqlx::Error> {
        // A shared lock on the gate conflicts with the holder's exclusive one only: it is
        // granted when the key is released, and given back in the same statement.
        let waited = sqlx::query_scalar::<_, bool>(&format!(
            "SELECT pg_advisory_unlock_shared(h) FROM \
             (SELECT h, pg_advisory_lock_shared(h) FROM (SELECT {GATE} AS h) k OFFSET 0) s"
        ))
        .bind(key)
        .fetch_one(&mut *conn)
        .await;
        match waited {
            Ok(true) => Ok(true),
            // Not given back by the statement (never seen): give it back now.
            Ok(false) => {
                sqlx::query(&format!("SELECT pg_advisory_unlock_shared({GATE})"))
                    .bind(key)
                    .execute(conn)
                    .await?;
                Ok(true)
            }
            // lock_timeout: still held.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn holder(&self, conn: &mut PgConnection, key: &str) -> Result<Option<u64>, sqlx::Error> {
        let pid: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT l.pid FROM pg_locks l, (SELECT {KEY} AS h) k \
             WHERE l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid = ((k.h >> 32) & 4294967295)::oid \
             AND l.objid = (k.h & 4294967295)::oid AND l.objsubid = 1 LIMIT 1"
        ))
        .bind(key)
        .fetch_optional(conn)
        .await?;
        Ok(pid.map(|p| p as u64))
    }

    fn end_session(&self, id: u64) -> String {
        format!("SELECT pg_terminate_backend({id}) ends it, and every other lock it holds")
    }

    fn error(&self, e: sqlx::Error, what: &str) -> StoreError {
        pg_error(e, what)
    }
}
