//! Pieces shared by the PostgreSQL and MySQL stores: URL option handling, conversions
//! between durations and the table's epoch-millisecond columns, `LIKE` escaping, derived
//! object names and the mapping of driver errors to [`StoreError`] kinds.

use std::time::Duration;

use crate::error::Error;
use crate::store::{StoreError, StoreErrorKind};
use crate::url::StoreUrl;

/// The default table, shared with Verrou's layout (DESIGN §6).
pub(crate) const DEFAULT_TABLE: &str = "cadenas_locks";

/// Default number of pooled connections when the store builds its own pool.
pub(crate) const DEFAULT_POOL_SIZE: u32 = 10;

/// Default time to wait for a pooled connection before an operation fails as `Transient`.
pub(crate) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options every SQL store takes from its URL, besides the table.
pub(crate) const POOL_OPTIONS: &[&str] = &["pool_size", "acquire_timeout", "test_before_acquire"];

/// The store's own options and the URL to hand to the driver.
pub(crate) struct SplitUrl {
    /// The URL for the driver: the store's options removed, driver parameters kept.
    pub driver_url: url::Url,
    /// The URL for people (no password, no query).
    pub redacted: String,
    /// `pool_size=`.
    pub pool_size: u32,
    /// `acquire_timeout=`.
    pub acquire_timeout: Duration,
    /// `test_before_acquire=` (default true): ping a pooled connection before each use.
    pub test_before_acquire: bool,
}

/// Takes the pool options out of `url`, moves the driver's own connection parameters
/// (`driver_params`) into the driver URL, and rejects anything left over. The caller has
/// already taken its own options (`table`, ...); `accepted` lists them for the message.
pub(crate) fn split_url(
    mut url: StoreUrl,
    accepted: &[&str],
    driver_params: &[&str],
) -> Result<SplitUrl, Error> {
    let pool_size = match url.take("pool_size") {
        None => DEFAULT_POOL_SIZE,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(Error::config(format!(
                    "option pool_size={v} in {} is not a number from 1 to 1000",
                    url.redacted
                )))
            }
        },
    };
    let acquire_timeout = url
        .take_duration("acquire_timeout")?
        .unwrap_or(DEFAULT_ACQUIRE_TIMEOUT);
    let test_before_acquire = url.take_bool("test_before_acquire")?.unwrap_or(true);
    let mut driver_url = url.without_query();
    let mut passed = Vec::new();
    for name in driver_params {
        if let Some(value) = url.take(name) {
            passed.push((*name, value));
        }
    }
    if !passed.is_empty() {
        let mut q = driver_url.query_pairs_mut();
        for (k, v) in &passed {
            q.append_pair(k, v);
        }
    }
    let mut all: Vec<&str> = accepted.to_vec();
    all.extend_from_slice(POOL_OPTIONS);
    all.extend_from_slice(driver_params);
    url.reject_unknown(&all)?;
    Ok(SplitUrl {
        driver_url,
        redacted: url.redacted.clone(),
        pool_size,
        acquire_timeout,
        test_before_acquire,
    })
}

/// A ttl as the bigint milliseconds the table stores (`None` stays `None`: never expires).
pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}

/// Remaining milliseconds computed by the database back into a duration.
pub(crate) fn remaining(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0) as u64))
}

/// A fence column back into a fence (rows written by Verrou have none).
pub(crate) fn fence(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

/// A `LIKE` pattern matching strings that start with `prefix`, with `escape` as the escape
/// character (`ESCAPE '!'` in the SQL).
pub(crate) fn like_prefix(prefix: &str, escape: char) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if c == escape || c == '%' || c == '_' {
            p.push(escape);
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A name derived from the (validated, ASCII) table name with `suffix`, cut so that the
/// result stays within `max` bytes. Two long table names sharing a prefix may share the
/// derived object, which is harmless for counters that only ever grow.
pub(crate) fn derived_name(table: &str, suffix: &str, max: usize) -> String {
    let keep = max.saturating_sub(suffix.len()).min(table.len());
    format!("{}{}", &table[..keep], suffix)
}

/// A 64-bit FNV-1a hash, for short stable names derived from long ones.
pub(crate) fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Classifies a driver error that is not a database error (those are classified per
/// dialect by `database_kind`).
pub(crate) fn classify(
    err: &sqlx::Error,
    database_kind: impl Fn(&dyn sqlx::error::DatabaseError) -> StoreErrorKind,
) -> StoreErrorKind {
    use sqlx::Error as E;
    match err {
        E::Database(db) => database_kind(db.as_ref()),
        E::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::PermissionDenied => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Transient,
        },
        E::Tls(_) => StoreErrorKind::Unavailable,
        E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            StoreErrorKind::Transient
        }
        E::Configuration(_) => StoreErrorKind::Rejected,
        _ => StoreErrorKind::Rejected,
    }
}

/// Builds a [`StoreError`] from a driver error: `what` says what was being done (naming the
/// table and key); a hint is added for the common cases.
pub(crate) fn store_error(kind: StoreErrorKind, what: &str, err: sqlx::Error) -> StoreError {
    let hint = match (&err, kind) {
        (sqlx::Error::PoolTimedOut, _) => {
            " (no pooled connection became free in time: is the database reachable, or is the pool too small?)"
        }
        (_, StoreErrorKind::Unavailable) => " (is the database running and are the URL's host, port, user and password right?)",
        _ => "",
    };
    let driver = err.to_string();
    StoreError::new(kind, format!("{what}: {driver}{hint}")).with_source(err)
}

/// A construction failure as the crate's error, naming the store.
pub(crate) fn connect_error(store: &str, source: StoreError) -> Error {
    Error::Store {
        store: store.to_owned(),
        operation: "connect",
        key: None,
        source,
    }
}

/// A rejected setup (bad table), as the crate's error.
pub(crate) fn rejected(store: &str, message: String) -> Error {
    connect_error(store, StoreError::new(StoreErrorKind::Rejected, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escaping() {
        assert_eq!(like_prefix("", '!'), "%");
        assert_eq!(like_prefix("a%b_c!\\", '!'), "a!%b!_c!!\\%");
        assert_eq!(like_prefix("ключ:", '!'), "ключ:%");
    }

    #[test]
    fn derived_names_fit() {
        assert_eq!(derived_name("t", "_fences", 63), "t_fences");
        let long = "x".repeat(63);
        let d = derived_name(&long, "_fences", 63);
        assert_eq!(d.len(), 63);
        assert!(d.ends_with("_fences"));
    }

    #[test]
    fn conversions() {
        assert_eq!(ttl_ms(None), None);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1500))), Some(1));
        assert_eq!(remaining(Some(-5)), Some(Duration::ZERO));
        assert_eq!(fence(Some(0)), None);
        assert_eq!(fence(Some(7)), Some(7));
        assert_eq!(fence(None), None);
    }

    #[test]
    fn url_split() {
        let u = StoreUrl::parse("postgres://u:pw@h/db?sslmode=disable&pool_size=3").unwrap();
        let s = split_url(u, &["table"], &["sslmode"]).unwrap();
        assert_eq!(s.pool_size, 3);
        assert!(s.test_before_acquire);
        assert_eq!(s.driver_url.query(), Some("sslmode=disable"));
        assert!(!s.redacted.contains("pw"));
        let u = StoreUrl::parse("postgres://h/db?bogus=1").unwrap();
        let e = split_url(u, &["table"], &[]).err().unwrap().to_string();
        assert!(e.contains("bogus"), "{e}");
        let u = StoreUrl::parse("postgres://h/db?pool_size=0").unwrap();
        assert!(split_url(u, &[], &[]).is_err());
        let u = StoreUrl::parse("mysql://h/db?test_before_acquire=false").unwrap();
        assert!(!split_url(u, &[], &[]).unwrap().test_before_acquire);
    }
}
