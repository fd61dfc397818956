//! The SQL text of the PostgreSQL store's operations, built once per store from its names.

use super::{Names, NOW_MS};

/// SQL text, built once per store.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) acquire: String,
    pub(super) release: String,
    pub(super) extend: String,
    pub(super) set_metadata: String,
    pub(super) force_release: String,
    pub(super) inspect: String,
    pub(super) list: String,
    pub(super) reap: String,
    /// The first statement of a take-over's transaction: the acquire's per-key gate.
    pub(super) take_over_gate: String,
    /// The second: read the live holder, then overwrite the row whatever its state.
    pub(super) take_over: String,
}

/// The remaining milliseconds of the held row `alias` (`NULL`: never expires), by the
/// statement's `clock c`.
fn held_remaining(alias: &str) -> String {
    format!("CASE WHEN {alias}.expiration IS NULL THEN NULL ELSE GREATEST({alias}.expiration - c.now_ms, 0) END")
}

impl Sql {
    pub(super) fn new(n: &Names) -> Sql {
        let t = &n.qualified;
        let live = format!("(expiration IS NULL OR expiration > {NOW_MS})");
        let remaining = |now: &str| {
            format!(
                "CASE WHEN expiration IS NULL THEN NULL ELSE GREATEST(expiration - {now}, 0) END"
            )
        };
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
                seq = n.sequence_regclass,
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
            // $1 key, $2 owner, $3 metadata.
            set_metadata: format!(
                "UPDATE {t} SET metadata = $3 WHERE \"key\" = $1 AND owner = $2 AND {live}"
            ),
            // $1 key, $2 channel.
            force_release: format!(
                "WITH d AS (DELETE FROM {t} WHERE \"key\" = $1 RETURNING \"key\", {live} AS live, waiting) \
                 SELECT live, CASE WHEN waiting THEN pg_notify($2, \"key\") END::text FROM d"
            ),
            inspect: format!(
                "SELECT \"key\"::text, owner::text, {rem}, fence, metadata FROM {t} WHERE \"key\" = $1 AND {live}",
                rem = remaining(NOW_MS)
            ),
            list: format!(
                "SELECT \"key\"::text, owner::text, {rem}, fence, metadata FROM {t} \
                 WHERE \"key\" LIKE $1 ESCAPE '!' AND {live} ORDER BY \"key\" COLLATE \"C\"",
                rem = remaining(NOW_MS)
            ),
            // The expiry watcher: one DELETE … RETURNING. A concurrent DELETE of the same row
            // waits for ours and then finds it gone, and an acquire that took the row over
            // first makes it live again: each expired row is returned to one caller only.
            reap: format!(
                "DELETE FROM {t} WHERE \"key\" LIKE $1 ESCAPE '!' \
                   AND expiration IS NOT NULL AND expiration <= {NOW_MS} \
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
                seq = n.sequence_regclass,
            ),
        }
    }
}
