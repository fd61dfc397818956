//! Keys held by a group (the readers of a read-write lock, the permit holders of a
//! semaphore) in a SQL lock table: what every dialect shares.
//!
//! The lock table's row of such a key is the group's mark: its `owner` is [`GROUP_OWNER`]
//! (the empty string, which no owner can be), its `kind` and `permits` columns say how the
//! key is held, and its `expiration` is the latest holder's, so that a plain acquire (and a
//! Verrou process) finds the key held exactly while some holder lives. The holders, each
//! with its own lease, fence and metadata, are rows of the holders table (`{table}_holders`,
//! primary key `(key, owner)`). A writer waiting for the key is recorded on the key's row
//! (`waiter`, `waiter_expiration`); a marker whose waiter is the row's own owner has done
//! its work (that writer took the key) and counts for nothing.

use crate::store::{Holder, HolderInfo, LockInfo, LockKind, StoreError, StoreErrorKind};

use super::rows::{fence, remaining};

/// The owner of a lock-table row that marks a key held by a group. Owners are never empty,
/// so no holder can be mistaken for it.
pub(crate) const GROUP_OWNER: &str = "";

/// `kind` as the lock table's `kind` and `permits` columns store it.
pub(crate) fn columns(kind: LockKind) -> (&'static str, Option<i64>) {
    match kind {
        LockKind::Permits(n) => ("permits", Some(i64::from(n))),
        other => (other.name(), None),
    }
}

/// The kind a group row's `kind` and `permits` columns say (a reader's for anything else).
pub(crate) fn kind(column: Option<&str>, permits: Option<i64>) -> LockKind {
    match (column, permits) {
        (Some("permits"), Some(n)) => LockKind::Permits(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => LockKind::Shared,
    }
}

/// The answer to a request of `ours` on a key whose holders use `theirs`: `Ok(true)` when
/// it may join them, `Ok(false)` when the key is held another way, the `InvalidInput` error
/// naming both counts when a semaphore is asked with another count.
pub(crate) fn may_join(theirs: LockKind, ours: LockKind) -> Result<bool, StoreError> {
    match (theirs, ours) {
        (LockKind::Permits(t), LockKind::Permits(o)) if t != o => Err(StoreError::new(
            StoreErrorKind::InvalidInput,
            format!(
                "its holders use {t} permits and this request asks for {o}; every holder of a semaphore must ask with the same count"
            ),
        )),
        (t, o) => Ok(t == o),
    }
}

/// The key's row as a group request reads it, locked in its transaction: owner, live, kind,
/// permits, whether another writer's marker lives (for this request's owner), the marker's
/// owner and remaining ms, the row's remaining ms.
pub(crate) type StateRow = (
    String,
    bool,
    Option<String>,
    Option<i64>,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// What a group request does, from the key's row.
pub(crate) enum Step {
    /// The key is held by a mutex, or (for a reader) a waiting writer's marker lives.
    Held(Holder),
    /// A live group of `theirs` holds it: prune its expired holders, count them, maybe join.
    Join(LockKind),
    /// The key is free or its lease ran out: open a new group.
    Open,
}

/// The first step of a request of `ours` on a key whose row is `state` (`None`: no row).
pub(crate) fn first_step(state: Option<StateRow>, ours: LockKind) -> Step {
    let Some((owner, live, kind_column, permits, marked, waiter, waiter_ms, remaining_ms)) = state
    else {
        return Step::Open;
    };
    if live && owner != GROUP_OWNER {
        return Step::Held(Holder {
            owner: Some(owner),
            remaining: remaining(remaining_ms),
        });
    }
    if marked && ours == LockKind::Shared {
        return Step::Held(Holder {
            owner: waiter,
            remaining: remaining(waiter_ms),
        });
    }
    if live {
        Step::Join(kind(kind_column.as_deref(), permits))
    } else {
        Step::Open
    }
}

/// Whether a request of `ours` by an owner that holds `mine` of the `count` live places of a
/// group of `theirs` gets in: the same kind, not already in, and room left.
pub(crate) fn gets_in(
    theirs: LockKind,
    ours: LockKind,
    count: i64,
    mine: i64,
) -> Result<bool, StoreError> {
    let full = matches!(ours, LockKind::Permits(n) if count >= i64::from(n));
    Ok(may_join(theirs, ours)? && mine == 0 && !full)
}

/// Whether room is left for another holder once a request of `kind` joined a group that had
/// `before` holders (`None`: it opened the group), so the next waiter should be woken.
pub(crate) fn room_left(kind: LockKind, before: Option<i64>) -> bool {
    match kind {
        LockKind::Permits(n) => before.unwrap_or(0) + 1 < i64::from(n),
        _ => true,
    }
}

/// A lock row joined with its live holders, as every dialect's inspect and list statements
/// return it: key, owner, remaining ms, fence, metadata, kind, permits, then the holder's
/// owner, remaining ms, fence and metadata (all `NULL` for a plain lock's row).
pub(crate) type JoinedRow = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// Joined rows, sorted by key, as the locks they show: a plain row as its one holder, a
/// group's rows as one [`LockInfo::group`] (a group without live holders shows nothing).
pub(crate) fn lock_infos(rows: Vec<JoinedRow>) -> Vec<LockInfo> {
    let mut out = Vec::new();
    let mut group: Option<(String, LockKind, Vec<HolderInfo>)> = None;
    for (
        key,
        owner,
        remaining_ms,
        fence_column,
        metadata,
        k,
        permits,
        h_owner,
        h_ms,
        h_fence,
        h_meta,
    ) in rows
    {
        let key = key.unwrap_or_default();
        if owner.as_deref() != Some(GROUP_OWNER) {
            out.extend(flush(group.take()));
            out.push(LockInfo::new(
                key,
                owner.unwrap_or_default(),
                remaining(remaining_ms),
                fence(fence_column),
                metadata,
            ));
            continue;
        }
        if group.as_ref().is_some_and(|(k, _, _)| *k != key) {
            out.extend(flush(group.take()));
        }
        let (_, _, holders) =
            group.get_or_insert_with(|| (key, kind(k.as_deref(), permits), Vec::new()));
        if let Some(h_owner) = h_owner {
            holders.push(HolderInfo::new(
                h_owner,
                remaining(h_ms),
                fence(h_fence),
                h_meta,
            ));
        }
    }
    out.extend(flush(group));
    out
}

fn flush(group: Option<(String, LockKind, Vec<HolderInfo>)>) -> Option<LockInfo> {
    let (key, kind, holders) = group?;
    LockInfo::group(key, kind, holders)
}

/// The holder a waiter is told about for a key whose row says `owner` with `remaining_ms`
/// left, or — for a group's row — `first`, the group's holder that ends first.
pub(crate) fn holder(
    owner: Option<String>,
    remaining_ms: Option<i64>,
    first: impl FnOnce() -> Option<(Option<String>, Option<i64>)>,
) -> Holder {
    if owner.as_deref() == Some(GROUP_OWNER) {
        return super::rows::holder(first());
    }
    Holder {
        owner,
        remaining: remaining(remaining_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [LockKind::Shared, LockKind::Permits(7)] {
            let (name, n) = columns(k);
            assert_eq!(kind(Some(name), n), k);
        }
        assert!(may_join(LockKind::Shared, LockKind::Shared).unwrap());
        assert!(!may_join(LockKind::Shared, LockKind::Permits(2)).unwrap());
        let e = may_join(LockKind::Permits(3), LockKind::Permits(5)).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::InvalidInput);
        assert!(
            e.message.contains('3') && e.message.contains('5'),
            "{}",
            e.message
        );
    }

    #[test]
    fn joined_rows_group_by_key() {
        let plain = |k: &str| -> JoinedRow {
            (
                Some(k.into()),
                Some("o".into()),
                Some(5),
                Some(1),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            )
        };
        let member = |k: &str, o: &str, f: i64| -> JoinedRow {
            (
                Some(k.into()),
                Some(GROUP_OWNER.into()),
                Some(9),
                None,
                None,
                Some("permits".into()),
                Some(3),
                Some(o.into()),
                Some(4),
                Some(f),
                None,
            )
        };
        let infos = lock_infos(vec![
            plain("a"),
            member("b", "x", 3),
            member("b", "y", 2),
            plain("c"),
        ]);
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[1].kind, LockKind::Permits(3));
        assert_eq!(infos[1].owner, "y", "the lowest fence first");
        assert_eq!(infos[1].holders.len(), 2);
        assert_eq!(infos[2].key, "c");
    }
}
