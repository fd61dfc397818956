//! Driver errors as [`StoreError`]s, and the failures of table setup as the crate's
//! [`Error`]. Each dialect classifies its own database error codes (its `errors.rs`); what
//! is not a database error is classified here, alike for every server store.

use crate::error::Error;
use crate::store::{StoreError, StoreErrorKind};

/// Why a lock table could not be made ready.
#[derive(Debug)]
pub(crate) enum SchemaError {
    /// The database failed.
    Store(StoreError),
    /// The table exists but is not a lock table (the message says why and what to do).
    Rejected(String),
}

impl SchemaError {
    /// As the crate's error from the constructor of store `describe`.
    pub(crate) fn into_error(self, describe: &str) -> Error {
        connect_error(
            describe,
            match self {
                SchemaError::Store(source) => source,
                SchemaError::Rejected(message) => {
                    StoreError::new(StoreErrorKind::Rejected, message)
                }
            },
        )
    }
}

/// A construction failure as the crate's error, naming the store.
pub(crate) fn connect_error(store: &str, source: StoreError) -> Error {
    Error::store(store, "connect", None, source)
}

/// Classifies a driver error that is not a database error (those are classified per
/// dialect by `database_kind`).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn classify(
    err: &sqlx::Error,
    database_kind: impl Fn(&dyn sqlx::error::DatabaseError) -> StoreErrorKind,
) -> StoreErrorKind {
    use sqlx::Error as E;
    match err {
        E::Database(db) => database_kind(db.as_ref()),
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::PermissionDenied => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Transient,
        },
        E::Tls(_) => StoreErrorKind::Unavailable,
        E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Rejected,
    }
}

/// Builds a [`StoreError`] from a driver error: `what` says what was being done (naming the
/// table and key); a hint is added for the common cases.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn store_error(kind: StoreErrorKind, what: &str, err: sqlx::Error) -> StoreError {
    let hint = match (&err, kind) {
        (sqlx::Error::PoolTimedOut, _) => {
            " (no pooled connection became free in time: is the database reachable, or is the pool too small?)"
        }
        (_, StoreErrorKind::Unavailable) => " (is the database running and are the URL's host, port, user and password right?)",
        _ => "",
    };
    let driver = err.to_string();
    StoreError::new(kind, format!("{what}: {driver}{hint}")).with_source(err)
}

/// What an operation on `key` was doing, for a [`store_error`] message.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn doing(what: &str, key: &str, table: &str) -> String {
    format!("{what} '{key}' in table {table}")
}
