//! The store URLs with a password that the security tests of the library and of the `cadenas`
//! binary feed in: every one must fail (or work) without the password ever showing.

use crate::etcd::EtcdCluster;
use crate::redis::RedisServer;
use crate::redis_sentinel::{SentinelTopology, SERVICE};

/// The password every URL here carries. It must never be shown.
pub const PASSWORD: &str = "Sekr3tPw-4c1d9e";

/// Fails if `text` (from `what`) shows [`PASSWORD`].
pub fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password:\n{text}"
    );
}

/// URLs with [`PASSWORD`] that do not parse or name a bad option or scheme: each must be
/// refused as `Config`, `InvalidInput` or `Unsupported` before anything is reached.
pub fn refused_urls() -> Vec<String> {
    let pw = PASSWORD;
    vec![
        format!("redis://u:{pw}@127.0.0.1:99999"),
        format!("redis://u:{pw}@ho st:1"),
        format!("redis://u:{pw}/x@127.0.0.1:1"),
        format!("rediss://u:{pw}@127.0.0.1:1/?bogus=1"),
        format!("rediss://u:{pw}@127.0.0.1:1/?ca_file=no-such-ca.pem"),
        format!("redis+cluster://u:{pw}@127.0.0.1:1,,127.0.0.1:2"),
        format!("redis+cluster://u:{pw}@127.0.0.1:1,127.0.0.1:2/5"),
        format!("redis+sentinel://u:{pw}@127.0.0.1:1"),
        format!("redis+sentinel://u:{pw}@127.0.0.1:1,127.0.0.1:2/svc/x?sentinel_password={pw}"),
        format!("rediss+sentinel://u:{pw}@127.0.0.1:1/svc?sentinel_password={pw}&bogus=1"),
        format!("redis+sentinel://127.0.0.1:1/svc?sentinel_password={pw}&ca_file=ca.pem"),
        format!("redlock://u:{pw}@127.0.0.1:1,127.0.0.1:1,127.0.0.1:2"),
        format!("redlock://u:{pw}@127.0.0.1:1,127.0.0.1:x"),
        format!("postgres://u:{pw}@127.0.0.1:1/db?table=bad;drop"),
        format!("postgres://u:{pw}@[::1/db"),
        format!("postgresql://u:{pw}@127.0.0.1:1/db?bogus=1"),
        format!("mysql://u:{pw}@127.0.0.1:1/db?table=1abc"),
        format!("mysql://u:{pw}@127.0.0.1:1/db?mode=sideways"),
        format!("postgres://u:{pw}@127.0.0.1:1/db?mode=session&unlogged=true"),
        format!("mariadb://u:{pw}@127.0.0.1:1/db?schema=x"),
        format!("gopher://u:{pw}@h/x"),
        format!("sqlite://u:{pw}@h/locks.db"),
        format!("etcd://u:{pw}@127.0.0.1:1/locks"),
        format!("etcd://u:{pw}@127.0.0.1:1,127.0.0.1:2?bogus=1"),
        format!("etcd://u:{pw}@127.0.0.1:1?ca_file=ca.pem"),
        format!("etcds://u:{pw}@127.0.0.1:1?ca_file=no-such-ca.pem"),
        format!("dynamodb://AKID:{pw}@127.0.0.1:1/ab"),
        format!("dynamodb://AKID:{pw}@127.0.0.1:1/locks?bogus=1"),
        format!("dynamodb://:{pw}@127.0.0.1:1/locks"),
    ]
}

/// A base URL of the environment (`var`, else `default`), parsed.
fn base(var: &str, default: &str) -> url::Url {
    url::Url::parse(&crate::env_or(var, default)).expect("a test server URL")
}

/// `base` as `scheme://user:PASSWORD@…`.
fn with_password(mut u: url::Url, scheme: &str, user: &str) -> String {
    u.set_username(user).unwrap();
    u.set_password(Some(PASSWORD)).unwrap();
    u.as_str()
        .replacen(&format!("{}://", u.scheme()), &format!("{scheme}://"), 1)
}

/// Redis servers, plain and TLS, a Redis Sentinel service (data node and sentinel each with
/// a password) and an etcd member, each requiring a password of its own (not [`PASSWORD`]).
pub struct WrongPasswords {
    /// The plain server.
    pub plain: RedisServer,
    /// The TLS server.
    pub tls: RedisServer,
    /// The etcd member, with authentication on.
    pub etcd: EtcdCluster,
    /// A primary and its sentinel.
    pub sentinel: SentinelTopology,
}

impl WrongPasswords {
    /// Starts the two servers.
    pub fn start() -> WrongPasswords {
        let mut etcd = EtcdCluster::start();
        etcd.enable_auth("the-right-one-3");
        WrongPasswords {
            plain: RedisServer::with_password("the-right-one-1"),
            tls: RedisServer::tls_with_password("the-right-one-2"),
            etcd,
            sentinel: SentinelTopology::single(Some("the-right-one-4"), Some("the-right-one-5")),
        }
    }

    /// URLs of every store with [`PASSWORD`], which each server refuses: each must fail as
    /// "store unreachable".
    pub fn urls(&self) -> Vec<String> {
        let ca = self.tls.tls.as_ref().unwrap().ca.display().to_string();
        let pg = base(
            "CADENAS_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        );
        let my = base("CADENAS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
        let nobody = format!("nobody_{:x}", rand::random::<u32>());
        let (pw, p, t) = (PASSWORD, self.plain.port, self.tls.port);
        let s = self.sentinel.sentinels[0].port;
        vec![
            format!("redis://:{pw}@127.0.0.1:{p}"),
            format!("redis://default:{pw}@127.0.0.1:{p}/0"),
            format!("rediss://:{pw}@127.0.0.1:{t}?ca_file={ca}"),
            format!("redis+cluster://:{pw}@127.0.0.1:{p}?connect_timeout=3s"),
            // A wrong password for the data node, then for the sentinel.
            format!(
                "redis+sentinel://:{pw}@127.0.0.1:{s}/{SERVICE}?sentinel_password=the-right-one-5"
            ),
            format!(
                "redis+sentinel://u:the-right-one-4@127.0.0.1:{s}/{SERVICE}?sentinel_password={pw}"
            ),
            format!(
                "redlock://:{pw}@127.0.0.1:{p},127.0.0.1:{},127.0.0.1:{}?retry_count=0",
                crate::free_port(),
                crate::free_port()
            ),
            with_password(pg.clone(), "postgres", &nobody),
            with_password(pg, "postgresql", &nobody),
            with_password(my.clone(), "mysql", my.username()),
            with_password(my, "mariadb", &nobody),
            format!("etcd://root:{pw}@127.0.0.1:{}", self.etcd.port(0)),
            format!(
                "etcd://root:{pw}@127.0.0.1:{},127.0.0.1:{}",
                crate::free_port(),
                self.etcd.port(0)
            ),
            // Nobody listens there: the SDK signs with the secret, and the connection fails.
            format!(
                "dynamodb://AKID:{pw}@127.0.0.1:{}/locks",
                crate::free_port()
            ),
        ]
    }
}

/// A primary and one sentinel that both require [`PASSWORD`], and its URL with
/// [`PASSWORD`] as the data nodes' password and as `sentinel_password`: a store that runs
/// with the password in two places of its URL.
pub fn sentinel_with_password() -> (SentinelTopology, String) {
    let topology = SentinelTopology::single(Some(PASSWORD), Some(PASSWORD));
    let url = topology.url();
    (topology, url)
}

/// The shared PostgreSQL (on trust auth, which accepts any password) as
/// `postgresql://USER:PASSWORD@…?table=TABLE`: a store that runs with the password in its
/// URL. Drop `table` afterwards ([`crate::postgres::cleanup_table`]).
pub fn ignored_password_url(table: &str) -> String {
    let mut pg = base(
        "CADENAS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    pg.query_pairs_mut().append_pair("table", table);
    let user = pg.username().to_owned();
    with_password(pg, "postgresql", &user)
}

/// `dynamodb://AKID:PASSWORD@…/TABLE` on `server`: emulators accept any signature, so the
/// store runs with the secret key in its URL.
pub fn ignored_secret_url(server: &crate::dynamodb::DynamoServer, table: &str) -> String {
    format!(
        "dynamodb://AKID:{PASSWORD}@127.0.0.1:{}/{table}",
        server.port()
    )
}
