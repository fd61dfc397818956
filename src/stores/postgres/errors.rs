//! What PostgreSQL's error codes (SQLSTATE) mean for a caller.

use crate::store::{StoreError, StoreErrorKind};
use crate::stores::sql::errors::{classify, store_error};

/// Maps a PostgreSQL driver error to a [`StoreError`] whose message starts with `what`.
pub(crate) fn pg_error(e: sqlx::Error, what: &str) -> StoreError {
    let kind = classify(&e, |db| {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        match code.as_str() {
            // Bad password or user, no such database, and connection failures.
            "28000" | "28P01" | "3D000" => StoreErrorKind::Unavailable,
            c if c.starts_with("08") => StoreErrorKind::Unavailable,
            // Shutdown, cancelled, serialization failure, deadlock, lock not available,
            // and insufficient resources.
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "55P03" => {
                StoreErrorKind::Transient
            }
            c if c.starts_with("53") => StoreErrorKind::Transient,
            _ => StoreErrorKind::Rejected,
        }
    });
    store_error(kind, what, e)
}
