//! What MySQL's and MariaDB's error numbers mean for a caller.

use sqlx::mysql::MySqlDatabaseError;

use crate::store::{StoreError, StoreErrorKind};
use crate::stores::sql::errors::{classify, store_error};

/// InnoDB found a deadlock and rolled the transaction back.
pub(super) const DEADLOCK: u16 = 1213;

/// The server's error number, for MySQL database errors.
pub(super) fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

/// Maps a MySQL driver error to a [`StoreError`] whose message starts with `what`.
pub(crate) fn my_error(e: sqlx::Error, what: &str) -> StoreError {
    let number = error_number(&e);
    let kind = classify(&e, |_| match number {
        // Access denied, unknown database, host blocked, can't connect.
        Some(1044 | 1045 | 1049 | 1129 | 1130 | 1698 | 2002 | 2003 | 2005) => {
            StoreErrorKind::Unavailable
        }
        // Too many connections, shutdown, lock wait timeout, deadlock, killed, gone away,
        // lost connection, read-only failover.
        Some(1040 | 1053 | 1205 | DEADLOCK | 1317 | 1927 | 2006 | 2013 | 1290 | 1836 | 4031) => {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Rejected,
    });
    store_error(kind, what, e)
}
