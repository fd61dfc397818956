//! What the SQL stores take from their URLs: the scheme check and `table=NAME` (all three),
//! and for the server stores the pool options, the driver's own parameters and the locking
//! mode.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::time::Duration;

use crate::error::Result;
use crate::url::StoreUrl;

use super::{check_identifier, DEFAULT_TABLE};

/// Takes `table=NAME` (default `cadenas_locks`) and checks it is an identifier.
pub(crate) fn take_table(url: &mut StoreUrl) -> Result<String> {
    let table = url
        .take("table")
        .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
    check_identifier("table", &table)?;
    Ok(table)
}

/// Default number of pooled connections when the store builds its own pool.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const DEFAULT_POOL_SIZE: u32 = 10;

/// Default time to wait for a pooled connection before an operation fails as `Transient`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options every server store takes from its URL, besides the table.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const POOL_OPTIONS: &[&str] = &[
    "mode",
    "pool_size",
    "acquire_timeout",
    "test_before_acquire",
];

/// How a server store holds a lock: `mode=lease` (the default) or `mode=session` in the URL.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// A row per held lock with an expiration by the database's clock (Verrou's layout).
    #[default]
    Lease,
    /// The server's own lock (advisory lock, `GET_LOCK`) on a connection the store keeps
    /// open; see `sql/session.rs`.
    Session,
}

/// How the store's own pool is built.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// `pool_size=` (default 10).
    pub size: u32,
    /// `acquire_timeout=` (default 10 s).
    pub acquire_timeout: Duration,
    /// `test_before_acquire=` (default true): ping a pooled connection before each use.
    pub test_before_acquire: bool,
}

/// The store's own options and the URL to hand to the driver.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) struct SplitUrl {
    /// The URL for the driver: the store's options removed, driver parameters kept.
    pub driver_url: url::Url,
    /// The URL for people (no password, no query).
    pub redacted: String,
    /// The locking mode.
    pub mode: Mode,
    /// The pool options.
    pub pool: PoolSettings,
}

/// Takes the pool options out of `url`, moves the driver's own connection parameters
/// (`driver_params`) into the driver URL, and rejects anything left over. The caller has
/// already taken `table` and its own options; `accepted` lists them for the message.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn split_url(
    mut url: StoreUrl,
    accepted: &[&str],
    driver_params: &[&str],
) -> Result<SplitUrl> {
    let size = match url.take("pool_size") {
        None => DEFAULT_POOL_SIZE,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(crate::Error::config(format!(
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
    let mode = match url.take("mode").as_deref() {
        None | Some("lease") => Mode::Lease,
        Some("session") => Mode::Session,
        Some(other) => {
            return Err(crate::Error::config(format!(
                "option mode={other} in {} is not lease or session",
                url.redacted
            )))
        }
    };
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
    let mut all: Vec<&str> = vec!["table"];
    all.extend_from_slice(accepted);
    all.extend_from_slice(POOL_OPTIONS);
    all.extend_from_slice(driver_params);
    url.reject_unknown(&all)?;
    Ok(SplitUrl {
        driver_url,
        redacted: url.redacted.clone(),
        mode,
        pool: PoolSettings {
            size,
            acquire_timeout,
            test_before_acquire,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let mut u = StoreUrl::parse("sqlite://x.db?table=verrou").unwrap();
        assert_eq!(take_table(&mut u).unwrap(), "verrou");
        let mut u = StoreUrl::parse("sqlite://x.db").unwrap();
        assert_eq!(take_table(&mut u).unwrap(), DEFAULT_TABLE);
        let mut u = StoreUrl::parse("sqlite://x.db?table=a-b").unwrap();
        let e = take_table(&mut u).unwrap_err().to_string();
        assert!(e.contains("table") && e.contains("identifier"), "{e}");
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn url_split() {
        let u = StoreUrl::parse("postgres://u:pw@h/db?sslmode=disable&pool_size=3").unwrap();
        let s = split_url(u, &[], &["sslmode"]).unwrap();
        assert_eq!(s.pool.size, 3);
        assert!(s.pool.test_before_acquire);
        assert_eq!(s.mode, Mode::Lease);
        assert_eq!(s.driver_url.query(), Some("sslmode=disable"));
        assert!(!s.redacted.contains("pw"));
        let u = StoreUrl::parse("postgres://h/db?bogus=1").unwrap();
        let e = split_url(u, &["schema"], &[]).err().unwrap().to_string();
        assert!(e.contains("bogus") && e.contains("table, schema"), "{e}");
        let u = StoreUrl::parse("postgres://h/db?pool_size=0").unwrap();
        assert!(split_url(u, &[], &[]).is_err());
        let u = StoreUrl::parse("mysql://h/db?test_before_acquire=false").unwrap();
        assert!(!split_url(u, &[], &[]).unwrap().pool.test_before_acquire);
        let u = StoreUrl::parse("mysql://h/db?mode=session").unwrap();
        assert_eq!(split_url(u, &[], &[]).unwrap().mode, Mode::Session);
        let u = StoreUrl::parse("mysql://h/db?mode=row").unwrap();
        let e = split_url(u, &[], &[]).err().unwrap().to_string();
        assert!(
            e.contains("mode=row") && e.contains("lease or session"),
            "{e}"
        );
    }
}
