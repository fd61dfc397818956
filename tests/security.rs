//! Security checks as tests.
//!
//! - Owner ids are 128 bits from a CSPRNG (`cadenas::new_owner`: `rand::rng()`, a ChaCha
//!   generator seeded and reseeded from the operating system), written as 26 Crockford base32
//!   characters: unique, of that format, and every one of the 128 bits varies.
//! - No password shows in an error (`Display`, `Debug`), a store's or factory's `Debug`, a
//!   tracing line (captured at TRACE, `log` records included), for a recognisable password
//!   in every URL form: parse errors, wrong passwords against the real servers, and
//!   (PostgreSQL with trust auth) a password the server ignores, so the lock is used with the
//!   password in its URL, and etcd with its right password. The same URLs through the `cadenas` binary: the CLI crate's
//!   `tests/security.rs`.
//! - `rediss://` connects to a TLS server with a trusted CA and refuses an untrusted
//!   certificate: `tests/redis_store.rs`
//!   (`tls_with_a_trusted_ca_works_and_an_untrusted_certificate_is_refused`); here, a wrong
//!   password over TLS.
//! - Table and schema names are validated before any SQL: `tests/postgres_store.rs` and
//!   `tests/mysql_store.rs` (`bad_table_name_is_refused_before_any_sql`, against a port
//!   nobody listens on); here, a bad namespace against the real servers creates no table.
#![cfg(all(
    feature = "redis",
    feature = "redlock",
    feature = "postgres",
    feature = "mysql",
    feature = "etcd",
    feature = "dynamodb"
))]

use std::collections::HashSet;
use std::sync::OnceLock;

use cadenas::{Error, Locks};

use cadenas_test_support::captured::Captured;
use cadenas_test_support::postgres::cleanup_table;
use cadenas_test_support::security::{
    assert_hidden, ignored_password_url, refused_urls, WrongPasswords,
};

/// Everything logged by this test binary, at TRACE, `log` records included.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

/// Fails if the logs so far show the password, and returns how many bytes were logged.
fn assert_logs_hidden() -> usize {
    let text = logs().text();
    assert_hidden("the tracing output", &text);
    text.len()
}

/// Connects to `url`, and if that works, takes and releases a lock; checks every error,
/// `Debug` and the logs. Returns the error, if any.
async fn use_url(url: &str) -> Option<Error> {
    assert!(
        url.contains(cadenas_test_support::security::PASSWORD),
        "{url}"
    );
    let err = match Locks::connect(url).await {
        Err(e) => e,
        Ok(locks) => {
            assert_hidden("Locks::describe", locks.describe());
            assert_hidden("Locks's Debug", &format!("{locks:?}"));
            assert_hidden("the store's Debug", &format!("{:?}", locks.store()));
            let key = format!("security-{:x}", rand::random::<u64>());
            match locks.lock(&key).try_acquire().await {
                Ok(guard) => {
                    assert_hidden("a guard's Debug", &format!("{guard:?}"));
                    assert_hidden("a token", &guard.serialize());
                    locks.lock(&key).force_release().await.unwrap();
                    assert_logs_hidden();
                    return None;
                }
                Err(e) => e,
            }
        }
    };
    assert_hidden(&format!("the error of {url:?}"), &err.to_string());
    assert_hidden(
        &format!("the error's Debug of {url:?}"),
        &format!("{err:?}"),
    );
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        assert_hidden("an error source", &format!("{s} {s:?}"));
        source = s.source();
    }
    assert_logs_hidden();
    Some(err)
}

#[test]
fn owner_ids_are_128_random_bits_in_base32() {
    const N: u32 = 20_000;
    const ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";
    let mut seen = HashSet::new();
    let mut ones = [0u32; 128];
    let locks = Locks::memory();
    for i in 0..N {
        // Half from new_owner, half the default owner of a new lock.
        let id = if i % 2 == 0 {
            cadenas::new_owner()
        } else {
            locks.lock("k").owner().to_owned()
        };
        assert_eq!(id.len(), 26, "{id}");
        let mut n: u128 = 0;
        for c in id.chars() {
            let digit = ALPHABET
                .find(c)
                .unwrap_or_else(|| panic!("{id}: '{c}' is not Crockford base32"));
            n = n.checked_mul(32).expect("130 bits") + digit as u128;
        }
        // 26 characters hold 130 bits: the first carries only 3, so it is 0-7.
        assert!(id.as_bytes()[0] <= b'7', "{id} is over 128 bits");
        for (bit, count) in ones.iter_mut().enumerate() {
            *count += ((n >> bit) & 1) as u32;
        }
        assert!(seen.insert(id), "an owner id came twice");
    }
    // Every bit is set about half the time: 128 bits of entropy, not fewer padded to 128.
    // (Eight standard deviations either side: a fair bit never fails this.)
    let sd = (N as f64).sqrt() / 2.0;
    for (bit, count) in ones.iter().enumerate() {
        let off = (*count as f64 - N as f64 / 2.0).abs();
        assert!(off < 8.0 * sd, "bit {bit} was set {count} times in {N}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_for_urls_that_do_not_parse_or_open() {
    logs();
    for url in &refused_urls() {
        let e = use_url(url).await.unwrap_or_else(|| panic!("{url} opened"));
        assert!(
            matches!(
                e,
                Error::Config { .. } | Error::InvalidInput { .. } | Error::Unsupported { .. }
            ),
            "{url}: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_with_wrong_passwords_against_the_servers() {
    let before = assert_logs_hidden();
    // Redis, plain and TLS, each requiring a password of its own.
    let servers = WrongPasswords::start();
    for url in &servers.urls() {
        let e = use_url(url)
            .await
            .unwrap_or_else(|| panic!("{url} worked with a wrong password"));
        assert!(e.is_unavailable(), "{url}: {e}");
    }
    assert!(assert_logs_hidden() > before, "nothing was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_server_ignores_never_shows_while_locks_are_used() {
    // PostgreSQL on trust auth accepts any password: the store runs with it in its URL.
    let table = format!("cadenas_sec_{:x}", rand::random::<u32>());
    let _cleanup = cleanup_table(&table);
    let url = ignored_password_url(&table);
    if let Some(e) = use_url(&url).await {
        panic!("PostgreSQL with trust auth refused {url:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_server_ignores_never_shows_in_session_mode() {
    // Session mode keeps connect options (with the password) for its own connections.
    let table = format!("cadenas_sec_{:x}", rand::random::<u32>());
    let _cleanup = cleanup_table(&table);
    let url = format!("{}&mode=session", ignored_password_url(&table));
    if let Some(e) = use_url(&url).await {
        panic!("PostgreSQL with trust auth refused {url:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_etcd_password_never_shows_while_locks_are_used() {
    let mut cluster = cadenas_test_support::etcd::EtcdCluster::start();
    cluster.enable_auth(cadenas_test_support::security::PASSWORD);
    let url = cluster.url();
    if let Some(e) = use_url(&url).await {
        panic!("etcd refused its own password: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_sentinel_passwords_never_show_while_locks_are_used() {
    let (_topology, url) = cadenas_test_support::security::sentinel_with_password();
    assert!(url.contains("sentinel_password="), "{url}");
    if let Some(e) = use_url(&url).await {
        panic!("Redis Sentinel refused its own passwords: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_secret_the_emulator_ignores_never_shows_while_locks_are_used() {
    use cadenas_test_support::dynamodb::{random_table, DynamoServer, Emulator};
    let server = DynamoServer::start(Emulator::Dynalite);
    let url = cadenas_test_support::security::ignored_secret_url(&server, &random_table());
    if let Some(e) = use_url(&url).await {
        panic!("dynalite refused {url:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_namespace_is_refused_before_any_sql() {
    use cadenas_test_support::{mysql, postgres};
    let (pg_base, my_base) = (postgres::base_url(), mysql::base_url());
    let (pg, my) = (postgres::admin().await, mysql::admin().await);
    for bad in ["a'b", "x;drop table t", "a b", ""] {
        let table = format!("cadenas_ns_{:x}", rand::random::<u32>());
        let query = format!(
            "namespace={}&table={table}",
            url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
        );
        for base in [&pg_base, &my_base] {
            let sep = if base.contains('?') { '&' } else { '?' };
            let e = Locks::connect(&format!("{base}{sep}{query}"))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidInput {
                        what: "namespace",
                        ..
                    }
                ),
                "{bad:?}: {e:?}"
            );
        }
        // No SQL was sent: the store would have created its table first.
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
        )
        .bind(&table)
        .fetch_one(&pg)
        .await
        .unwrap();
        assert_eq!(
            n, 0,
            "PostgreSQL table {table} was created for namespace {bad:?}"
        );
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
        )
        .bind(&table)
        .fetch_one(&my)
        .await
        .unwrap();
        assert_eq!(
            n, 0,
            "MariaDB table {table} was created for namespace {bad:?}"
        );
    }
}
