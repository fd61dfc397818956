//! The pool of a server store (PostgreSQL, MySQL): built by the store from its URL, or
//! handed over by the caller (`from_pool`).

use sqlx::pool::PoolOptions;
use sqlx::{ConnectOptions, Connection, Database, Pool};

use crate::error::Result;
use crate::store::StoreError;

use super::errors::connect_error;
use super::options::PoolSettings;

/// The connect options of database `DB`.
pub(crate) type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// Connects once directly, so that a database that is down or a wrong password fails now
/// with the real cause rather than after the pool's retries, then builds the store's lazy
/// pool. `error` maps the dialect's driver errors; `describe` names the store.
pub(crate) async fn connect<DB: Database>(
    options: Options<DB>,
    settings: PoolSettings,
    describe: &str,
    error: fn(sqlx::Error, &str) -> StoreError,
) -> Result<Pool<DB>> {
    let probe = options
        .connect()
        .await
        .map_err(|e| connect_error(describe, error(e, &format!("connecting to {describe}"))))?;
    let _ = probe.close().await;
    Ok(PoolOptions::<DB>::new()
        .max_connections(settings.size)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(settings.test_before_acquire)
        .connect_lazy_with(options))
}

/// How a store on a caller's pool names itself: `scheme://user@host:port/database`.
pub(crate) fn describe(
    scheme: &str,
    user: &str,
    host: &str,
    port: u16,
    database: Option<&str>,
) -> String {
    format!("{scheme}://{user}@{host}:{port}/{}", database.unwrap_or(""))
}
