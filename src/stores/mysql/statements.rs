//! All SQL text of the MySQL / MariaDB store: the names of its objects, the catalog queries
//! and DDL of `schema.rs`, and the lease-row statements of `lease.rs`, built once per store
//! from the validated names.

use crate::stores::sql;
use crate::stores::sql::lease::Common;

/// The database's clock in epoch milliseconds (constant within a statement).
const NOW_MS: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";

/// The length past which a row's list of waiting stores is started again: about 60
/// stores' tokens. A store dropped from it polls until its next try writes it back.
const MOST_WAITERS_CHARS: usize = 1000;

/// The connection's database, and the server's version (MariaDB's names itself).
pub(super) const DATABASE: &str = "SELECT CAST(DATABASE() AS CHAR), CAST(VERSION() AS CHAR)";

/// `?` table: its `(column, data type)`s in the connection's database; none if it does not
/// exist.
pub(super) const COLUMNS: &str =
    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";

/// The binary no-pad collation this server has, if any, so keys compare byte for byte
/// (`a` ≠ `A` ≠ `a `).
pub(super) const BINARY_COLLATION: &str = "SELECT CAST(COLLATION_NAME AS CHAR) FROM information_schema.COLLATIONS \
     WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin') ORDER BY COLLATION_NAME LIMIT 1";

/// `?` name, waiting up to 30 s: serializes table setup.
pub(super) const SETUP_LOCK: &str = "SELECT GET_LOCK(?, 30)";

/// `?` name: ends [`SETUP_LOCK`].
pub(super) const SETUP_UNLOCK: &str = "SELECT RELEASE_LOCK(?)";

/// Names of the objects the store uses.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) table: String,
    pub(super) quoted: String,
    pub(super) fences: String,
    pub(super) fences_quoted: String,
    /// `database.table`, for messages.
    pub(super) display: String,
}

impl Names {
    /// The names for `table` in `database` (the table a validated identifier).
    pub(super) fn new(database: &str, table: &str) -> Names {
        let fences = sql::derived_name(table, "_fences", 63);
        Names {
            quoted: format!("`{table}`"),
            fences_quoted: format!("`{fences}`"),
            display: format!("{database}.{table}"),
            table: table.to_owned(),
            fences,
        }
    }

    /// The name of the `GET_LOCK` that serializes setting the table up.
    pub(super) fn setup_lock(&self) -> String {
        format!("cadenas:{:016x}", sql::fnv1a(&self.display))
    }
}

/// The lock table with Verrou's columns and ours; `text` is the character set and
/// collation of its text columns.
pub(super) fn create_table(n: &Names, text: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `key` varchar(255) {text} NOT NULL PRIMARY KEY, \
         `owner` varchar(255) {text} NOT NULL, \
         `expiration` bigint NULL, \
         `fence` bigint NULL, \
         `metadata` mediumtext {text} NULL, \
         `waiters` text {text} NULL) ENGINE=InnoDB",
        n.quoted
    )
}

/// One of our nullable columns, added to a table that lacks it.
pub(super) fn add_column(n: &Names, column: &str, ty: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN `{column}` {ty} NULL", n.quoted)
}

/// The per-key fence counters.
pub(super) fn create_fences(n: &Names, text: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `key` varchar(255) {text} NOT NULL PRIMARY KEY, \
         `fence` bigint NOT NULL) ENGINE=InnoDB",
        n.fences_quoted
    )
}

/// A row is live until its expiration passes by the statement's clock.
fn live() -> String {
    format!("(expiration IS NULL OR expiration > {NOW_MS})")
}

/// The row's remaining milliseconds (`NULL`: never expires) by the statement's clock.
fn remaining() -> String {
    format!(
        "CASE WHEN expiration IS NULL THEN NULL ELSE CAST(GREATEST(CAST(expiration AS SIGNED) - {NOW_MS}, 0) AS SIGNED) END"
    )
}

/// The statements of the operations alike in every dialect.
pub(super) fn common(n: &Names) -> Common {
    let (t, live) = (&n.quoted, live());
    let columns = format!(
        "CAST(`key` AS CHAR), CAST(owner AS CHAR), {}, fence, CAST(metadata AS CHAR)",
        remaining()
    );
    Common {
        set_metadata: format!(
            "UPDATE {t} SET metadata = ? WHERE `key` = ? AND owner = ? AND {live}"
        ),
        inspect: format!("SELECT {columns} FROM {t} WHERE `key` = ? AND {live}"),
        list: format!("SELECT {columns} FROM {t} WHERE `key` LIKE ? ESCAPE '!' AND {live}"),
    }
}

/// The lease-row statements, built once per store.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) draw_fence: String,
    pub(super) take: String,
    pub(super) read_back: String,
    /// Deletes our live row if nobody waits for it (the common case: one statement).
    pub(super) release: String,
    /// On MariaDB: deletes our live row and returns its `waiters` (one statement whoever
    /// waits, instead of [`release`](Self::release) and the transaction after it).
    pub(super) release_returning: Option<String>,
    /// A release of a row with waiters: the row's `waiters`, row-locked, then
    /// [`release_any`](Self::release_any), in one transaction.
    pub(super) waiters_of_ours: String,
    /// Deletes our live row whoever waits.
    pub(super) release_any: String,
    pub(super) extend: String,
    /// Deletes the live row whoever holds it, if nobody waits.
    pub(super) force_release: String,
    /// On MariaDB: deletes the live row whoever holds it and returns its `waiters`.
    pub(super) force_returning: Option<String>,
    /// The live row's `waiters`, row-locked, then [`force_any`](Self::force_any).
    pub(super) waiters_of_any: String,
    /// Deletes the live row whoever holds it and whoever waits.
    pub(super) force_any: String,
    /// Token ×3, key: adds a store's token to the live row's `waiters` (`wake.rs`).
    pub(super) register: String,
    pub(super) expired: String,
    pub(super) reap_one: String,
    /// A take-over's read of the live holder, row-locked so that a release or extend waits
    /// for its commit (after the fence draw, which row-locks the key's counter).
    pub(super) displaced: String,
    /// A take-over's write: insert, or overwrite the row whatever its state.
    pub(super) take_over: String,
}

impl Sql {
    /// The statements on the tables `n`; `returning` on a server with `DELETE … RETURNING`
    /// (MariaDB).
    pub(super) fn new(n: &Names, returning: bool) -> Sql {
        let (t, live, remaining) = (&n.quoted, live(), remaining());
        let expired = format!("(expiration IS NOT NULL AND expiration <= {NOW_MS})");
        Sql {
            draw_fence: format!(
                "INSERT INTO {} (`key`, fence) VALUES (?, LAST_INSERT_ID(1)) \
                 ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)",
                n.fences_quoted
            ),
            // key, owner, ttl ms, fence, metadata. `LAST_INSERT_ID` ends as our fence when
            // the key was free or expired (the VALUES row is evaluated first), as 0 when it
            // is held: the reply tells which, without reading the row back.
            take: format!(
                "INSERT INTO {t} (`key`, owner, expiration, fence, metadata) \
                 VALUES (?, ?, {NOW_MS} + ?, LAST_INSERT_ID(?), ?) \
                 ON DUPLICATE KEY UPDATE \
                 owner = IF({expired}, VALUES(owner), owner), \
                 metadata = IF({expired}, VALUES(metadata), metadata), \
                 fence = IF({expired}, VALUES(fence), IF(LAST_INSERT_ID(0), NULL, fence)), \
                 expiration = IF({expired}, VALUES(expiration), expiration)"
            ),
            read_back: format!(
                "SELECT CAST(owner AS CHAR), {remaining} FROM {t} WHERE `key` = ? AND {live}"
            ),
            release: format!(
                "DELETE FROM {t} WHERE `key` = ? AND owner = ? AND {live} AND waiters IS NULL"
            ),
            waiters_of_ours: format!(
                "SELECT CAST(waiters AS CHAR) FROM {t} WHERE `key` = ? AND owner = ? AND {live} FOR UPDATE"
            ),
            release_any: format!("DELETE FROM {t} WHERE `key` = ? AND owner = ? AND {live}"),
            release_returning: returning.then(|| {
                format!(
                    "DELETE FROM {t} WHERE `key` = ? AND owner = ? AND {live} \
                     RETURNING CAST(waiters AS CHAR)"
                )
            }),
            // ttl ms, key, owner. `LAST_INSERT_ID(expr)` hands the fence back in the reply.
            extend: format!(
                "UPDATE {t} SET expiration = {NOW_MS} + ?, fence = LAST_INSERT_ID(COALESCE(fence, 0)) \
                 WHERE `key` = ? AND owner = ? AND {live}"
            ),
            force_release: format!(
                "DELETE FROM {t} WHERE `key` = ? AND {live} AND waiters IS NULL"
            ),
            waiters_of_any: format!(
                "SELECT CAST(waiters AS CHAR) FROM {t} WHERE `key` = ? AND {live} FOR UPDATE"
            ),
            force_any: format!("DELETE FROM {t} WHERE `key` = ? AND {live}"),
            force_returning: returning.then(|| {
                format!("DELETE FROM {t} WHERE `key` = ? AND {live} RETURNING CAST(waiters AS CHAR)")
            }),
            // A list grown past its bound (stores that waited and went) starts again.
            register: format!(
                "UPDATE {t} SET waiters = CASE \
                 WHEN waiters IS NULL OR CHAR_LENGTH(waiters) > {MOST_WAITERS_CHARS} THEN ? \
                 WHEN FIND_IN_SET(?, waiters) > 0 THEN waiters \
                 ELSE CONCAT(waiters, ',', ?) END \
                 WHERE `key` = ? AND {live}"
            ),
            // The expiry watcher: candidates (with their raw expiration), then one conditional
            // DELETE per candidate. Only one caller's DELETE finds the row, and a takeover
            // makes it live (and changes owner and expiration) so it no longer matches.
            expired: format!(
                "SELECT CAST(`key` AS CHAR), CAST(owner AS CHAR), CAST(expiration AS SIGNED), \
                 fence, CAST(metadata AS CHAR) FROM {t} WHERE `key` LIKE ? ESCAPE '!' AND {expired}"
            ),
            reap_one: format!(
                "DELETE FROM {t} WHERE `key` = ? AND owner = ? AND expiration = ? AND {expired}"
            ),
            displaced: format!(
                "SELECT CAST(owner AS CHAR), fence FROM {t} WHERE `key` = ? AND {live} FOR UPDATE"
            ),
            // key, owner, ttl ms, fence, metadata; expiration assigned last, as in `take`.
            take_over: format!(
                "INSERT INTO {t} (`key`, owner, expiration, fence, metadata) \
                 VALUES (?, ?, {NOW_MS} + ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE owner = VALUES(owner), metadata = VALUES(metadata), \
                 fence = VALUES(fence), expiration = VALUES(expiration)"
            ),
        }
    }
}
