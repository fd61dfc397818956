//! Store URLs: which store a URL names, the options in its query, and how to show it
//! without a password.
//!
//! Options that belong to the lock layer (`namespace`, `ttl`) are taken out here; every other
//! query option is the store's own, and a store rejects options it does not know.

use std::collections::BTreeMap;

use url::{Position, Url};

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
    /// Every `host:port` of the authority. URLs of Redis Cluster and Redlock name several
    /// (`redis+cluster://h1:7000,h2:7001`); `url` then holds the first.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options that carry a password (`sentinel_password`) show as `***`.
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| match k.contains("password") {
                true => (k.as_str(), "***"),
                false => (k.as_str(), v.as_str()),
            })
            .collect();
        f.debug_struct("StoreUrl")
            .field("url", &self.redacted)
            .field("options", &options)
            .finish()
    }
}

impl StoreUrl {
    /// Parses `text`. A parse error never echoes the password.
    pub fn parse(text: &str) -> Result<StoreUrl> {
        // What the URL parser reads, so that the host list is split from the same text.
        let text = &url_text(text);
        let (first_only, hosts) = split_hosts(text);
        if hosts.len() > 1 && hosts.iter().any(|h| h.is_empty()) {
            return Err(Error::config(format!(
                "'{}' has an empty entry in its host list; write host:port,host:port",
                redact_text(text)
            )));
        }
        let url = Url::parse(&first_only).map_err(|e| {
            Error::config(format!(
                "'{}' is not a store URL ({e}); write e.g. memory:, sqlite://locks.db, redis://host:6379",
                redact_text(text)
            ))
        })?;
        if crate::scheme::is_network(url.scheme()) && split_scheme(&first_only).is_none() {
            // `redis:/u:pw@h` (a slash short) has no authority: all of it, password included,
            // would be a path. Not echoed.
            return Err(Error::config(format!(
                "a {0} URL starts with {0}:// and a host: {0}://[user:password@]host[:port]…",
                url.scheme()
            )));
        }
        if crate::scheme::is_network(url.scheme()) && after_authority(&first_only).contains('@') {
            // Most likely a password with '/', '?' or '#' in it, which ended the authority
            // early: the rest of the password would show as a path, query or fragment.
            return Err(Error::config(format!(
                "'{}' has '@' after its host; percent-encode '@', '/', '?' and '#' in the user \
                 name and password (%40, %2F, %3F, %23)",
                redact_text(text)
            )));
        }
        let mut options = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            options.insert(k.into_owned(), v.into_owned());
        }
        let mut redacted = redacted_url(&url).to_string();
        let mut hosts = hosts;
        if url.has_host() {
            let first = url[Position::BeforeHost..Position::AfterPort].to_owned();
            match hosts.first_mut() {
                Some(h) => *h = first,
                None => hosts.push(first),
            }
        }
        if hosts.len() > 1 {
            for host in &mut hosts {
                *host = listed_host(url.scheme(), host).ok_or_else(|| {
                    Error::config(format!(
                        "'{}': '{host}' in the host list is not host:port",
                        redact_text(text)
                    ))
                })?;
            }
            // The other hosts go after the first, as the URL crate wrote it.
            let end = redacted_url(&url)[..Position::AfterPort].len();
            redacted.insert_str(end, &format!(",{}", hosts[1..].join(",")));
        }
        Ok(StoreUrl {
            url,
            options,
            redacted,
            hosts,
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

/// A host of a host list as the URL crate writes it, or `None` if it is not a host with an
/// optional port.
fn listed_host(scheme: &str, host: &str) -> Option<String> {
    if host.contains(|c: char| c <= ' ') {
        return None;
    }
    let u = Url::parse(&format!("{scheme}://{host}")).ok()?;
    let bare = u.has_host()
        && u.username().is_empty()
        && u.password().is_none()
        && u.path().is_empty()
        && u.query().is_none()
        && u.fragment().is_none();
    bare.then(|| u[Position::BeforeHost..Position::AfterPort].to_owned())
}

/// `scheme` and the rest of `scheme://rest`, when `text` starts with a scheme and `://`
/// (not when `://` only shows up later, in a path or query).
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some((scheme, rest))
}

/// What follows the authority of `scheme://authority/...`: path, query and fragment.
fn after_authority(text: &str) -> &str {
    let rest = split_scheme(text).map_or("", |(_, rest)| rest);
    rest.find(['/', '?', '#']).map_or("", |i| &rest[i..])
}

/// Splits `scheme://[userinfo@]h1:p1,h2:p2/rest` into the URL with only `h1:p1` and the list
/// of hosts. A URL without a host list comes back unchanged (its one host, if any, listed).
fn split_hosts(text: &str) -> (String, Vec<String>) {
    let Some((scheme, rest)) = split_scheme(text) else {
        return (text.to_owned(), Vec::new());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let hosts: Vec<String> = hostlist.split(',').map(str::to_owned).collect();
    match hosts.first() {
        Some(first) if hosts.len() > 1 => (format!("{scheme}://{userinfo}{first}{tail}"), hosts),
        _ => (text.to_owned(), hosts),
    }
}

/// A URL for people: password replaced by `***`, query dropped.
pub fn redact(url: &Url) -> String {
    redacted_url(url).to_string()
}

fn redacted_url(url: &Url) -> Url {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.set_query(None);
    u.set_fragment(None);
    u
}

/// `text` as the URL parser reads it: without leading and trailing control characters and
/// spaces, and without tabs and newlines anywhere.
fn url_text(text: &str) -> String {
    text.trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Best-effort redaction of text that did not parse as a URL: hides what sits between
/// `scheme://user:` and the last `@`.
pub(crate) fn redact_text(text: &str) -> String {
    if let Some(scheme_end) = text.find("://") {
        let Some(at) = text[scheme_end + 3..]
            .rfind('@')
            .map(|i| i + scheme_end + 3)
        else {
            return text.to_owned();
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = StoreUrl::parse("redis://user:s3cr3t@host:6379/0?namespace=app").unwrap();
        assert_eq!(u.redacted, "redis://user:***@host:6379/0");
        assert!(!format!("{u:?}").contains("s3cr3t"));
        let u = StoreUrl::parse("redis+sentinel://a,b/svc?sentinel_password=s3cr3t").unwrap();
        assert!(!format!("{u:?}").contains("s3cr3t"), "{u:?}");
        let bad = "redis://user:s3cr3t@ho st:6379";
        let e = StoreUrl::parse(bad).err().unwrap().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(redact_text("x://u:p@h"), "x://u:***@h");
    }

    /// Found by the fuzz target `store_url`: a password with '/', '?' or '#' ends the
    /// authority early, and the rest of it would show as a path, query or fragment.
    #[test]
    fn an_unencoded_delimiter_in_a_password_is_refused_without_showing_it() {
        for text in [
            "redis://u:8/abc+Def==@host:6379",
            "postgres://u:12?pw=x9yz@host/db",
            "mysql://u:1#q8w7e6@host/db",
            "redis+cluster://u:1/pQ9z@a:1,b:2",
        ] {
            let e = StoreUrl::parse(text).unwrap_err().to_string();
            assert!(e.contains("percent-encode"), "{e}");
            for part in ["abc+Def", "x9yz", "q8w7e6", "pQ9z"] {
                assert!(!e.contains(part), "{e}");
            }
        }
        // Encoded, the same password is fine; sqlite paths may hold '@'.
        let u = StoreUrl::parse("redis://u:8%2Fabc+Def==@host:6379").unwrap();
        assert_eq!(u.redacted, "redis://u:***@host:6379");
        assert!(StoreUrl::parse("sqlite:///srv/a@b/locks.db").is_ok());
    }

    /// A network URL a slash short (`redis:/u:pw@h`) has no host: its password would show
    /// as a path. Found with the bad-input table.
    #[test]
    fn a_network_url_without_authority_is_refused_without_echo() {
        for text in [
            "redis:/u:Pw-7q@h:1",
            "postgres:u:Pw-7q@h/db",
            "redlock:Pw-7q@a,b",
        ] {
            let e = StoreUrl::parse(text).unwrap_err().to_string();
            assert!(e.contains("://"), "{e}");
            assert!(!e.contains("Pw-7q"), "{e}");
        }
        // An empty host stays allowed (a Unix socket in the query, for the SQL stores).
        assert!(StoreUrl::parse("postgres:///db?host=/run/postgresql").is_ok());
    }

    #[tokio::test]
    async fn memory_takes_no_path() {
        for text in ["memory:,redis://u:Pw-7q@h:1", "memory://h", "memory:x"] {
            let e = crate::scheme::open(StoreUrl::parse(text).unwrap())
                .await
                .unwrap_err();
            assert!(!e.to_string().contains("Pw-7q"), "{e}");
            assert!(matches!(e, Error::Config { .. }), "{e:?}");
        }
        assert!(crate::scheme::open(StoreUrl::parse("memory:").unwrap())
            .await
            .is_ok());
    }

    /// An '@' before `://` made the redaction of an unparsable URL slice backwards (a
    /// panic on bad input; seen while writing the fuzz target `store_url`).
    #[test]
    fn redaction_of_text_with_an_at_before_the_scheme_end() {
        assert_eq!(redact_text("a@b://c"), "a@b://c");
        assert!(StoreUrl::parse("a@b://u:pw@c").is_err());
    }

    #[test]
    fn host_lists() {
        let u = StoreUrl::parse("redis+cluster://u:pw@a:7000,b:7001,c:7002/?namespace=x").unwrap();
        assert_eq!(u.hosts, ["a:7000", "b:7001", "c:7002"]);
        assert_eq!(u.url.host_str(), Some("a"));
        assert_eq!(u.url.password(), Some("pw"));
        assert_eq!(u.redacted, "redis+cluster://u:***@a:7000,b:7001,c:7002/");
        let one = StoreUrl::parse("redis://h:1/2").unwrap();
        assert_eq!(one.hosts, ["h:1"]);
        // Found by the fuzz target `store_url`: a `://` in the query is no authority.
        assert!(StoreUrl::parse("s:?x://a,b").unwrap().hosts.is_empty());
        // Found by the fuzz target `store_url`: leading control characters (which the URL
        // parser drops) hid the host list, and a first host the URL crate writes otherwise
        // (percent-encoded) left the others out of the redacted form.
        let u = StoreUrl::parse("\u{b} REDIS+cluster://U:pw@A:1,B:2/").unwrap();
        assert_eq!(u.redacted, "redis+cluster://U:***@A:1,B:2/");
        assert_eq!(u.hosts, ["A:1", "B:2"]);
        let u = StoreUrl::parse("redis+cluster://u:pw@é:1,ü:2/").unwrap();
        assert_eq!(u.redacted, "redis+cluster://u:***@%C3%A9:1,%C3%BC:2/");
        assert_eq!(u.hosts, ["%C3%A9:1", "%C3%BC:2"]);
        // Each listed host must be one: no path, credentials or control characters.
        for bad in [
            "redis+cluster://a:1,b:2\0#x",
            "redlock://a:1,b c:2,c:3",
            "redlock://a:1,b:x",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not host:port"), "{e}");
        }
    }

    #[test]
    fn options() {
        let mut u = StoreUrl::parse("postgres://h/db?table=t&unlogged=true&x=1").unwrap();
        assert_eq!(u.take("table").as_deref(), Some("t"));
        assert_eq!(u.take_bool("unlogged").unwrap(), Some(true));
        let e = u
            .reject_unknown(&["table", "unlogged"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option 'x'"), "{e}");
    }
}
