//! Redis Sentinel: a primary and replicas watched by sentinels, reached through them.
//!
//! `redis+sentinel://[user:pass@]host[:26379][,host:port…]/SERVICE[/db]`: the sentinels are
//! listed (port 26379 by default), `SERVICE` is the name they monitor, the user and password
//! are the data nodes' and `?sentinel_user=&sentinel_password=` the sentinels' own (none by
//! default). `rediss+sentinel://` speaks TLS to both, with the same `ca_file` for both. The
//! store asks every sentinel at once which node is the primary (`SENTINEL MASTER`), follows
//! the answer with the newest configuration (the highest `config-epoch`), checks with `ROLE`
//! that the node says it is the primary, and sends every command there on one multiplexed
//! connection. Taking the first answer would not do: a sentinel that has not yet heard of a
//! failover names the old primary, and one that was restarted calls itself a primary, empty,
//! until the sentinels make it a replica; two holders would each take the key on their own
//! node. A command that fails on that
//! connection (dropped, refused, timed out) or that the node answers as a replica
//! (`READONLY`) drops the connection; the next command asks the sentinels again, so the store
//! reaches the promoted replica as soon as they name it, and never reconnects on its own to
//! the node it knew (a dead primary that comes back is a replica until the sentinels say
//! otherwise). A `READONLY` refusal ran nothing, so that command is sent once more; any
//! other failure comes back to the caller as a retryable `Store` error, as on a single node:
//! during a failover, acquires fail until the sentinels have promoted a replica (seconds,
//! set by their `down-after-milliseconds`), and then work again. The pub/sub connection of
//! hand-off and the expiry watcher ask the sentinels too each time they reconnect (the
//! watcher turns on expiry events on the new primary), and wake every waiter, since
//! releases may have been missed.
//!
//! **What asynchronous replication means for a lock.** A primary acknowledges a write before
//! its replicas have it. When it dies, the replica the sentinels promote may lack its last
//! writes: a lock acquired just before is gone, and someone else can acquire the key while
//! the first holder still believes it holds it. No setting of this store prevents that
//! (`WAIT` narrows the window, it does not close it: a promoted replica may still be the one
//! that missed the write). The fence is the answer, as for Redlock: a resource that
//! records the highest fence it accepted refuses the first holder's later writes, since the
//! second holder's fence is higher, and the first holder learns `Lost` at its next extend
//! (its watchdog fires the lost signal). For the fence to be higher, the counter must not
//! go back with the failover; the promoted replica's counter may lag. So on Sentinel every
//! acquire takes the scripted path and its fence is at least the server's time in
//! microseconds (one `TIME` more per acquire): fences after a failover are above every fence
//! handed out before it as long as the new primary's clock is not behind the old one's by
//! more than the failover took (seconds; run NTP). The scripted path writes the holding's
//! record, so `records=true` is implied. Every client of the keys should use the Sentinel
//! URL: one that writes to the primary through `redis://` takes fences from the counter
//! alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Role, ServerErrorKind, Value,
};

use crate::error::{Error, Result};
use crate::url::StoreUrl;

/// The port of a sentinel named without one.
const DEFAULT_PORT: u16 = 26379;

/// The options of a Sentinel URL beyond those of `rediss://`.
pub(super) const OPTIONS: &[&str] = &["sentinel_user", "sentinel_password"];

/// The primary of one Sentinel service, and the connection to it. Cheap to clone.
#[derive(Clone)]
pub(super) struct SentinelConn(Arc<Shared>);

struct Shared {
    /// A client per sentinel of the URL.
    sentinels: Vec<Client>,
    /// The open connections to the sentinels, held while they are asked (one lookup at a
    /// time: concurrent callers wait for it).
    asked: tokio::sync::Mutex<Vec<Option<MultiplexedConnection>>>,
    service: String,
    /// How to reach a data node the sentinels name.
    node: Node,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    current: Mutex<Current>,
}

/// TLS, user, password and database of the data nodes.
struct Node {
    secure: bool,
    redis: RedisConnectionInfo,
    certs: Option<redis::TlsCertificates>,
}

/// The connection to the primary, if one is open; `generation` counts the changes, so a
/// failure on an old connection does not drop a newer one.
#[derive(Default)]
struct Current {
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

/// The sentinels' own user and password (`?sentinel_user=&sentinel_password=`): the URL's
/// user and password are the data nodes'.
pub(super) struct Credentials {
    user: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Takes them out of the URL's options.
    pub fn take(url: &mut StoreUrl) -> Credentials {
        Credentials {
            user: url.take("sentinel_user"),
            password: url.take("sentinel_password"),
        }
    }
}

/// The parts of a Sentinel URL.
pub(super) struct Parsed {
    pub service: String,
    pub db: i64,
}

/// The host and port of `SENTINEL GET-MASTER-ADDR-BY-NAME`.
type Addr = (String, String);

/// The primary one sentinel names, and the epoch of the configuration it names it in.
#[derive(Debug, PartialEq)]
struct Named {
    host: String,
    port: u16,
    epoch: u64,
}

impl SentinelConn {
    /// Builds the clients for `url` (nothing is connected yet). `tls`: the certificates of
    /// `ca_file`, for sentinels and data nodes alike.
    pub fn from_url(
        url: &StoreUrl,
        credentials: Credentials,
        tls: &Option<redis::TlsCertificates>,
        (connect_timeout, response_timeout): (Duration, Duration),
    ) -> Result<SentinelConn> {
        let secure = url.url.scheme().starts_with("rediss");
        if tls.is_some() && !secure {
            return Err(Error::config(format!(
                "ca_file in {} needs TLS: write rediss+sentinel://",
                url.redacted
            )));
        }
        let parsed = parse_path(url)?;
        let invalid = |e: RedisError| {
            Error::config(format!(
                "{} is not a valid Redis Sentinel URL: {e}",
                url.redacted
            ))
        };
        let mut to_sentinel = RedisConnectionInfo::default();
        if let Some(user) = credentials.user.filter(|u| !u.is_empty()) {
            to_sentinel = to_sentinel.set_username(user);
        }
        if let Some(password) = credentials.password {
            to_sentinel = to_sentinel.set_password(password);
        }
        let sentinel_nodes = Node {
            secure,
            redis: to_sentinel,
            certs: tls.as_ref().map(super::conn::clone_certs),
        };
        let mut sentinels = Vec::new();
        for host in &url.hosts {
            let (h, port) = split_host(host).ok_or_else(|| {
                Error::config(format!("{}: '{host}' is not host:port", url.redacted))
            })?;
            sentinels.push(sentinel_nodes.client(h, port).map_err(invalid)?);
        }
        if sentinels.is_empty() {
            return Err(Error::config(format!(
                "{}: no sentinels; write redis+sentinel://host:26379,host:26380/SERVICE",
                url.redacted
            )));
        }
        let mut to_node = RedisConnectionInfo::default().set_db(parsed.db);
        let user = percent(url.url.username());
        if !user.is_empty() {
            to_node = to_node.set_username(user);
        }
        if let Some(password) = url.url.password() {
            to_node = to_node.set_password(percent(password));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        Ok(SentinelConn(Arc::new(Shared {
            asked: tokio::sync::Mutex::new(vec![None; sentinels.len()]),
            sentinels,
            service: parsed.service,
            node: Node {
                redis: to_node,
                ..sentinel_nodes
            },
            config,
            connect_timeout,
            current: Mutex::new(Current::default()),
        })))
    }

    /// Finds the primary and connects to it: the check at open.
    pub async fn connect(&self) -> RedisResult<()> {
        self.primary().await.map(|_| ())
    }

    /// A client for the node the sentinels name as the primary now (confirmed by its own
    /// `ROLE`): for the pub/sub and expiry-event connections, at each (re)connect.
    pub async fn resolve(&self) -> RedisResult<Client> {
        let asked = self.0.asked.lock().await;
        let lookup = self.lookup(asked);
        let (client, _) = tokio::time::timeout(self.0.connect_timeout * 2, lookup)
            .await
            .unwrap_or_else(|_| Err(timed_out()))?;
        Ok(client)
    }

    /// The open connection to the primary, or a new one to the primary the sentinels name.
    async fn primary(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let asked = self.0.asked.lock().await;
        // Someone else may have connected while we waited for the sentinels.
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let (_, conn) = tokio::time::timeout(self.0.connect_timeout * 2, self.lookup(asked))
            .await
            .unwrap_or_else(|_| Err(timed_out()))?;
        let mut current = self.lock();
        current.generation += 1;
        current.conn = Some(conn.clone());
        Ok((current.generation, conn))
    }

    /// Asks every sentinel at once which node is the primary, follows the answer of the
    /// newest configuration (the highest `config-epoch`: a sentinel that has not yet heard
    /// of a failover still names the old primary, which may be back, empty, and still
    /// calling itself a primary until the sentinels turn it into a replica), and connects to
    /// it if its `ROLE` says it is the primary.
    async fn lookup(
        &self,
        mut asked: tokio::sync::MutexGuard<'_, Vec<Option<MultiplexedConnection>>>,
    ) -> RedisResult<(Client, MultiplexedConnection)> {
        let shared = &self.0;
        let answers =
            futures_util::future::join_all(shared.sentinels.iter().zip(asked.iter_mut()).map(
                |(sentinel, conn)| {
                    let ask = ask(sentinel, conn, &shared.service, &shared.config);
                    async move {
                        tokio::time::timeout(shared.connect_timeout, ask)
                            .await
                            .unwrap_or_else(|_| Err(timed_out()))
                    }
                },
            ))
            .await;
        drop(asked);
        let named = newest(answers, &shared.service)?;
        let client = shared.node.client(named.host.clone(), named.port)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&shared.config)
            .await?;
        let role: Role = redis::cmd("ROLE").query_async(&mut conn).await?;
        if !matches!(role, Role::Primary { .. }) {
            return Err(not_found(format!(
                "the sentinels name {}:{} the primary of '{}', and it says it is not (a failover is under way)",
                named.host, named.port, shared.service
            )));
        }
        Ok((client, conn))
    }

    fn open(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.lock();
        current.conn.clone().map(|c| (current.generation, c))
    }

    /// Drops the connection of `generation` (if it is still the current one): the next
    /// command asks the sentinels.
    fn forget(&self, generation: u64) {
        let mut current = self.lock();
        if current.generation == generation && current.conn.is_some() {
            current.conn = None;
            current.generation += 1;
            tracing::debug!("redis sentinel: dropped the primary's connection; asking the sentinels at the next command");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.0.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After `result` of a command sent on the connection of `generation`: forgets the
    /// connection if the failure says the node is gone or is not the primary, and answers
    /// whether to send the command once more (a first `READONLY` refusal: nothing ran).
    fn retry<T>(&self, generation: u64, result: &RedisResult<T>, tries: &mut u32) -> bool {
        match result {
            Err(e) if is_readonly(e) => {
                self.forget(generation);
                *tries += 1;
                *tries < 2
            }
            Err(e) if is_connection_failure(e) => {
                self.forget(generation);
                false
            }
            _ => false,
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut tries = 0;
            loop {
                let (generation, mut conn) = self.primary().await?;
                let result = conn.req_packed_command(cmd).await;
                if !self.retry(generation, &result, &mut tries) {
                    return result;
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut tries = 0;
            loop {
                let (generation, mut conn) = self.primary().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                if !self.retry(generation, &result, &mut tries) {
                    return result;
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.open().map_or(0, |(_, c)| c.get_db())
    }
}

/// A node that is not (or no more) the primary refused a write: in a transaction, the
/// `EXECABORT` of a queued command's `READONLY`.
pub(super) fn is_readonly(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || (e.code() == Some("EXECABORT") && e.to_string().contains("READONLY"))
}

/// The connection to the node is unusable (or the sentinels named none).
fn is_connection_failure(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading)
        )
}

impl Node {
    /// A client for the node at `host:port`.
    fn client(&self, host: String, port: u16) -> RedisResult<Client> {
        let addr = match self.secure {
            true => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            false => ConnectionAddr::Tcp(host, port),
        };
        let info = addr
            .into_connection_info()?
            .set_redis_settings(self.redis.clone());
        match &self.certs {
            Some(certs) => Client::build_with_tls(info, super::conn::clone_certs(certs)),
            None => Client::open(info),
        }
    }
}

/// Asks one sentinel which node is the primary of `service`, through its open connection
/// if there is one; `None`: it names none that is up. `SENTINEL MASTER` gives the state and
/// the configuration's epoch, `SENTINEL GET-MASTER-ADDR-BY-NAME` the address: during a
/// failover it is already the promoted replica's, while the other still names the old
/// primary (which, if it is up, says it is a primary until the failover ends).
async fn ask(
    sentinel: &Client,
    conn: &mut Option<MultiplexedConnection>,
    service: &str,
    config: &AsyncConnectionConfig,
) -> RedisResult<Option<Named>> {
    let open = match conn {
        Some(open) => open,
        None => conn.insert(
            sentinel
                .get_multiplexed_async_connection_with_config(config)
                .await?,
        ),
    };
    let answer: RedisResult<(HashMap<String, String>, Option<Addr>)> = redis::pipe()
        .cmd("SENTINEL")
        .arg("MASTER")
        .arg(service)
        .cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(service)
        .query_async(open)
        .await;
    match answer {
        Ok((info, addr)) => Ok(named(&info, addr)),
        Err(e) if e.to_string().contains("No such master") => Err(not_found(format!(
            "the sentinels watch no service named '{service}'"
        ))),
        Err(e) => {
            if is_connection_failure(&e) {
                *conn = None;
            }
            Err(e)
        }
    }
}

/// The primary a sentinel names (its `SENTINEL MASTER` state, and the address of
/// `GET-MASTER-ADDR-BY-NAME`), if it is up by that sentinel's account.
fn named(info: &HashMap<String, String>, addr: Option<Addr>) -> Option<Named> {
    let flags = info.get("flags")?;
    let up = flags.split(',').any(|f| f == "master")
        && !flags.split(',').any(|f| f == "s_down" || f == "o_down");
    up.then_some(())?;
    let (host, port) = addr?;
    Some(Named {
        host,
        port: port.parse().ok()?,
        epoch: info.get("config-epoch")?.parse().ok()?,
    })
}

/// The answer of the newest configuration among the sentinels' answers, or the error that
/// says most: one a sentinel answered (a refused password, an unknown service) rather than
/// one of a sentinel that could not be reached.
fn newest(answers: Vec<RedisResult<Option<Named>>>, service: &str) -> RedisResult<Named> {
    let mut failure: Option<RedisError> = None;
    let mut newest: Option<Named> = None;
    for answer in answers {
        match answer {
            Ok(Some(named)) if newest.as_ref().is_none_or(|n| named.epoch > n.epoch) => {
                newest = Some(named)
            }
            Ok(_) => {}
            Err(e) if failure.as_ref().is_none_or(unreached) => failure = Some(e),
            Err(_) => {}
        }
    }
    newest.ok_or_else(|| {
        failure.unwrap_or_else(|| {
            not_found(format!(
                "no sentinel names a primary of '{service}' that is up"
            ))
        })
    })
}

/// The error of a sentinel that did not answer (refused, dropped, timed out).
fn unreached(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

fn not_found(detail: String) -> RedisError {
    RedisError::from((
        ErrorKind::MasterNameNotFoundBySentinel,
        "no primary",
        detail,
    ))
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the sentinels or the primary they named did not answer in time",
    ))
}

/// `/SERVICE[/db]`.
fn parse_path(url: &StoreUrl) -> Result<Parsed> {
    let path = url.url.path().trim_start_matches('/');
    let mut parts = path.split('/');
    let service = percent(parts.next().unwrap_or_default());
    if service.is_empty() {
        return Err(Error::config(format!(
            "{}: name the service the sentinels watch: redis+sentinel://host:26379/mymaster",
            url.redacted
        )));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
            Error::config(format!(
                "{}: '{db}' is not a database number; write redis+sentinel://host:26379/{service}/0",
                url.redacted
            ))
        })?,
    };
    if parts.next().is_some_and(|p| !p.is_empty()) {
        return Err(Error::config(format!(
            "{}: the path is /SERVICE or /SERVICE/DB, nothing more",
            url.redacted
        )));
    }
    Ok(Parsed { service, db })
}

/// `host[:port]` of the host list (port 26379 when left out); IPv6 in brackets.
fn split_host(host: &str) -> Option<(String, u16)> {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) if !host.ends_with(']') => (h, p.parse().ok()?),
        _ => (host, DEFAULT_PORT),
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then(|| (percent(h), port))
}

fn percent(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SentinelConn> {
        let mut url = StoreUrl::parse(text)?;
        let credentials = Credentials::take(&mut url);
        let second = Duration::from_secs(1);
        SentinelConn::from_url(&url, credentials, &None, (second, second))
    }

    #[test]
    fn paths_and_hosts() {
        let url = StoreUrl::parse("redis+sentinel://a,b:1,[::1]:2/svc/3").unwrap();
        assert_eq!(parse_path(&url).unwrap().service, "svc");
        assert_eq!(parse_path(&url).unwrap().db, 3);
        assert_eq!(split_host("a"), Some(("a".into(), 26379)));
        assert_eq!(split_host("b:1"), Some(("b".into(), 1)));
        assert_eq!(split_host("[::1]:2"), Some(("::1".into(), 2)));
        assert_eq!(split_host("[::1]"), Some(("::1".into(), 26379)));
        for (bad, says) in [
            ("redis+sentinel://u:Pw-7q@a:1", "name the service"),
            ("redis+sentinel://u:Pw-7q@a:1/", "name the service"),
            ("redis+sentinel://u:Pw-7q@a:1/s/x", "not a database number"),
            ("redis+sentinel://u:Pw-7q@a:1/s/-1", "not a database number"),
            ("redis+sentinel://u:Pw-7q@a:1/s/0/x", "nothing more"),
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("Pw-7q"), "{e}");
        }
        assert!(parse("redis+sentinel://u:Pw-7q@a:1,b/s/0?sentinel_password=x").is_ok());
    }

    fn info(flags: &str, epoch: &str) -> HashMap<String, String> {
        [
            ("flags", flags),
            ("ip", "10.0.0.9"),
            ("port", "7009"),
            ("config-epoch", epoch),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn the_newest_configuration_names_the_primary() {
        let at = |port, epoch| Named {
            host: "10.0.0.1".into(),
            port,
            epoch,
        };
        let addr = |port: &str| Some(("10.0.0.1".to_string(), port.to_string()));
        assert_eq!(named(&info("master", "3"), addr("7001")), Some(at(7001, 3)));
        let failing_over = info("master,failover_in_progress,promoted", "3");
        assert_eq!(named(&failing_over, addr("7001")), Some(at(7001, 3)));
        assert_eq!(named(&info("master,s_down", "3"), addr("7001")), None);
        let down = info("master,o_down,failover_in_progress", "3");
        assert_eq!(named(&down, addr("7001")), None);
        assert_eq!(named(&info("master", "3"), addr("x")), None);
        assert_eq!(named(&info("master", "3"), None), None);
        // A sentinel that has not heard of the failover names the old primary, which may be
        // back and calling itself a primary: the others' newer epoch wins, in any order.
        let refused = || {
            Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        };
        let answers = vec![
            Ok(Some(at(7000, 1))),
            refused(),
            Ok(Some(at(7001, 2))),
            Ok(None),
        ];
        assert_eq!(newest(answers, "svc").unwrap(), at(7001, 2));
        let answers = vec![Ok(Some(at(7001, 2))), Ok(Some(at(7000, 1)))];
        assert_eq!(newest(answers, "svc").unwrap(), at(7001, 2));
        // No answer: the error a sentinel gave beats an unreachable one.
        let wrong = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        let e = newest(vec![refused(), Err(wrong), refused()], "svc").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthenticationFailed);
        let e = newest(vec![Ok(None)], "svc").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MasterNameNotFoundBySentinel);
    }

    #[test]
    fn readonly_is_recognised_in_a_transaction_too() {
        let plain = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert!(is_readonly(&plain));
        let other = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert!(!is_readonly(&other));
    }
}
