//! Rows of the lock table, and the values in them: a ttl as the table's milliseconds, the
//! remaining milliseconds the database computed, a fence column.

use std::time::Duration;

use crate::store::{Holder, LockInfo};

/// A lock as every dialect's inspect, list and reap statements return it: key, owner,
/// remaining milliseconds (`NULL`: never expires), fence, metadata.
pub(crate) type Row = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// A [`Row`] as the lock layer sees it.
pub(crate) fn lock_info(row: Row) -> LockInfo {
    let (key, owner, remaining_ms, fence_column, metadata) = row;
    LockInfo::new(
        key.unwrap_or_default(),
        owner.unwrap_or_default(),
        remaining(remaining_ms),
        fence(fence_column),
        metadata,
    )
}

/// Whoever holds a key, from its owner and remaining milliseconds (no row: unknown, it may
/// have been released since).
pub(crate) fn holder(row: Option<(Option<String>, Option<i64>)>) -> Holder {
    match row {
        Some((owner, remaining_ms)) => Holder {
            owner,
            remaining: remaining(remaining_ms),
        },
        None => Holder::default(),
    }
}

/// A ttl as the bigint milliseconds the table stores (`None` stays `None`: never expires).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|d| i64::try_from(crate::duration::ttl_millis(d)).unwrap_or(i64::MAX))
}

/// Remaining milliseconds computed by the database back into a duration.
pub(crate) fn remaining(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0) as u64))
}

/// A fence column back into a fence (rows written by Verrou have none).
pub(crate) fn fence(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        {
            assert_eq!(ttl_ms(None), None);
            assert_eq!(
                ttl_ms(Some(Duration::from_micros(1500))),
                Some(2),
                "rounded up"
            );
        }
        assert_eq!(remaining(Some(-5)), Some(Duration::ZERO));
        assert_eq!(fence(Some(0)), None);
        assert_eq!(fence(Some(7)), Some(7));
        assert_eq!(fence(None), None);
        let info = lock_info((Some("k".into()), None, None, Some(3), None));
        assert_eq!((info.key.as_str(), info.owner.as_str()), ("k", ""));
        assert_eq!((info.remaining, info.fence), (None, Some(3)));
        assert_eq!(holder(None).owner, None);
        assert_eq!(
            holder(Some((Some("o".into()), Some(5)))).remaining,
            Some(Duration::from_millis(5))
        );
    }
}
