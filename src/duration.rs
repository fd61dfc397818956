//! Durations: `std::time::Duration` in the API, humantime strings (`250ms`, `10s`, `1h30m`) or
//! `none` in URLs, environment variables and the CLI.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest ttl, timeout or delay accepted: one year. Longer is almost surely a mistake
/// (a unit typo); use `none` for a lock that never expires.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks a ttl: at least 1 ms, at most [`MAX_DURATION`].
pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<Option<Duration>> {
    if let Some(d) = ttl {
        check("ttl", d)?;
    }
    Ok(ttl)
}

/// Checks a positive duration named `what`: at least 1 ms, at most [`MAX_DURATION`].
pub(crate) fn check(what: &'static str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::invalid(
            what,
            format!(
                "{d:?} is too short: give at least 1ms (or `none` for a lock that never expires)"
            ),
        ));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            what,
            format!(
                "{} is longer than one year; use `none` for a lock that never expires",
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(d)
}

/// Parses a humantime duration (`250ms`, `10s`, `5m`, `1h30m`); `what` names it in errors.
/// Zero, negative, unparsable and over-a-year durations are [`Error::InvalidInput`].
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cadenas::parse_duration("ttl", "1m30s")?, Duration::from_secs(90));
/// assert!(cadenas::parse_duration("ttl", "0s").is_err());
/// assert!(cadenas::parse_duration("ttl", "10 parsecs").is_err());
/// # Ok::<(), cadenas::Error>(())
/// ```
pub fn parse_duration(what: &'static str, text: &str) -> Result<Duration> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(Error::invalid(
            what,
            format!("'{text}' is negative; give a positive duration such as 10s"),
        ));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        Error::invalid(
            what,
            format!("'{text}' is not a duration ({e}); write e.g. 250ms, 10s, 5m or 1h30m"),
        )
    })?;
    check(what, d).map_err(|e| match e {
        Error::InvalidInput { what, message } => Error::InvalidInput {
            what,
            message: format!("'{text}': {message}"),
        },
        other => other,
    })
}

/// Parses a ttl: a duration as in [`parse_duration`], or `none` for "never expires".
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cadenas::parse_ttl("none")?, None);
/// assert_eq!(cadenas::parse_ttl("250ms")?, Some(Duration::from_millis(250)));
/// # Ok::<(), cadenas::Error>(())
/// ```
pub fn parse_ttl(text: &str) -> Result<Option<Duration>> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    parse_duration("ttl", text).map(Some)
}

/// A ttl in the whole milliseconds a store keeps, rounded up (at least 1): a store never holds
/// a lease for less than asked, so the guard's local deadline never outlives the store's.
/// Every store that counts in milliseconds converts with this.
#[cfg_attr(
    not(any(
        feature = "sqlite",
        feature = "redis",
        feature = "postgres",
        feature = "mysql"
    )),
    allow(dead_code)
)]
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Formats a duration the way [`parse_duration`] reads it back, rounded to milliseconds.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_durations_are_typed_errors() {
        for bad in ["0", "0s", "-5s", "abc", "10 parsecs", "999999h", "", "5"] {
            match parse_ttl(bad) {
                Err(Error::InvalidInput {
                    what: "ttl",
                    message,
                }) => {
                    assert!(message.contains(bad.trim()), "{message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn ttl_millis_rounds_up() {
        let ms = |micros| ttl_millis(Duration::from_micros(micros));
        assert_eq!(ms(1), 1);
        assert_eq!(ms(1_000), 1);
        assert_eq!(ms(1_001), 2);
        assert_eq!(ms(1_500), 2);
        assert_eq!(ms(2_900), 3);
        assert_eq!(ms(3_000), 3);
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(MAX_DURATION), 365 * 24 * 3600 * 1000);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn good_durations_parse() {
        assert_eq!(parse_ttl("none").unwrap(), None);
        assert_eq!(parse_ttl("NONE").unwrap(), None);
        assert_eq!(parse_ttl("1h30m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("1ms").unwrap(), Some(Duration::from_millis(1)));
        assert_eq!(parse_ttl("365days").unwrap(), Some(MAX_DURATION));
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    }
}
