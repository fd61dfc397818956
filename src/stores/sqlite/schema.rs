//! The SQL of the SQLite store: the table, the fence sequence, the triggers, and the
//! statements of every operation, built once per store with the (validated) table name.

use sqlx::{Row, SqlitePool};

use crate::store::{StoreError, StoreErrorKind};

/// "Now" in epoch milliseconds by SQLite's clock. `julianday` works on every SQLite with
/// `RETURNING` (3.35+); within one statement SQLite returns the same 'now' every time.
const NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// Fences are at least the time in milliseconds times this, so they stay ahead of any
/// fence handed out before, even one whose commit a power cut undid or whose database file
/// was deleted. SQLite commits far fewer than this many acquisitions per millisecond, and
/// the numbers stay below 2^53 (exact in JavaScript) until the year 2255.
const FENCES_PER_MS: i64 = 1000;

/// The columns every lock table needs (Verrou's), and the nullable ones cadenas adds.
const REQUIRED: [&str; 3] = ["key", "owner", "expiration"];
const OURS: [(&str, &str); 2] = [("fence", "INTEGER"), ("metadata", "TEXT")];

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
    /// Builds the statements for `table`, which the caller has checked with
    /// [`check_identifier`](crate::url::check_identifier).
    pub fn new(table: &str) -> Sql {
        let t = format!("\"{table}\"");
        let seq = format!("\"{table}_fence\"");
        let live = format!("(expiration IS NULL OR expiration > {NOW})");
        let expires = format!("CASE WHEN ?3 IS NULL THEN NULL ELSE {NOW} + ?3 END");
        let info = format!("key, owner, expiration - {NOW} AS remaining_ms, fence, metadata");
        // The take-over's fence, drawn as the acquire's.
        let next_fence = format!(
            "max(COALESCE((SELECT n FROM {seq} WHERE id = 1), \
                          (SELECT MAX(fence) FROM {t}), 0) + 1, {NOW} * {FENCES_PER_MS})"
        );
        Sql {
            // One statement: insert, or take over an expired row. The fence is one more
            // than the sequence (which the triggers advance to every fence written), and
            // at least now in ms × 1000, so it stays ahead even of a deleted database.
            acquire: format!(
                "INSERT INTO {t} (key, owner, expiration, fence, metadata) \
                 VALUES (?1, ?2, {expires}, \
                   max(COALESCE((SELECT n FROM {seq} WHERE id = 1), \
                                (SELECT MAX(fence) FROM {t}), 0) + 1, \
                       {NOW} * {FENCES_PER_MS}), ?4) \
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

/// Creates the table, the fence sequence and the triggers if missing, adds our nullable
/// columns to a Verrou table, and checks the columns — in one `BEGIN IMMEDIATE` transaction,
/// so two processes starting at once take turns (the busy timeout makes the second wait).
pub(super) async fn ensure(pool: &SqlitePool, table: &str) -> Result<(), Setup> {
    let t = format!("\"{table}\"");
    let seq = format!("\"{table}_fence\"");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (\
           key TEXT PRIMARY KEY NOT NULL, \
           owner TEXT NOT NULL, \
           expiration INTEGER NULL, \
           fence INTEGER NULL, \
           metadata TEXT NULL)"
    ))
    .execute(&mut *tx)
    .await?;

    let columns = sqlx::query("SELECT name, pk FROM pragma_table_info(?1)")
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
    let mut names = Vec::with_capacity(columns.len());
    let mut primary = Vec::new();
    for row in &columns {
        let name: String = row.try_get("name")?;
        let pk: i64 = row.try_get("pk")?;
        if pk > 0 {
            primary.push(name.to_ascii_lowercase());
        }
        names.push(name.to_ascii_lowercase());
    }
    for column in REQUIRED {
        if !names.iter().any(|n| n == column) {
            return Err(Setup::Rejected(format!(
                "table '{table}' has no column '{column}' (it has: {}); it is not a \
                 lock table: pick another table with ?table=NAME, or drop it",
                names.join(", ")
            )));
        }
    }
    if primary != ["key"] {
        return Err(Setup::Rejected(format!(
            "table '{table}' does not have 'key' as its primary key; it is not a \
             lock table: pick another table with ?table=NAME, or drop it"
        )));
    }
    for (column, ty) in OURS {
        if !names.iter().any(|n| n == column) {
            // A Verrou table: our columns are nullable, so Verrou keeps working.
            sqlx::query(&format!("ALTER TABLE {t} ADD COLUMN {column} {ty} NULL"))
                .execute(&mut *tx)
                .await?;
        }
    }

    // An UPDATE, not an upsert: inside a trigger fired by the acquire's upsert, SQLite
    // would apply the outer statement's conflict handling to an inner INSERT OR REPLACE.
    let bump = format!("UPDATE {seq} SET n = max(n, NEW.fence) WHERE id = 1");
    for statement in [
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
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Why setting the table up failed.
#[derive(Debug)]
pub(super) enum Setup {
    /// The driver failed.
    Sql(sqlx::Error),
    /// The table is not a lock table.
    Rejected(String),
}

impl From<sqlx::Error> for Setup {
    fn from(e: sqlx::Error) -> Self {
        Setup::Sql(e)
    }
}

impl Setup {
    /// Turns this into a store error, mapping driver errors with `map`.
    pub fn into_store_error(self, map: impl FnOnce(sqlx::Error) -> StoreError) -> StoreError {
        match self {
            Setup::Sql(e) => map(e),
            Setup::Rejected(message) => StoreError::new(StoreErrorKind::Rejected, message),
        }
    }
}
