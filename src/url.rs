//! Store URLs: which store a URL names, the options in its query, and how to show it
//! without a password.
//!
//! Options that belong to the lock layer (`namespace`, `ttl`) are taken out here; every other
//! query option is the store's own, and a store rejects options it does not know.

use std::collections::BTreeMap;

use url::Url;

use crate::error::{Error, Result};

/// Query options common to every store, taken by [`Locks`](crate::Locks).
pub(crate) const COMMON_OPTIONS: &[&str] = &["namespace", "ttl"];

/// A parsed store URL: the URL, its query options, and a printable form without password.
#[derive(Clone)]
pub struct StoreUrl {
    /// The URL as given (the password still in it: never print this).
    pub url: Url,
    /// The query options, by name (last one wins).
    pub options: BTreeMap<String, String>,
    /// The URL with the password replaced by `***` and without the query.
    pub redacted: String,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &self.redacted)
            .field("options", &self.options)
            .finish()
    }
}

impl StoreUrl {
    /// Parses `text`. A parse error never echoes the password.
    pub fn parse(text: &str) -> Result<StoreUrl> {
        let url = Url::parse(text).map_err(|e| {
            Error::config(format!(
                "'{}' is not a store URL ({e}); write e.g. memory:, sqlite://locks.db, redis://host:6379",
                redact_text(text)
            ))
        })?;
        let mut options = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            options.insert(k.into_owned(), v.into_owned());
        }
        let redacted = redact(&url);
        Ok(StoreUrl {
            url,
            options,
            redacted,
        })
    }

    /// Removes and returns option `name`.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.options.remove(name)
    }

    /// Fails if options remain that nobody took, naming them and the accepted ones.
    pub fn reject_unknown(&self, accepted: &[&str]) -> Result<()> {
        if let Some(name) = self.options.keys().next() {
            let mut all: Vec<&str> = COMMON_OPTIONS.to_vec();
            all.extend_from_slice(accepted);
            return Err(Error::config(format!(
                "unknown option '{name}' in {}; accepted options: {}",
                self.redacted,
                all.join(", ")
            )));
        }
        Ok(())
    }

    /// Parses a boolean option (`true`/`false`/`1`/`0`).
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(Error::config(format!(
                    "option {name}={v} in {} is not true or false",
                    self.redacted
                ))),
            },
        }
    }

    /// Parses a duration option (humantime).
    pub fn take_duration(&mut self, name: &'static str) -> Result<Option<std::time::Duration>> {
        self.take(name)
            .map(|v| crate::duration::parse_duration(name, &v))
            .transpose()
    }

    /// The URL without lock-layer options and without the query options the store took,
    /// for drivers that parse URLs themselves (the password is still in it).
    pub fn without_query(&self) -> Url {
        let mut u = self.url.clone();
        u.set_query(None);
        u
    }
}

/// A URL for people: password replaced by `***`, query dropped.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Best-effort redaction of text that did not parse as a URL: hides what sits between
/// `scheme://user:` and the last `@`.
pub(crate) fn redact_text(text: &str) -> String {
    if let (Some(scheme_end), Some(at)) = (text.find("://"), text.rfind('@')) {
        let auth = &text[scheme_end + 3..at];
        if let Some(colon) = auth.find(':') {
            return format!(
                "{}{}:***{}",
                &text[..scheme_end + 3],
                &auth[..colon],
                &text[at..]
            );
        }
    }
    text.to_owned()
}

/// Validates a SQL table or schema name: an identifier of 1 to 63 ASCII letters, digits and
/// `_`, not starting with a digit. Checked before any SQL is sent.
pub fn check_identifier(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} {name:?} is not a valid identifier: use 1 to 63 ASCII letters, digits and '_', not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = StoreUrl::parse("redis://user:s3cr3t@host:6379/0?namespace=app").unwrap();
        assert_eq!(u.redacted, "redis://user:***@host:6379/0");
        assert!(!format!("{u:?}").contains("s3cr3t"));
        let bad = "redis://user:s3cr3t@ho st:6379";
        let e = StoreUrl::parse(bad).err().unwrap().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(redact_text("x://u:p@h"), "x://u:***@h");
    }

    #[test]
    fn options() {
        let mut u = StoreUrl::parse("postgres://h/db?table=t&unlogged=true&x=1").unwrap();
        assert_eq!(u.take("table").as_deref(), Some("t"));
        assert_eq!(u.take_bool("unlogged").unwrap(), Some(true));
        let e = u.reject_unknown(&["table", "unlogged"]).unwrap_err().to_string();
        assert!(e.contains("unknown option 'x'"), "{e}");
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("table", "verrou").is_ok());
        assert!(check_identifier("table", "cadenas_locks_2").is_ok());
        for bad in ["", "1abc", "a-b", "a;drop", "a b", "\"x\"", &"t".repeat(64)] {
            assert!(check_identifier("table", bad).is_err(), "{bad}");
        }
    }
}
