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

/// The owner of a group's row (`crate::stores::sql::group`).
const GROUP: &str = crate::stores::sql::group::GROUP_OWNER;

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
    /// The take-over's displaced holder when the key is held by a group: its first holder.
    pub displaced_member: String,
    /// Removes every holder of a key (force release, take-over).
    pub drop_members: String,
    /// Expired holders under a prefix, removed and returned (the expiry watcher).
    pub reap_members: String,
    /// Expired group rows under a prefix whose writer marker is gone too, removed.
    pub reap_groups: String,
    /// The statements of keys held by readers or permits.
    pub group: GroupSql,
}

/// The statements of keys held by a group (`crate::stores::sql::group`), run in one
/// `BEGIN IMMEDIATE` transaction per operation.
#[derive(Debug)]
pub(super) struct GroupSql {
    /// The key's row as a group request sees it: owner, live, kind, permits, whether another
    /// writer's marker lives (for owner `?2`), the marker's owner and remaining ms, the
    /// row's remaining ms.
    pub state: String,
    /// Removes the key's expired holders.
    pub prune: String,
    /// How many holders the key has, and whether `?2` is one.
    pub count: String,
    /// Adds holder `?2` with the next fence; returns it.
    pub join: String,
    /// Makes the key's row a group's (`?5` kind, `?6` permits), keeping another writer's
    /// marker.
    pub open: String,
    /// Pushes the group row's expiration to a new holder's (`?3` ms).
    pub stretch: String,
    /// The holder that ends first (owner, remaining ms).
    pub first: String,
    /// Removes holder `?2`; returns whether its lease was live in a live group.
    pub leave: String,
    /// Removes the group row when no holder lives and no marker of a waiting writer does.
    pub close: String,
    /// Sets the group row's expiration to its latest live holder's (now when none lives).
    pub refresh: String,
    /// Sets holder `?2`'s lease to `?3` ms from now; returns its fence.
    pub extend: String,
    /// Sets holder `?2`'s metadata to `?3`.
    pub set_metadata: String,
    /// Records writer `?2`'s marker for `?3` ms on a held key, unless another writer's lives;
    /// returns the row's owner and remaining ms.
    pub mark_writer: String,
}

impl Sql {
    /// Builds the statements for `table`, a checked identifier.
    pub fn new(table: &str) -> Sql {
        let (t, h) = (quoted(table), holders(table));
        let live = format!("(expiration IS NULL OR expiration > {NOW})");
        let expires = format!("CASE WHEN ?3 IS NULL THEN NULL ELSE {NOW} + ?3 END");
        let live_t = format!("(t.expiration IS NULL OR t.expiration > {NOW})");
        // A plain row alone; a group's row once per live holder.
        let joined = format!(
            "SELECT t.key, t.owner, t.expiration - {NOW}, t.fence, t.metadata, t.kind, t.permits, \
                    h.owner, h.expiration - {NOW}, h.fence, h.metadata \
             FROM {t} AS t LEFT JOIN {h} AS h ON t.owner = '{GROUP}' AND h.key = t.key \
               AND (h.expiration IS NULL OR h.expiration > {NOW})"
        );
        let next_fence = next_fence(table);
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
            inspect: format!("{joined} WHERE t.key = ?1 AND {live_t} ORDER BY h.fence"),
            // Not LIKE: SQLite's LIKE ignores ASCII case. `key >= ?1` lets the primary key
            // index start the scan; the substr comparison is exact (case and `%`, `_`, `\`).
            list: format!(
                "{joined} WHERE t.key >= ?1 AND substr(t.key, 1, length(?1)) = ?1 AND {live_t} \
                 ORDER BY t.key, h.fence"
            ),
            // The expiry watcher: one statement removes the expired rows under the prefix and
            // returns them (a group's row is not a holder: its holders are reaped from the
            // holders table); SQLite runs one writer at a time, so each row is returned once.
            reap: format!(
                "DELETE FROM {t} \
                 WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 \
                   AND expiration IS NOT NULL AND expiration <= {NOW} AND owner <> '{GROUP}' \
                 RETURNING key, owner, 0 AS remaining_ms, fence, metadata"
            ),
            reap_members: format!(
                "DELETE FROM {h} \
                 WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 \
                   AND expiration IS NOT NULL AND expiration <= {NOW} \
                 RETURNING key, owner, 0 AS remaining_ms, fence, metadata"
            ),
            reap_groups: format!(
                "DELETE FROM {t} \
                 WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 AND owner = '{GROUP}' \
                   AND expiration IS NOT NULL AND expiration <= {NOW} \
                   AND NOT COALESCE(waiter_expiration > {NOW}, false)"
            ),
            displaced_member: format!(
                "SELECT owner, fence FROM {h} WHERE key = ?1 AND {live} ORDER BY fence LIMIT 1"
            ),
            drop_members: format!("DELETE FROM {h} WHERE key = ?1 RETURNING {live} AS live"),
            group: GroupSql::new(table),
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

impl GroupSql {
    /// Builds the group statements for `table`, a checked identifier.
    fn new(table: &str) -> GroupSql {
        let (t, h) = (quoted(table), holders(table));
        let live = format!("(expiration IS NULL OR expiration > {NOW})");
        let expires = format!("CASE WHEN ?3 IS NULL THEN NULL ELSE {NOW} + ?3 END");
        let in_group = format!("EXISTS (SELECT 1 FROM {t} WHERE key = ?1 AND owner = '{GROUP}')");
        let marked = format!("COALESCE(waiter_expiration > {NOW}, false)");
        GroupSql {
            state: format!(
                "SELECT owner, {live}, kind, permits, \
                   waiter IS NOT NULL AND waiter IS NOT ?2 AND waiter IS NOT owner AND {marked}, \
                   waiter, waiter_expiration - {NOW}, expiration - {NOW} \
                 FROM {t} WHERE key = ?1"
            ),
            prune: format!(
                "DELETE FROM {h} WHERE key = ?1 AND expiration IS NOT NULL AND expiration <= {NOW}"
            ),
            count: format!(
                "SELECT COUNT(*), COALESCE(SUM(owner = ?2), 0) FROM {h} WHERE key = ?1 AND {live}"
            ),
            join: format!(
                "INSERT INTO {h} (key, owner, expiration, fence, metadata) \
                 VALUES (?1, ?2, {expires}, {}, ?4) \
                 ON CONFLICT(key, owner) DO UPDATE SET expiration = excluded.expiration, \
                   fence = excluded.fence, metadata = excluded.metadata \
                 RETURNING fence",
                next_fence(table)
            ),
            // A marker whose waiter owned the row has done its work: it goes.
            open: format!(
                "INSERT INTO {t} (key, owner, expiration, fence, metadata, kind, permits) \
                 VALUES (?1, '{GROUP}', {expires}, NULL, NULL, ?5, ?6) \
                 ON CONFLICT(key) DO UPDATE SET owner = '{GROUP}', \
                   expiration = excluded.expiration, fence = NULL, metadata = NULL, \
                   kind = excluded.kind, permits = excluded.permits, \
                   waiter = CASE WHEN waiter IS owner THEN NULL ELSE waiter END, \
                   waiter_expiration = CASE WHEN waiter IS owner THEN NULL ELSE waiter_expiration END"
            ),
            stretch: format!(
                "UPDATE {t} SET expiration = CASE WHEN expiration IS NULL OR ?3 IS NULL THEN NULL \
                   ELSE max(expiration, {NOW} + ?3) END \
                 WHERE key = ?1 AND owner = '{GROUP}'"
            ),
            first: format!(
                "SELECT owner, expiration - {NOW} FROM {h} WHERE key = ?1 AND {live} \
                 ORDER BY expiration IS NULL, expiration LIMIT 1"
            ),
            leave: format!(
                "DELETE FROM {h} WHERE key = ?1 AND owner = ?2 RETURNING {live} AND {in_group}"
            ),
            close: format!(
                "DELETE FROM {t} WHERE key = ?1 AND owner = '{GROUP}' AND NOT {marked} \
                   AND NOT EXISTS (SELECT 1 FROM {h} WHERE key = ?1 AND {live})"
            ),
            refresh: format!(
                "UPDATE {t} SET expiration = (\
                   SELECT CASE WHEN COUNT(*) = 0 THEN {NOW} \
                     WHEN COUNT(expiration) < COUNT(*) THEN NULL ELSE MAX(expiration) END \
                   FROM {h} WHERE key = ?1 AND {live}) \
                 WHERE key = ?1 AND owner = '{GROUP}'"
            ),
            extend: format!(
                "UPDATE {h} SET expiration = {expires} \
                 WHERE key = ?1 AND owner = ?2 AND {live} AND {in_group} RETURNING fence"
            ),
            set_metadata: format!(
                "UPDATE {h} SET metadata = ?3 WHERE key = ?1 AND owner = ?2 AND {live} AND {in_group}"
            ),
            mark_writer: format!(
                "UPDATE {t} SET waiter = ?2, waiter_expiration = {NOW} + ?3 \
                 WHERE key = ?1 AND {live} \
                   AND (waiter IS NULL OR waiter = ?2 OR waiter IS owner OR NOT {marked}) \
                 RETURNING owner, expiration - {NOW}"
            ),
        }
    }
}

/// The fence of a new holding: one more than the sequence (which the triggers advance to
/// every fence written), and at least now in ms × 1000, so it stays ahead even of a deleted
/// database.
fn next_fence(table: &str) -> String {
    let (t, seq) = (quoted(table), sequence(table));
    format!(
        "max(COALESCE((SELECT n FROM {seq} WHERE id = 1), \
                      (SELECT MAX(fence) FROM {t}), 0) + 1, {NOW} * {FENCES_PER_MS})"
    )
}

/// The holders of keys held by a group.
fn holders(table: &str) -> String {
    format!("\"{table}_holders\"")
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
           metadata TEXT NULL, \
           kind TEXT NULL, \
           permits INTEGER NULL, \
           waiter TEXT NULL, \
           waiter_expiration INTEGER NULL)",
        quoted(table)
    )
}

/// The holders of keys held by readers or permits, if missing.
pub(super) fn create_holders(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           key TEXT NOT NULL, \
           owner TEXT NOT NULL, \
           expiration INTEGER NULL, \
           fence INTEGER NULL, \
           metadata TEXT NULL, \
           PRIMARY KEY (key, owner))",
        holders(table)
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
pub(super) fn fencing(table: &str) -> [String; 7] {
    let (t, seq, h) = (quoted(table), sequence(table), holders(table));
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
            "INSERT INTO {seq} (id, n) \
             SELECT 1, max(COALESCE((SELECT MAX(fence) FROM {t}), 0), \
                           COALESCE((SELECT MAX(fence) FROM {h}), 0)) WHERE true \
             ON CONFLICT(id) DO UPDATE SET n = max(n, excluded.n)"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_holders_fence_insert\" AFTER INSERT ON {h} \
             WHEN NEW.fence IS NOT NULL BEGIN {bump}; END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{table}_holders_fence_update\" \
             AFTER UPDATE OF fence ON {h} WHEN NEW.fence IS NOT NULL BEGIN {bump}; END"
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
