//! The table of stores a URL can name: one row per store, the only list of URL schemes.
//!
//! Opening a URL ([`Locks::connect`](crate::Locks::connect)), the "feature not enabled"
//! error, the unknown-scheme error's list of accepted schemes, the network check of
//! [`StoreUrl::parse`](crate::url::StoreUrl::parse), each store's check of its own scheme and
//! the store kind of metric labels ([`Store::kind`]) all read [`SCHEMES`].
//!
//! **Adding a store** is one row here (a `const` plus its entry in [`SCHEMES`]), its module
//! under `stores/` with a `from_url(StoreUrl)` constructor that starts with
//! `scheme::ROW.check(&url)?`, and its `Store::kind` returning `scheme::ROW.kind`. The unit
//! tests below walk the table. Options such as a locking `mode` ride in the query and are the
//! store's own: they need no row.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::url::StoreUrl;

/// What opening a URL gives: the store, or why not.
type Opened = Pin<Box<dyn Future<Output = Result<Arc<dyn Store>>> + Send>>;

/// Opens a URL of a row (common options already taken out).
type Opener = fn(StoreUrl) -> Opened;

/// One store of the table.
#[derive(Debug)]
pub(crate) struct Scheme {
    /// The store's name in messages ("PostgreSQL").
    #[cfg_attr(
        not(any(
            feature = "sqlite",
            feature = "redis",
            feature = "postgres",
            feature = "mysql",
            feature = "etcd",
            feature = "dynamodb"
        )),
        allow(dead_code)
    )]
    pub name: &'static str,
    /// The store kind: the `store` label of metrics, unique per row, never a URL.
    pub kind: &'static str,
    /// The URL prefixes it answers to, as users write them (`"redis://"`); the scheme is
    /// what comes before the `:`.
    pub prefixes: &'static [&'static str],
    /// A URL of it, for messages.
    #[cfg_attr(
        not(any(
            feature = "sqlite",
            feature = "redis",
            feature = "postgres",
            feature = "mysql",
            feature = "etcd",
            feature = "dynamodb"
        )),
        allow(dead_code)
    )]
    pub example: &'static str,
    /// Reached over the network: its URLs start with `scheme://` and a host, and may carry a
    /// user and password.
    pub network: bool,
    /// The cargo feature that builds it (`None`: always built).
    pub feature: Option<&'static str>,
    /// Opens it; `None` in a build without its feature.
    open: Option<Opener>,
}

/// `Some` opener calling `$store::from_url` when cargo feature `$feature` is on, else `None`.
macro_rules! opener {
    ($feature:literal, $store:path) => {{
        #[cfg(feature = $feature)]
        let open: Option<Opener> = Some(|url| {
            Box::pin(async move { Ok(Arc::new(<$store>::from_url(url).await?) as Arc<dyn Store>) })
        });
        #[cfg(not(feature = $feature))]
        let open: Option<Opener> = None;
        open
    }};
}

/// The in-process store.
pub(crate) const MEMORY: Scheme = Scheme {
    name: "memory",
    kind: "memory",
    prefixes: &["memory:"],
    example: "memory:",
    network: false,
    feature: None,
    open: Some(open_memory),
};

/// SQLite, a file shared by the processes of one host.
pub(crate) const SQLITE: Scheme = Scheme {
    name: "SQLite",
    kind: "sqlite",
    prefixes: &["sqlite://"],
    example: "sqlite://path/to/locks.db",
    network: false,
    feature: Some("sqlite"),
    open: opener!("sqlite", crate::stores::sqlite::SqliteStore),
};

/// One Redis server (or a compatible one), TLS with `rediss://`.
pub(crate) const REDIS: Scheme = Scheme {
    name: "Redis",
    kind: "redis",
    prefixes: &["redis://", "rediss://"],
    example: "redis://host:6379",
    network: true,
    feature: Some("redis"),
    open: opener!("redis", crate::stores::redis::RedisStore),
};

/// A Redis Cluster, reached through one or more of its nodes.
pub(crate) const REDIS_CLUSTER: Scheme = Scheme {
    name: "Redis Cluster",
    kind: "redis+cluster",
    prefixes: &["redis+cluster://", "rediss+cluster://"],
    example: "redis+cluster://host:7000,host:7001",
    network: true,
    feature: Some("redis"),
    open: opener!("redis", crate::stores::redis::RedisStore),
};

/// A Redis primary with replicas, found (and followed through failovers) by its sentinels.
pub(crate) const REDIS_SENTINEL: Scheme = Scheme {
    name: "Redis Sentinel",
    kind: "redis+sentinel",
    prefixes: &["redis+sentinel://", "rediss+sentinel://"],
    example: "redis+sentinel://host:26379,host:26380/mymaster",
    network: true,
    feature: Some("redis"),
    open: opener!("redis", crate::stores::redis::RedisStore),
};

/// Redlock over independent Redis masters.
pub(crate) const REDLOCK: Scheme = Scheme {
    name: "Redlock",
    kind: "redlock",
    prefixes: &["redlock://", "redlock+tls://"],
    example: "redlock://host:6379,host:6380,host:6381",
    network: true,
    feature: Some("redlock"),
    open: opener!("redlock", crate::stores::redlock::RedlockStore),
};

/// PostgreSQL.
pub(crate) const POSTGRES: Scheme = Scheme {
    name: "PostgreSQL",
    kind: "postgres",
    prefixes: &["postgres://", "postgresql://"],
    example: "postgres://user@host/db",
    network: true,
    feature: Some("postgres"),
    open: opener!("postgres", crate::stores::postgres::PostgresStore),
};

/// MySQL and MariaDB.
pub(crate) const MYSQL: Scheme = Scheme {
    name: "MySQL",
    kind: "mysql",
    prefixes: &["mysql://", "mariadb://"],
    example: "mysql://user@host/db",
    network: true,
    feature: Some("mysql"),
    open: opener!("mysql", crate::stores::mysql::MySqlStore),
};

/// An etcd cluster, reached through one or more of its members; TLS with `etcds://`.
pub(crate) const ETCD: Scheme = Scheme {
    name: "etcd",
    kind: "etcd",
    prefixes: &["etcd://", "etcds://"],
    example: "etcd://host:2379,host:2379",
    network: true,
    feature: Some("etcd"),
    open: opener!("etcd", crate::stores::etcd::EtcdStore),
};

/// DynamoDB, or a DynamoDB-compatible endpoint.
pub(crate) const DYNAMODB: Scheme = Scheme {
    name: "DynamoDB",
    kind: "dynamodb",
    prefixes: &["dynamodb://"],
    example: "dynamodb:///TABLE",
    network: true,
    feature: Some("dynamodb"),
    open: opener!("dynamodb", crate::stores::dynamodb::DynamoDbStore),
};

/// Every store a URL can name, in the order messages list them.
pub(crate) const SCHEMES: &[&Scheme] = &[
    &MEMORY,
    &SQLITE,
    &REDIS,
    &REDIS_CLUSTER,
    &REDIS_SENTINEL,
    &REDLOCK,
    &POSTGRES,
    &MYSQL,
    &ETCD,
    &DYNAMODB,
];

/// The kind of stores the table does not know (hand-made ones), for metric labels.
pub(crate) const OTHER_KIND: &str = "other";

impl Scheme {
    /// Whether URLs with scheme `scheme` (lowercase, as the URL crate gives it) are this
    /// store's.
    pub fn answers(&self, scheme: &str) -> bool {
        self.schemes().any(|s| s == scheme)
    }

    /// The URL schemes, without `:` or `://`.
    fn schemes(&self) -> impl Iterator<Item = &'static str> {
        self.prefixes
            .iter()
            .map(|p| p.trim_end_matches('/').trim_end_matches(':'))
    }

    /// A `Config` error unless `url` is one of this store's: the check at the top of each
    /// store's `from_url`, for URLs that did not come through [`open`].
    #[cfg_attr(
        not(any(
            feature = "sqlite",
            feature = "redis",
            feature = "postgres",
            feature = "mysql",
            feature = "etcd",
            feature = "dynamodb"
        )),
        allow(dead_code)
    )]
    pub fn check(&self, url: &StoreUrl) -> Result<()> {
        if self.answers(url.url.scheme()) {
            return Ok(());
        }
        Err(Error::config(format!(
            "{} is not a {} URL ({}); write e.g. {}",
            url.redacted,
            self.name,
            self.prefixes.join(" or "),
            self.example
        )))
    }
}

/// The row of URL scheme `scheme` (lowercase), if any.
pub(crate) fn find(scheme: &str) -> Option<&'static Scheme> {
    SCHEMES.iter().copied().find(|row| row.answers(scheme))
}

/// Whether `scheme` names a store reached over the network, whose URLs may carry a user and
/// password.
pub(crate) fn is_network(scheme: &str) -> bool {
    find(scheme).is_some_and(|row| row.network)
}

/// Opens the store `url` names. Common options (`namespace`, `ttl`) must already be taken
/// out.
pub(crate) async fn open(url: StoreUrl) -> Result<Arc<dyn Store>> {
    let scheme = url.url.scheme().to_ascii_lowercase();
    let Some(row) = find(&scheme) else {
        return Err(unknown(&scheme, &url.redacted));
    };
    let Some(open) = row.open else {
        return Err(not_built(row, &scheme, &url.redacted));
    };
    let store = open(url).await?;
    debug_assert_eq!(store.kind(), row.kind, "the kind of {}", store.describe());
    Ok(store)
}

/// The error for a scheme of the table that this build cannot open.
fn not_built(row: &Scheme, scheme: &str, redacted: &str) -> Error {
    Error::Unsupported {
        store: redacted.to_owned(),
        what: format!(
            "the {scheme}:// store in this build: enable cargo feature `{}` of cadenas",
            row.feature.unwrap_or("?")
        ),
    }
}

/// The error for a scheme the table does not know, listing those it does.
fn unknown(scheme: &str, redacted: &str) -> Error {
    let accepted: Vec<&str> = SCHEMES
        .iter()
        .flat_map(|row| row.prefixes.iter().copied())
        .collect();
    Error::config(format!(
        "unknown store URL scheme '{scheme}' in {redacted}; use one of {}",
        accepted.join(", ")
    ))
}

fn open_memory(url: StoreUrl) -> Opened {
    Box::pin(async move {
        if url.url.has_host() || !url.url.path().is_empty() {
            // Not echoed: whatever follows may be a mistyped URL with a password.
            return Err(Error::config(
                "memory: takes no host or path, only options: memory:?namespace=app",
            ));
        }
        url.reject_unknown(&[])?;
        Ok(Arc::new(crate::stores::memory::MemoryStore::new()) as Arc<dyn Store>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row opens its URLs (the store itself then judges the URL: here it refuses an
    /// option it does not know, before connecting to anything), or, built without its
    /// feature, names the feature.
    #[tokio::test]
    async fn every_scheme_opens_or_names_its_feature() {
        for row in SCHEMES {
            for prefix in row.prefixes {
                let example = row.example.replacen(row.prefixes[0], prefix, 1);
                let text = format!("{example}?no_such_option=1");
                let e = open(StoreUrl::parse(&text).unwrap()).await.unwrap_err();
                match (row.open.is_some(), &e) {
                    (true, Error::Config { message }) => {
                        assert!(
                            message.contains("unknown option 'no_such_option'"),
                            "{text}: {e}"
                        )
                    }
                    (false, Error::Unsupported { what, .. }) => {
                        let feature = row.feature.expect("a row without feature is always built");
                        assert!(what.contains(&format!("cargo feature `{feature}`")), "{e}");
                    }
                    _ => panic!("{text}: {e:?}"),
                }
                assert_eq!(
                    find(StoreUrl::parse(&text).unwrap().url.scheme()).map(|r| r.kind),
                    Some(row.kind)
                );
            }
        }
    }

    #[test]
    fn an_unknown_scheme_lists_every_accepted_one() {
        let e = open_now("gopher://u:Pw-7q@h").to_string();
        assert!(e.contains("unknown store URL scheme 'gopher'"), "{e}");
        assert!(!e.contains("Pw-7q"), "{e}");
        for row in SCHEMES {
            for prefix in row.prefixes {
                assert!(e.contains(prefix), "{prefix} missing from: {e}");
            }
        }
    }

    fn open_now(text: &str) -> Error {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(open(StoreUrl::parse(text).unwrap()))
            .unwrap_err()
    }

    #[test]
    fn kinds_and_schemes_are_unique() {
        let mut kinds = std::collections::HashSet::new();
        let mut schemes = std::collections::HashSet::new();
        for row in SCHEMES {
            assert!(kinds.insert(row.kind), "kind {} twice", row.kind);
            assert_ne!(row.kind, OTHER_KIND);
            assert!(row.example.starts_with(row.prefixes[0]), "{row:?}");
            for scheme in row.schemes() {
                assert!(schemes.insert(scheme), "scheme {scheme} twice");
                assert_eq!(scheme, scheme.to_ascii_lowercase());
                // Network URLs have an authority, so the prefix must say `://`.
                assert!(!row.network || row.prefixes.iter().all(|p| p.ends_with("://")));
            }
        }
    }

    #[test]
    fn a_store_checks_its_own_scheme() {
        let url = StoreUrl::parse("mysql://u:Pw-7q@h/db").unwrap();
        assert!(MYSQL.check(&url).is_ok());
        let e = POSTGRES.check(&url).unwrap_err().to_string();
        assert!(
            e.contains("is not a PostgreSQL URL (postgres:// or postgresql://)"),
            "{e}"
        );
        assert!(!e.contains("Pw-7q"), "{e}");
    }

    /// The prose table of `stores/mod.rs` names every row's URLs, feature and kind.
    #[test]
    fn the_stores_docs_match_the_table() {
        let docs = include_str!("stores/mod.rs");
        for row in SCHEMES {
            let line = docs
                .lines()
                .find(|l| l.starts_with("//! |") && l.contains(&format!("`{}", row.prefixes[0])))
                .unwrap_or_else(|| panic!("no line for {} in stores/mod.rs", row.name));
            for prefix in row.prefixes {
                assert!(line.contains(prefix), "{prefix} missing from: {line}");
            }
            match row.feature {
                Some(feature) => assert!(line.contains(&format!("| `{feature}`")), "{line}"),
                None => assert!(line.contains("| always |"), "{line}"),
            }
            assert!(line.ends_with(&format!("`{}` |", row.kind)), "{line}");
        }
    }

    #[test]
    fn network_schemes_are_the_network_rows() {
        assert!(is_network("rediss+cluster"));
        assert!(is_network("mariadb"));
        assert!(!is_network("sqlite"));
        assert!(!is_network("memory"));
        assert!(!is_network("gopher"));
    }
}
