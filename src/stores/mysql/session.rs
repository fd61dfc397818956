//! Session mode on MySQL / MariaDB: `GET_LOCK` (see the module docs, *Session mode*).

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::ConnectOptions;

use super::errors::my_error;
use crate::store::StoreError;
use crate::stores::sql::session::Dialect;

/// The `GET_LOCK` name of a stored key: its SHA-256 in hex, exactly the servers' limit of
/// 64 characters, computed by the server (`SHA2('app:key', 256)`): never truncated, the same
/// for every key length, and byte-exact whatever the server's name comparison.
const NAME: &str = "SHA2(?, 256)";

/// The key's gate: a second lock (`SHA2` of the key with a NUL byte appended, never a stored
/// key's since keys hold no NUL) its holder also holds, on which waiters wait. Waiters never
/// queue on the lock itself, so a waiter that went away is never granted it.
const GATE: &str = "SHA2(CONCAT(?, CHAR(0)), 256)";

/// The statements of session mode.
pub(super) struct MySession {
    options: MySqlConnectOptions,
}

impl MySession {
    /// Session mode over connections made with `options`.
    pub(super) fn new(options: MySqlConnectOptions) -> MySession {
        MySession { options }
    }
}

/// Without the connect options, which hold the password.
impl std::fmt::Debug for MySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MySession")
    }
}

#[async_trait]
impl Dialect for MySession {
    type Conn = MySqlConnection;
    const SESSION: &'static str = "connection";

    async fn connect(&self) -> Result<(MySqlConnection, u64), sqlx::Error> {
        let mut conn = self.options.connect().await?;
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut conn)
            .await?;
        Ok((conn, id))
    }

    async fn try_lock(
        &self,
        conn: &mut MySqlConnection,
        key: &str,
    ) -> Result<Option<Option<u64>>, sqlx::Error> {
        // IF goes on only once the lock is ours (0: held by another connection): the gate
        // (held for an instant at most by a waiter being woken) then the fence. UUID_SHORT()
        // grows with every call on the server, so a later holder's is greater. A gate not had
        // within its second is an error, and the connection (and lock) are given up.
        let fence: Option<u64> = sqlx::query_scalar(&format!(
            "SELECT CAST(IF(GET_LOCK({NAME}, 0) = 1, IF(GET_LOCK({GATE}, 1) = 1, UUID_SHORT(), NULL), 0) AS UNSIGNED)"
        ))
        .bind(key)
        .bind(key)
        .fetch_one(conn)
        .await?;
        match fence {
            Some(0) => Ok(None),
            Some(f) => Ok(Some(Some(f))),
            None => Err(sqlx::Error::Protocol(format!(
                "the gate of '{key}' stayed taken for a second"
            ))),
        }
    }

    async fn unlock(&self, conn: &mut MySqlConnection, key: &str) -> Result<(), sqlx::Error> {
        // The key first: a waiter the gate wakes finds it free.
        sqlx::query(&format!("DO RELEASE_LOCK({NAME}), RELEASE_LOCK({GATE})"))
            .bind(key)
            .bind(key)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn wait(&self, conn: &mut MySqlConnection, key: &str) -> Result<bool, sqlx::Error> {
        // The gate is granted when the holder releases (the server wakes one waiter), and
        // given back at once.
        let (got, gave): (Option<i64>, Option<i64>) =
            sqlx::query_as(&format!("SELECT GET_LOCK({GATE}, 1), RELEASE_LOCK({GATE})"))
                .bind(key)
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
        if got == Some(1) && gave != Some(1) {
            // The select list was evaluated out of order: give the gate back now.
            sqlx::query(&format!("DO RELEASE_LOCK({GATE})"))
                .bind(key)
                .execute(conn)
                .await?;
        }
        Ok(got == Some(1))
    }

    async fn holder(
        &self,
        conn: &mut MySqlConnection,
        key: &str,
    ) -> Result<Option<u64>, sqlx::Error> {
        sqlx::query_scalar(&format!("SELECT CAST(IS_USED_LOCK({NAME}) AS UNSIGNED)"))
            .bind(key)
            .fetch_one(conn)
            .await
    }

    fn end_session(&self, id: u64) -> String {
        format!("KILL {id} ends it, and every other lock it holds")
    }

    fn error(&self, e: sqlx::Error, what: &str) -> StoreError {
        my_error(e, what)
    }
}
