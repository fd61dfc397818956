//! All SQL text of the PostgreSQL store: the names of its objects, the catalog queries and
//! DDL of `schema.rs`, and the lease-row statements of `lease.rs`, built once per store from
//! the validated names.

use crate::stores::sql;
use crate::stores::sql::lease::Common;

/// The database's clock at statement start, in epoch milliseconds.
const NOW_MS: &str = "(extract(epoch FROM now()) * 1000)::bigint";

/// The connection's schema, when the options name none.
pub(super) const CURRENT_SCHEMA: &str = "SELECT current_schema()::text";

/// `$1` schema, `$2` table: the table's `(column, data type)`s; none if it does not exist.
pub(super) const COLUMNS: &str =
    "SELECT column_name::text, data_type::text FROM information_schema.columns \
     WHERE table_schema = $1 AND table_name = $2";

/// `$1` a sequence's or table's qualified name: whether it exists.
pub(super) const SEQUENCE_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";

/// `$1` table: serializes table setup within a transaction (the lock Verrou's Knex adapter
/// takes around its own creation).
pub(super) const SETUP_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

/// Names of the objects the store uses, quoted where SQL needs it.
#[derive(Debug)]
pub(crate) struct Names {
    pub(super) schema: String,
    pub(super) table: String,
    /// `"schema"."table"`.
    pub(super) qualified: String,
    /// `schema.table`, for messages.
    pub(super) display: String,
    /// The sequence's bare name.
    pub(super) sequence: String,
    /// `"schema"."sequence"`, also as text for `to_regclass` and `nextval`.
    pub(super) sequence_qualified: String,
    /// The NOTIFY channel.
    pub(super) channel: String,
    /// `"schema"."table_holders"`: the holders of keys held by readers or permits (also
    /// as text for `to_regclass`).
    pub(super) holders: String,
}

impl Names {
    /// The names for `table` in `schema` (both validated identifiers).
    pub(super) fn new(schema: &str, table: &str) -> Names {
        let sequence = sql::derived_name(table, "_fence_seq", 63);
        let display = format!("{schema}.{table}");
        let channel = if display.len() + 8 <= 63 {
            format!("cadenas.{display}")
        } else {
            format!("cadenas.{:016x}", sql::fnv1a(&display))
        };
        let holders = sql::derived_name(table, "_holders", 63);
        Names {
            holders: format!("\"{schema}\".\"{holders}\""),
            schema: schema.to_owned(),
            table: table.to_owned(),
            qualified: format!("\"{schema}\".\"{table}\""),
            sequence_qualified: format!("\"{schema}\".\"{sequence}\""),
            sequence,
            display,
            channel,
        }
    }
}

/// The lock table with Verrou's columns and ours.
pub(super) fn create_table(n: &Names, unlogged: bool) -> String {
    format!(
        "CREATE {}TABLE IF NOT EXISTS {} (\
         \"key\" varchar(255) NOT NULL PRIMARY KEY, \
         \"owner\" varchar(255) NOT NULL, \
         \"expiration\" bigint NULL, \
         \"fence\" bigint NULL, \
         \"metadata\" text NULL, \
         \"waiting\" boolean NULL, \
         \"kind\" text NULL, \
         \"permits\" integer NULL, \
         \"waiter\" varchar(255) NULL, \
         \"waiter_expiration\" bigint NULL)",
        if unlogged { "UNLOGGED " } else { "" },
        n.qualified
    )
}

/// The holders of keys held by readers or permits (`crate::stores::sql::group`).
pub(super) fn create_holders(n: &Names, unlogged: bool) -> String {
    format!(
        "CREATE {}TABLE IF NOT EXISTS {} (\
         \"key\" varchar(255) NOT NULL, \
         \"owner\" varchar(255) NOT NULL, \
         \"expiration\" bigint NULL, \
         \"fence\" bigint NULL, \
         \"metadata\" text NULL, \
         PRIMARY KEY (\"key\", \"owner\"))",
        if unlogged { "UNLOGGED " } else { "" },
        n.holders
    )
}

/// One of our nullable columns, added to a table that lacks it.
pub(super) fn add_column(n: &Names, column: &str, ty: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS \"{column}\" {ty} NULL",
        n.qualified
    )
}

/// The fence sequence.
pub(super) fn create_sequence(n: &Names) -> String {
    format!("CREATE SEQUENCE IF NOT EXISTS {}", n.sequence_qualified)
}

/// The lease-row statements, built once per store.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) acquire: String,
    pub(super) release: String,
    pub(super) extend: String,
    pub(super) force_release: String,
    pub(super) reap: String,
    /// The first statement of a take-over's transaction: the acquire's per-key gate.
    pub(super) take_over_gate: String,
    /// The second: read the live holder, then overwrite the row whatever its state.
    pub(super) take_over: String,
    /// The statements of keys held by readers or permits.
    pub(super) group: GroupSql,
}

/// A row is live until its expiration passes by the statement's clock.
fn live() -> String {
    format!("(expiration IS NULL OR expiration > {NOW_MS})")
}

/// The statements of the operations alike in every dialect.
pub(super) fn common(n: &Names) -> Common {
    let (t, live) = (&n.qualified, live());
    Common {
        set_metadata: format!(
            "UPDATE {t} SET metadata = $1 WHERE \"key\" = $2 AND owner = $3 AND {live}"
        ),
    }
}

/// The remaining milliseconds of the held row `alias` (`NULL`: never expires), by the
/// statement's `clock c`.
fn held_remaining(alias: &str) -> String {
    format!("CASE WHEN {alias}.expiration IS NULL THEN NULL ELSE GREATEST({alias}.expiration - c.now_ms, 0) END")
}

impl Sql {
    pub(super) fn new(n: &Names) -> Sql {
        let (t, live) = (&n.qualified, live());
        Sql {
            // $1 key, $2 owner, $3 ttl ms, $4 metadata, $5 lock class (schema.table).
            // A free key is inserted; an expired one is taken over (keeping its `waiting`
            // flag: whoever waited for the old lease still waits); a live one is marked
            // `waiting` once, so that its release notifies. `took` tells the cases apart.
            acquire: format!(
                "WITH gate AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext($5), hashtext($1)) AS g), \
                 clock AS MATERIALIZED (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms, \
                   nextval('{seq}') AS fence FROM gate), \
                 ins AS (INSERT INTO {t} AS l (\"key\", owner, expiration, fence, metadata) \
                   SELECT $1, $2, clock.now_ms + $3::bigint, clock.fence, $4::text FROM clock \
                   ON CONFLICT (\"key\") DO UPDATE SET \
                     owner = CASE WHEN {expired} THEN EXCLUDED.owner ELSE l.owner END, \
                     expiration = CASE WHEN {expired} THEN EXCLUDED.expiration ELSE l.expiration END, \
                     fence = CASE WHEN {expired} THEN EXCLUDED.fence ELSE l.fence END, \
                     metadata = CASE WHEN {expired} THEN EXCLUDED.metadata ELSE l.metadata END, \
                     waiting = CASE WHEN {expired} THEN l.waiting ELSE true END \
                   WHERE {expired} OR l.waiting IS NOT TRUE \
                   RETURNING l.fence, l.owner, l.expiration, l.fence = (SELECT fence FROM clock) AS took) \
                 SELECT CASE WHEN i.took THEN i.fence END, CASE WHEN i.took THEN NULL ELSE i.owner::text END, \
                   CASE WHEN i.took THEN NULL ELSE {rem_i} END FROM ins i, clock c \
                 UNION ALL \
                 SELECT NULL, h.owner::text, {rem_h} FROM {t} h, clock c \
                   WHERE h.\"key\" = $1 AND NOT EXISTS (SELECT 1 FROM ins)",
                seq = n.sequence_qualified,
                expired = "(l.expiration IS NOT NULL AND l.expiration <= (SELECT now_ms FROM clock))",
                rem_i = held_remaining("i"),
                rem_h = held_remaining("h"),
            ),
            // $1 key, $2 owner, $3 channel. Notifies only if someone found the lock held.
            release: format!(
                "WITH d AS (DELETE FROM {t} WHERE \"key\" = $1 AND owner = $2 AND {live} RETURNING \"key\", waiting) \
                 SELECT CASE WHEN waiting THEN pg_notify($3, \"key\") END::text FROM d"
            ),
            // $1 key, $2 owner, $3 ttl ms.
            extend: format!(
                "UPDATE {t} SET expiration = {NOW_MS} + $3::bigint \
                 WHERE \"key\" = $1 AND owner = $2 AND {live} RETURNING fence"
            ),
            // $1 key, $2 channel.
            force_release: format!(
                "WITH d AS (DELETE FROM {t} WHERE \"key\" = $1 RETURNING \"key\", {live} AS live, waiting) \
                 SELECT live, CASE WHEN waiting THEN pg_notify($2, \"key\") END::text FROM d"
            ),
            // The expiry watcher: one DELETE … RETURNING. A concurrent DELETE of the same row
            // waits for ours and then finds it gone, and an acquire that took the row over
            // first makes it live again: each expired row is returned to one caller only.
            reap: format!(
                "DELETE FROM {t} WHERE \"key\" LIKE $1 ESCAPE '!' \
                   AND expiration IS NOT NULL AND expiration <= {NOW_MS} AND owner <> '{GROUP}' \
                 RETURNING \"key\"::text, owner::text, 0::bigint, fence, metadata"
            ),
            // $1 key, $2 lock class (schema.table): the advisory lock acquire takes, held
            // until the take-over commits, so the fence drawn next is above every fence an
            // acquire or take-over of the key handed out before.
            take_over_gate: "SELECT pg_advisory_xact_lock(hashtext($2), hashtext($1))".into(),
            // $1 key, $2 owner, $3 ttl ms, $4 metadata. Run after the gate, so its snapshot
            // sees every take-over and acquire that committed before. `old` locks the live
            // row (a release or extend waits) and is read before the insert writes it: the
            // insert selects from it. `waiting` is kept: whoever waited still waits.
            take_over: format!(
                "WITH clock AS MATERIALIZED (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms, \
                   nextval('{seq}') AS fence), \
                 old AS MATERIALIZED (SELECT o.owner::text AS owner, o.fence FROM {t} o, clock c \
                   WHERE o.\"key\" = $1 AND (o.expiration IS NULL OR o.expiration > c.now_ms) FOR UPDATE OF o), \
                 ins AS (INSERT INTO {t} AS l (\"key\", owner, expiration, fence, metadata) \
                   SELECT $1, $2, clock.now_ms + $3::bigint, clock.fence, $4::text FROM clock LEFT JOIN old ON true \
                   ON CONFLICT (\"key\") DO UPDATE SET owner = EXCLUDED.owner, \
                     expiration = EXCLUDED.expiration, fence = EXCLUDED.fence, metadata = EXCLUDED.metadata \
                   RETURNING l.fence) \
                 SELECT i.fence, o.owner, o.fence FROM ins i LEFT JOIN old o ON true",
                seq = n.sequence_qualified,
            ),
            group: GroupSql::new(n),
        }
    }
}

/// The database's clock now (not at the transaction's start), in epoch milliseconds: what
/// the statements of a group's transactions judge expiry by.
const CLOCK_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Opens lease mode's transactions of several statements (a group operation, a take-over,
/// the expiry watcher's sweep) in one round trip, as a plain `BEGIN` does, with
/// `idle_in_transaction_session_timeout` set to 2 s for the transaction. Those transactions
/// hold the key's advisory lock or row locks between their statements: a client whose
/// process is paused or whose network is cut in the middle of one would otherwise hold up
/// every operation on the key until its connection died (minutes, for a cut network). After
/// 2 s idle the server ends its session and rolls the transaction back; a running client
/// is idle there for one round trip.
pub(super) const BEGIN: &str = "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 2000";

/// The owner of a group's row (`crate::stores::sql::group`).
const GROUP: &str = sql::group::GROUP_OWNER;

/// The statements of keys held by a group (`crate::stores::sql::group`), run in one
/// transaction per operation, after the acquire's per-key advisory lock where they change the
/// key's row. Each statement numbers its own parameters, given in its comment.
#[derive(Debug)]
pub(super) struct GroupSql {
    /// $1 key, $2 owner: removes the key's expired holders and reads the key's row, locked:
    /// owner, live, kind, permits, whether another writer's marker lives, the marker's owner
    /// and remaining ms, the row's remaining ms, its `waiting` flag, how many holders live
    /// and how many of them are `$2`. One statement after the gate's, so its snapshot sees
    /// every operation on the key that took the gate before this one.
    pub(super) state: String,
    /// $1 key, $2 owner, $3 ttl ms, $4 metadata: adds a holder with the next fence and
    /// pushes the group row's expiration to the holder's.
    pub(super) join: String,
    /// $1 key, $2 ttl ms, $3 kind, $4 permits: removes the holders of an earlier group and
    /// makes the key's row a new group's, keeping the `waiting` flag and another writer's
    /// marker.
    pub(super) open: String,
    /// $1 key: flags the row `waiting`, so that its releases notify.
    pub(super) flag_waiting: String,
    /// $1 key: flags the row `waiting` and reads the holder that ends first (owner,
    /// remaining ms).
    pub(super) refuse: String,
    /// $1 key: the holder that ends first (owner, remaining ms).
    pub(super) first: String,
    /// $1 key, $2 owner: removes the holder; whether its lease was live in a group, and the
    /// group row's `waiting` flag.
    pub(super) leave: String,
    /// $1 key: removes the group row when no holder and no waiting writer's marker lives.
    pub(super) close: String,
    /// $1 key: sets the group row's expiration to its latest live holder's (now if none).
    pub(super) refresh: String,
    /// $1 key, $2 owner, $3 ttl ms: the holder's new lease; returns its fence.
    pub(super) extend: String,
    /// $1 metadata, $2 key, $3 owner: the holder's metadata.
    pub(super) set_metadata: String,
    /// $1 key, $2 owner, $3 lease ms: records a waiting writer's marker on a held key
    /// (unless another writer's lives) and flags it `waiting`; returns the row's owner and
    /// remaining ms.
    pub(super) mark_writer: String,
    /// $1 key: removes every holder; one row per holder, whether it was live.
    pub(super) drop_members: String,
    /// $1 key: a live group's first holder (owner, fence), for a take-over.
    pub(super) displaced_member: String,
    /// $1 channel, $2 key: wakes the key's waiters.
    pub(super) notify: String,
    /// $1 `LIKE` pattern: expired holders, removed and returned.
    pub(super) reap_members: String,
    /// $1 `LIKE` pattern: group rows with no live holder and no live marker, removed.
    pub(super) reap_groups: String,
    /// $1 key: the key's row joined with its live holders.
    pub(super) inspect: String,
    /// $1 `LIKE` pattern: every live row under it joined with its live holders.
    pub(super) list: String,
}

impl GroupSql {
    pub(super) fn new(n: &Names) -> GroupSql {
        let (t, h, seq) = (&n.qualified, &n.holders, &n.sequence_qualified);
        let live = format!("(expiration IS NULL OR expiration > {CLOCK_MS})");
        let rem = format!(
            "CASE WHEN expiration IS NULL THEN NULL ELSE GREATEST(expiration - {CLOCK_MS}, 0) END"
        );
        let marked = format!("COALESCE(waiter_expiration > {CLOCK_MS}, false)");
        let in_group = |k: &str| {
            format!("EXISTS (SELECT 1 FROM {t} WHERE \"key\" = {k} AND owner = '{GROUP}')")
        };
        let joined = format!(
            "SELECT l.\"key\"::text, l.owner::text, \
               CASE WHEN l.expiration IS NULL THEN NULL ELSE GREATEST(l.expiration - {NOW_MS}, 0) END, \
               l.fence, l.metadata, l.kind, l.permits::bigint, h.owner::text, \
               CASE WHEN h.expiration IS NULL THEN NULL ELSE GREATEST(h.expiration - {NOW_MS}, 0) END, \
               h.fence, h.metadata \
             FROM {t} l LEFT JOIN {h} h ON l.owner = '{GROUP}' AND h.\"key\" = l.\"key\" \
               AND (h.expiration IS NULL OR h.expiration > {NOW_MS}) \
             WHERE (l.expiration IS NULL OR l.expiration > {NOW_MS})"
        );
        let pattern = "LIKE $1 ESCAPE '!'";
        let first = format!(
            "SELECT owner::text, {rem} FROM {h} WHERE \"key\" = $1 AND {live} \
             ORDER BY expiration IS NULL, expiration LIMIT 1"
        );
        GroupSql {
            // The holders counted are the live ones, so the count needs no snapshot that
            // sees the prune's deletes.
            state: format!(
                "WITH pruned AS (DELETE FROM {h} WHERE \"key\" = $1 \
                   AND expiration IS NOT NULL AND expiration <= {CLOCK_MS}) \
                 SELECT owner::text, {live}, kind, permits::bigint, \
                   waiter IS NOT NULL AND waiter IS DISTINCT FROM $2 \
                     AND waiter IS DISTINCT FROM owner AND {marked}, \
                   waiter::text, GREATEST(waiter_expiration - {CLOCK_MS}, 0), {rem}, waiting, \
                   (SELECT COUNT(*) FROM {h} WHERE \"key\" = $1 AND {live}), \
                   (SELECT COUNT(*) FROM {h} WHERE \"key\" = $1 AND owner = $2 AND {live}) \
                 FROM {t} WHERE \"key\" = $1 FOR UPDATE"
            ),
            join: format!(
                "WITH stretched AS (UPDATE {t} SET expiration = \
                   CASE WHEN expiration IS NULL OR $3::bigint IS NULL THEN NULL \
                   ELSE GREATEST(expiration, {CLOCK_MS} + $3::bigint) END \
                   WHERE \"key\" = $1 AND owner = '{GROUP}') \
                 INSERT INTO {h} (\"key\", owner, expiration, fence, metadata) \
                 VALUES ($1, $2, {CLOCK_MS} + $3::bigint, nextval('{seq}'), $4::text) \
                 ON CONFLICT (\"key\", owner) DO UPDATE SET expiration = EXCLUDED.expiration, \
                   fence = EXCLUDED.fence, metadata = EXCLUDED.metadata \
                 RETURNING fence"
            ),
            open: format!(
                "WITH dropped AS (DELETE FROM {h} WHERE \"key\" = $1) \
                 INSERT INTO {t} AS l (\"key\", owner, expiration, fence, metadata, kind, permits) \
                 VALUES ($1, '{GROUP}', {CLOCK_MS} + $2::bigint, NULL, NULL, $3::text, $4::integer) \
                 ON CONFLICT (\"key\") DO UPDATE SET owner = '{GROUP}', \
                   expiration = EXCLUDED.expiration, fence = NULL, metadata = NULL, \
                   kind = EXCLUDED.kind, permits = EXCLUDED.permits, \
                   waiter = CASE WHEN l.waiter IS NOT DISTINCT FROM l.owner THEN NULL ELSE l.waiter END, \
                   waiter_expiration = CASE WHEN l.waiter IS NOT DISTINCT FROM l.owner THEN NULL \
                     ELSE l.waiter_expiration END"
            ),
            flag_waiting: format!(
                "UPDATE {t} SET waiting = true WHERE \"key\" = $1 AND waiting IS NOT TRUE"
            ),
            refuse: format!(
                "WITH flagged AS (UPDATE {t} SET waiting = true \
                   WHERE \"key\" = $1 AND waiting IS NOT TRUE) {first}"
            ),
            first,
            leave: format!(
                "DELETE FROM {h} WHERE \"key\" = $1 AND owner = $2 \
                 RETURNING {live} AND {}, (SELECT waiting FROM {t} WHERE \"key\" = $1)",
                in_group("$1")
            ),
            close: format!(
                "DELETE FROM {t} WHERE \"key\" = $1 AND owner = '{GROUP}' AND NOT {marked} \
                   AND NOT EXISTS (SELECT 1 FROM {h} WHERE \"key\" = $1 AND {live})"
            ),
            refresh: format!(
                "UPDATE {t} SET expiration = (\
                   SELECT CASE WHEN COUNT(*) = 0 THEN {CLOCK_MS} \
                     WHEN COUNT(expiration) < COUNT(*) THEN NULL ELSE MAX(expiration) END \
                   FROM {h} WHERE \"key\" = $1 AND {live}) \
                 WHERE \"key\" = $1 AND owner = '{GROUP}'"
            ),
            extend: format!(
                "UPDATE {h} SET expiration = {CLOCK_MS} + $3::bigint \
                 WHERE \"key\" = $1 AND owner = $2 AND {live} AND {} RETURNING fence",
                in_group("$1")
            ),
            set_metadata: format!(
                "UPDATE {h} SET metadata = $1 WHERE \"key\" = $2 AND owner = $3 AND {live} AND {}",
                in_group("$2")
            ),
            mark_writer: format!(
                "UPDATE {t} SET waiter = $2, waiter_expiration = {CLOCK_MS} + $3::bigint, waiting = true \
                 WHERE \"key\" = $1 AND {live} \
                   AND (waiter IS NULL OR waiter = $2 OR waiter IS NOT DISTINCT FROM owner OR NOT {marked}) \
                 RETURNING owner::text, {rem}"
            ),
            drop_members: format!("DELETE FROM {h} WHERE \"key\" = $1 RETURNING {live}"),
            displaced_member: format!(
                "SELECT owner::text, fence FROM {h} WHERE \"key\" = $1 AND {live} \
                   AND EXISTS (SELECT 1 FROM {t} WHERE \"key\" = $1 AND owner = '{GROUP}' AND {live}) \
                 ORDER BY fence LIMIT 1"
            ),
            notify: "SELECT pg_notify($1, $2)::text".into(),
            reap_members: format!(
                "DELETE FROM {h} WHERE \"key\" {pattern} \
                   AND expiration IS NOT NULL AND expiration <= {NOW_MS} \
                 RETURNING \"key\"::text, owner::text, 0::bigint, fence, metadata"
            ),
            reap_groups: format!(
                "DELETE FROM {t} WHERE \"key\" {pattern} AND owner = '{GROUP}' \
                   AND expiration IS NOT NULL AND expiration <= {NOW_MS} \
                   AND NOT COALESCE(waiter_expiration > {NOW_MS}, false)"
            ),
            inspect: format!("{joined} AND l.\"key\" = $1 ORDER BY h.fence"),
            list: format!(
                "{joined} AND l.\"key\" {pattern} ORDER BY l.\"key\" COLLATE \"C\", h.fence"
            ),
        }
    }
}
