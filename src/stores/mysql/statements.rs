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
    /// The holders of keys held by readers or permits (`crate::stores::sql::group`).
    pub(super) holders: String,
    pub(super) holders_quoted: String,
    /// `database.table`, for messages.
    pub(super) display: String,
}

impl Names {
    /// The names for `table` in `database` (the table a validated identifier).
    pub(super) fn new(database: &str, table: &str) -> Names {
        let fences = sql::derived_name(table, "_fences", 63);
        let holders = sql::derived_name(table, "_holders", 63);
        Names {
            quoted: format!("`{table}`"),
            fences_quoted: format!("`{fences}`"),
            holders_quoted: format!("`{holders}`"),
            holders,
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
         `waiters` text {text} NULL, \
         `kind` varchar(16) {text} NULL, \
         `permits` int NULL, \
         `waiter` varchar(255) {text} NULL, \
         `waiter_expiration` bigint NULL) ENGINE=InnoDB",
        n.quoted
    )
}

/// The holders of keys held by readers or permits, one row each.
pub(super) fn create_holders(n: &Names, text: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `key` varchar(255) {text} NOT NULL, \
         `owner` varchar(255) {text} NOT NULL, \
         `expiration` bigint NULL, \
         `fence` bigint NULL, \
         `metadata` mediumtext {text} NULL, \
         PRIMARY KEY (`key`, `owner`)) ENGINE=InnoDB",
        n.holders_quoted
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
    Common {
        set_metadata: format!(
            "UPDATE {t} SET metadata = ? WHERE `key` = ? AND owner = ? AND {live}"
        ),
    }
}

/// Token ×3, key: adds a store's token to the key's row's `waiters`, if `condition` holds.
/// A list grown past its bound (stores that waited and went) starts again.
fn register(t: &str, condition: &str) -> String {
    format!(
        "UPDATE {t} SET waiters = CASE \
         WHEN waiters IS NULL OR CHAR_LENGTH(waiters) > {MOST_WAITERS_CHARS} THEN ? \
         WHEN FIND_IN_SET(?, waiters) > 0 THEN waiters \
         ELSE CONCAT(waiters, ',', ?) END \
         WHERE `key` = ? AND {condition}"
    )
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
    /// Token ×3, key: adds a store's token to the live row's `waiters` (`wake.rs`).
    pub(super) register: String,
    pub(super) expired: String,
    pub(super) reap_one: String,
    /// A take-over's read of the live holder, row-locked so that a release or extend waits
    /// for its commit (after the fence draw, which row-locks the key's counter).
    pub(super) displaced: String,
    /// A take-over's write: insert, or overwrite the row whatever its state.
    pub(super) take_over: String,
    /// The statements of keys held by readers or permits.
    pub(super) group: GroupSql,
    /// How a mutex's transaction begins (acquire, take-over, a release with waiters).
    pub(super) begin: &'static str,
    /// How a group's transaction begins.
    pub(super) begin_group: &'static str,
}

/// How a group's transaction begins (one round trip): `READ COMMITTED`, so that its locking
/// reads of rows that do not exist (a key's first reader, a holder's first row) take no gap
/// locks, which made transactions on neighbouring new keys deadlock each other. They take
/// turns on a key by the row locks of its fence counter and its row, which exist.
const BEGIN_GROUP: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// On MariaDB, every transaction of lease mode begins by bounding how long its session may
/// sit idle inside one (`idle_transaction_timeout`, 2 s), in the same round trip. These
/// transactions row-lock the key's fence counter or row between their statements: a client
/// whose process is paused or whose network is cut in the middle of one would otherwise
/// hold up every operation on the key until its connection died (minutes, for a cut
/// network), its waiters failing after `innodb_lock_wait_timeout`. After 2 s idle the
/// server closes the session and rolls the transaction back; a running client is idle there
/// for one round trip. MySQL has no such setting.
const BEGIN_MARIADB: &str = "SET SESSION idle_transaction_timeout = 2; START TRANSACTION";
const BEGIN_GROUP_MARIADB: &str = "SET SESSION idle_transaction_timeout = 2; \
     SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// Whether the server's `VERSION()` is a MariaDB that has `idle_transaction_timeout`
/// (10.3 and later).
pub(super) fn bounds_idle_transactions(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (10, 3)
}

impl Sql {
    /// The statements on the tables `n`; `returning` on a server with `DELETE … RETURNING`
    /// (MariaDB), `bound_idle` on one with `idle_transaction_timeout`.
    pub(super) fn new(n: &Names, returning: bool, bound_idle: bool) -> Sql {
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
            register: register(t, &live),
            // The expiry watcher: candidates (with their raw expiration), then one conditional
            // DELETE per candidate. Only one caller's DELETE finds the row, and a takeover
            // makes it live (and changes owner and expiration) so it no longer matches.
            // A group's expired row is not a lock of its own (its holders are reported).
            expired: format!(
                "SELECT CAST(`key` AS CHAR), CAST(owner AS CHAR), CAST(expiration AS SIGNED), \
                 fence, CAST(metadata AS CHAR) FROM {t} WHERE `key` LIKE ? ESCAPE '!' AND {expired} \
                 AND owner <> '{GROUP}'"
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
            group: GroupSql::new(n),
            begin: if bound_idle { BEGIN_MARIADB } else { "BEGIN" },
            begin_group: if bound_idle {
                BEGIN_GROUP_MARIADB
            } else {
                BEGIN_GROUP
            },
        }
    }
}

/// The owner of a group's row (`crate::stores::sql::group`).
const GROUP: &str = sql::group::GROUP_OWNER;

/// The statements of keys held by a group (`crate::stores::sql::group`), run in one
/// transaction per operation. A transaction that changes the key's group first row-locks
/// the key's fence counter (a join, drawing the new holder's fence: a plain acquire's first
/// step too) or the key's row, and takes its locks in the order counter, row, holders, so
/// that the operations on a key take turns without deadlocks. Each statement's comment
/// gives its parameters in order.
#[derive(Debug)]
pub(super) struct GroupSql {
    /// Owner, key: the key's row, locked: owner, live, kind, permits, whether another
    /// writer's marker lives, the marker's owner and remaining ms, the row's remaining ms,
    /// the stores waiting for it.
    pub(super) state: String,
    /// Key: the key's row, locked: whether it is a group's, and the stores waiting for it.
    pub(super) row: String,
    /// Key: removes the key's expired holders.
    pub(super) prune: String,
    /// Owner, key: how many holders live, and how many of them are the owner.
    pub(super) count: String,
    /// Key, owner, ttl ms, fence, metadata: adds a holder.
    pub(super) join: String,
    /// Key, ttl ms, kind, permits: makes the key's row a group's, keeping the waiting
    /// stores and another writer's marker.
    pub(super) open: String,
    /// Ttl ms, ttl ms, key: pushes the group row's expiration to a new holder's.
    pub(super) stretch: String,
    /// Key: the holder that ends first (owner, remaining ms).
    pub(super) first: String,
    /// Token ×3, key: adds a store's token to the row's `waiters`, live or not (a marked
    /// row outlives its last reader).
    pub(super) register: String,
    /// Key: empties the row's `waiters` (the stores in it are being woken).
    pub(super) clear_waiters: String,
    /// Key, owner: whether the holder's lease is live, locking its row.
    pub(super) holder_live: String,
    /// Key, owner: removes the holder.
    pub(super) leave: String,
    /// Key, key: removes the group row when no holder and no waiting writer's marker lives.
    pub(super) close: String,
    /// Key, key: sets the group row's expiration to its latest live holder's (now if none).
    pub(super) refresh: String,
    /// Ttl ms, key, owner: the live holder's new lease; `LAST_INSERT_ID` is its fence.
    pub(super) extend: String,
    /// Metadata, key, owner, key: the live holder's metadata, if the key is a group's.
    pub(super) set_metadata: String,
    /// Owner, lease ms, key, owner: records a waiting writer's marker on a live row
    /// (unless another writer's lives).
    pub(super) mark_writer: String,
    /// Key: removes every holder.
    pub(super) drop_members: String,
    /// Key: how many holders live.
    pub(super) live_members: String,
    /// Key: a live group's first holder (owner, fence), for a take-over.
    pub(super) displaced_member: String,
    /// Key: whether the row is live, and the stores waiting for it, locking it.
    pub(super) force_read: String,
    /// Key: removes the live row.
    pub(super) force_delete: String,
    /// `LIKE` pattern: expired holders (with their raw expiration).
    pub(super) expired_members: String,
    /// Key, owner, expiration: removes the holder if it is still that expired one.
    pub(super) reap_member: String,
    /// `LIKE` pattern: group rows whose lease ran out and whose writer's marker did not,
    /// removed.
    pub(super) reap_groups: String,
    /// Key: the key's live row joined with its live holders.
    pub(super) inspect: String,
    /// `LIKE` pattern: every live row under it joined with its live holders.
    pub(super) list: String,
}

impl GroupSql {
    fn new(n: &Names) -> GroupSql {
        let (t, h, live, rem) = (&n.quoted, &n.holders_quoted, live(), remaining());
        let expired = format!("(expiration IS NOT NULL AND expiration <= {NOW_MS})");
        let marked = format!("COALESCE(waiter_expiration > {NOW_MS}, 0)");
        let in_group = format!("EXISTS (SELECT 1 FROM {t} WHERE `key` = ? AND owner = '{GROUP}')");
        let joined = format!(
            "SELECT CAST(l.`key` AS CHAR), CAST(l.owner AS CHAR), \
               CASE WHEN l.expiration IS NULL THEN NULL \
                 ELSE CAST(GREATEST(CAST(l.expiration AS SIGNED) - {NOW_MS}, 0) AS SIGNED) END, \
               l.fence, CAST(l.metadata AS CHAR), CAST(l.kind AS CHAR), CAST(l.permits AS SIGNED), \
               CAST(h.owner AS CHAR), \
               CASE WHEN h.expiration IS NULL THEN NULL \
                 ELSE CAST(GREATEST(CAST(h.expiration AS SIGNED) - {NOW_MS}, 0) AS SIGNED) END, \
               h.fence, CAST(h.metadata AS CHAR) \
             FROM {t} l LEFT JOIN {h} h ON l.owner = '{GROUP}' AND h.`key` = l.`key` \
               AND (h.expiration IS NULL OR h.expiration > {NOW_MS}) \
             WHERE (l.expiration IS NULL OR l.expiration > {NOW_MS})"
        );
        let pattern = "LIKE ? ESCAPE '!'";
        GroupSql {
            state: format!(
                "SELECT CAST(owner AS CHAR), {live}, CAST(kind AS CHAR), CAST(permits AS SIGNED), \
                   COALESCE(waiter IS NOT NULL AND NOT (waiter <=> ?) AND NOT (waiter <=> owner) \
                     AND waiter_expiration > {NOW_MS}, 0), \
                   CAST(waiter AS CHAR), \
                   CAST(GREATEST(CAST(waiter_expiration AS SIGNED) - {NOW_MS}, 0) AS SIGNED), \
                   {rem}, CAST(waiters AS CHAR) \
                 FROM {t} WHERE `key` = ? FOR UPDATE"
            ),
            row: format!(
                "SELECT owner = '{GROUP}', CAST(waiters AS CHAR) FROM {t} WHERE `key` = ? FOR UPDATE"
            ),
            prune: format!("DELETE FROM {h} WHERE `key` = ? AND {expired}"),
            count: format!(
                "SELECT COUNT(*), CAST(COALESCE(SUM(owner = ?), 0) AS SIGNED) FROM {h} \
                 WHERE `key` = ? AND {live}"
            ),
            join: format!(
                "INSERT INTO {h} (`key`, owner, expiration, fence, metadata) \
                 VALUES (?, ?, {NOW_MS} + ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE expiration = VALUES(expiration), fence = VALUES(fence), \
                   metadata = VALUES(metadata)"
            ),
            // Assignments run left to right: the marker is judged by the old owner.
            open: format!(
                "INSERT INTO {t} (`key`, owner, expiration, fence, metadata, kind, permits) \
                 VALUES (?, '{GROUP}', {NOW_MS} + ?, NULL, NULL, ?, ?) \
                 ON DUPLICATE KEY UPDATE \
                   waiter = IF(waiter <=> owner, NULL, waiter), \
                   waiter_expiration = IF(waiter IS NULL, NULL, waiter_expiration), \
                   owner = '{GROUP}', expiration = VALUES(expiration), fence = NULL, \
                   metadata = NULL, kind = VALUES(kind), permits = VALUES(permits)"
            ),
            stretch: format!(
                "UPDATE {t} SET expiration = IF(expiration IS NULL OR ? IS NULL, NULL, \
                   GREATEST(expiration, {NOW_MS} + ?)) \
                 WHERE `key` = ? AND owner = '{GROUP}'"
            ),
            first: format!(
                "SELECT CAST(owner AS CHAR), {rem} FROM {h} WHERE `key` = ? AND {live} \
                 ORDER BY expiration IS NULL, expiration LIMIT 1"
            ),
            register: register(t, "TRUE"),
            clear_waiters: format!("UPDATE {t} SET waiters = NULL WHERE `key` = ?"),
            holder_live: format!(
                "SELECT {live} FROM {h} WHERE `key` = ? AND owner = ? FOR UPDATE"
            ),
            leave: format!("DELETE FROM {h} WHERE `key` = ? AND owner = ?"),
            close: format!(
                "DELETE FROM {t} WHERE `key` = ? AND owner = '{GROUP}' AND NOT {marked} \
                   AND NOT EXISTS (SELECT 1 FROM {h} WHERE `key` = ? AND {live})"
            ),
            refresh: format!(
                "UPDATE {t} SET expiration = (\
                   SELECT CASE WHEN COUNT(*) = 0 THEN {NOW_MS} \
                     WHEN COUNT(expiration) < COUNT(*) THEN NULL ELSE MAX(expiration) END \
                   FROM {h} WHERE `key` = ? AND {live}) \
                 WHERE `key` = ? AND owner = '{GROUP}'"
            ),
            extend: format!(
                "UPDATE {h} SET expiration = {NOW_MS} + ?, fence = LAST_INSERT_ID(COALESCE(fence, 0)) \
                 WHERE `key` = ? AND owner = ? AND {live}"
            ),
            set_metadata: format!(
                "UPDATE {h} SET metadata = ? WHERE `key` = ? AND owner = ? AND {live} AND {in_group}"
            ),
            mark_writer: format!(
                "UPDATE {t} SET waiter = ?, waiter_expiration = {NOW_MS} + ? \
                 WHERE `key` = ? AND {live} \
                   AND (waiter IS NULL OR waiter = ? OR waiter <=> owner OR NOT {marked})"
            ),
            drop_members: format!("DELETE FROM {h} WHERE `key` = ?"),
            live_members: format!("SELECT COUNT(*) FROM {h} WHERE `key` = ? AND {live}"),
            displaced_member: format!(
                "SELECT CAST(owner AS CHAR), fence FROM {h} WHERE `key` = ? AND {live} \
                 ORDER BY fence LIMIT 1"
            ),
            force_read: format!(
                "SELECT {live}, CAST(waiters AS CHAR) FROM {t} WHERE `key` = ? FOR UPDATE"
            ),
            force_delete: format!("DELETE FROM {t} WHERE `key` = ? AND {live}"),
            expired_members: format!(
                "SELECT CAST(`key` AS CHAR), CAST(owner AS CHAR), CAST(expiration AS SIGNED), \
                 fence, CAST(metadata AS CHAR) FROM {h} WHERE `key` {pattern} AND {expired}"
            ),
            reap_member: format!(
                "DELETE FROM {h} WHERE `key` = ? AND owner = ? AND expiration = ? AND {expired}"
            ),
            reap_groups: format!(
                "DELETE FROM {t} WHERE `key` {pattern} AND owner = '{GROUP}' AND {expired} \
                   AND NOT {marked}"
            ),
            inspect: format!("{joined} AND l.`key` = ? ORDER BY h.fence"),
            list: format!("{joined} AND l.`key` {pattern} ORDER BY l.`key`, h.fence"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bounds_idle_transactions;

    #[test]
    fn idle_transactions_are_bounded_on_mariadb_from_10_3() {
        for (version, bounded) in [
            ("10.11.19-MariaDB-0+deb12u1", true),
            ("11.4.2-MariaDB", true),
            ("10.3.39-MariaDB", true),
            ("10.2.44-MariaDB-log", false),
            ("8.0.36", false),
            ("8.4.0-commercial", false),
        ] {
            assert_eq!(bounds_idle_transactions(version), bounded, "{version}");
        }
    }
}
