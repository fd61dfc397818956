//! All SQL text of the SQLite store: the DDL of `schema.rs` (the table, the fence sequence,
//! the triggers) and the statements of every operation, built with the validated table name.

/// "Now" in epoch milliseconds by SQLite's clock. `julianday` works on every SQLite with
/// `RETURNING` (3.35+); within one statement SQLite returns the same 'now' every time.
const NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// Fences are at least the time in milliseconds times this, so they stay ahead of any
/// fence handed out before, even one whose commit a power cut undid or whose database file
/// was deleted. SQLite commits far fewer than this many acquisitions per millisecond, and
/// the numbers stay below 2^53 (exact in JavaScript) until the year 2255.
const FENCES_PER_MS: i64 = 1000;

/// Every statement the store runs, with the table name filled in.
#[derive(Debug)]
pub(super) struct Sql {
    pub acquire: String,
    pub holder: String,
    pub release: String,
    pub force_release: String,
    pub extend: String,
    pub set_metadata: String,
    pub inspect: String,
    pub list: String,
    pub reap: String,
    /// The live holding a take-over displaces (run first, in the take-over's transaction).
    pub displaced: String,
    /// The take-over: insert or overwrite, whatever the row's state.
    pub take_over: String,
}

impl Sql {
    /// Builds the statements for `table`, a checked identifier.
    pub fn new(table: &str) -> Sql {
        let (t, seq) = (quoted(table), sequence(table));
        let live = format!("(expiration IS NULL OR expiration > {NOW})");
        let expires = format!("CASE WHEN ?3 IS NULL THEN NULL ELSE {NOW} + ?3 END");
        let info = format!("key, owner, expiration - {NOW} AS remaining_ms, fence, metadata");
        // One more than the sequence (which the triggers advance to every fence written), and
        // at least now in ms × 1000, so it stays ahead even of a deleted database.
        let next_fence = format!(
            "max(COALESCE((SELECT n FROM {seq} WHERE id = 1), \
                          (SELECT MAX(fence) FROM {t}), 0) + 1, {NOW} * {FENCES_PER_MS})"
        );
        Sql {
            // One statement: insert, or take over an expired row.
            acquire: format!(
                "INSERT INTO {t} (key, owner, expiration, fence, metadata) \
                 VALUES (?1, ?2, {expires}, {next_fence}, ?4) \
                 ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, \
                   expiration = excluded.expiration, fence = excluded.fence, \
                   metadata = excluded.metadata \
                 WHERE {t}.expiration IS NOT NULL AND {t}.expiration <= {NOW} \
                 RETURNING fence"
            ),
            holder: format!(
                "SELECT owner, expiration - {NOW} AS remaining_ms FROM {t} WHERE key = ?1 AND {live}"
            ),
            // Deletes our row even when it has expired (nobody else holds it then), and
            // tells whether the lease was still live.
            release: format!(
                "DELETE FROM {t} WHERE key = ?1 AND owner = ?2 RETURNING {live} AS live"
            ),
            force_release: format!("DELETE FROM {t} WHERE key = ?1 RETURNING {live} AS live"),
            extend: format!(
                "UPDATE {t} SET expiration = {expires} \
                 WHERE key = ?1 AND owner = ?2 AND {live} RETURNING fence"
            ),
            set_metadata: format!(
                "UPDATE {t} SET metadata = ?3 WHERE key = ?1 AND owner = ?2 AND {live}"
            ),
            inspect: format!("SELECT {info} FROM {t} WHERE key = ?1 AND {live}"),
            // Not LIKE: SQLite's LIKE ignores ASCII case. `key >= ?1` lets the primary key
            // index start the scan; the substr comparison is exact (case and `%`, `_`, `\`).
            list: format!(
                "SELECT {info} FROM {t} \
                 WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 AND {live} ORDER BY key"
            ),
            // The expiry watcher: one statement removes the expired rows under the prefix and
            // returns them; SQLite runs one writer at a time, so each row is returned once.
            reap: format!(
                "DELETE FROM {t} \
                 WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 \
                   AND expiration IS NOT NULL AND expiration <= {NOW} \
                 RETURNING key, owner, 0 AS remaining_ms, fence, metadata"
            ),
            displaced: format!("SELECT owner, fence FROM {t} WHERE key = ?1 AND {live}"),
            // As acquire, without the condition: the row becomes ours whoever held it, with
            // a fence from the same sequence (the triggers advance it).
            take_over: format!(
                "INSERT INTO {t} (key, owner, expiration, fence, metadata) \
                 VALUES (?1, ?2, {expires}, {next_fence}, ?4) \
                 ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, \
                   expiration = excluded.expiration, fence = excluded.fence, \
                   metadata = excluded.metadata \
                 RETURNING fence",
            ),
        }
    }
}

/// `table` quoted for SQL.
fn quoted(table: &str) -> String {
    format!("\"{table}\"")
}

/// The one-row table holding the highest fence handed out.
fn sequence(table: &str) -> String {
    format!("\"{table}_fence\"")
}

/// `?1` table: its columns' `(name, type, pk)` (`pk` > 0 for the primary key's).
pub(super) const TABLE_INFO: &str = "SELECT name, type, pk FROM pragma_table_info(?1)";

/// The lock table with Verrou's columns and ours, if missing.
pub(super) fn create_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           key TEXT PRIMARY KEY NOT NULL, \
           owner TEXT NOT NULL, \
           expiration INTEGER NULL, \
           fence INTEGER NULL, \
           metadata TEXT NULL)",
        quoted(table)
    )
}

/// One of our nullable columns, added to a table that lacks it.
pub(super) fn add_column(table: &str, column: &str, ty: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {column} {ty} NULL",
        quoted(table)
    )
}

/// The fence sequence and the triggers that raise it to every fence written.
pub(super) fn fencing(table: &str) -> [String; 5] {
    let (t, seq) = (quoted(table), sequence(table));
    // An UPDATE, not an upsert: inside a trigger fired by the acquire's upsert, SQLite
    // would apply the outer statement's conflict handling to an inner INSERT OR REPLACE.
    let bump = format!("UPDATE {seq} SET n = max(n, NEW.fence) WHERE id = 1");
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {seq} (\
               id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)"
        ),
        // Never lower the sequence; raise it past any fence already in the table.
        format!(
            "INSERT INTO {seq} (id, n) SELECT 1, COALESCE(MAX(fence), 0) FROM {t} WHERE true \
             ON CONFLICT(id) DO UPDATE SET n = max(n, excluded.n)"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_fence_insert\" AFTER INSERT ON {t} \
             WHEN NEW.fence IS NOT NULL BEGIN {bump}; END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_fence_update\" AFTER UPDATE OF fence ON {t} \
             WHEN NEW.fence IS NOT NULL BEGIN {bump}; END"
        ),
        // A Verrou process taking over a row writes only owner and expiration: clear the
        // previous holder's fence and metadata so they are not reported as the new holder's.
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_foreign_takeover\" AFTER UPDATE OF owner ON {t} \
             WHEN NEW.owner IS NOT OLD.owner AND NEW.fence IS OLD.fence \
             BEGIN UPDATE {t} SET fence = NULL, metadata = NULL WHERE key = NEW.key; END"
        ),
    ]
}
