//! Connections: parsing `redis://`, `rediss://`, `redis+cluster://` and `redis+sentinel://`
//! URLs, one connection type over single node, Cluster and Sentinel, and mapping redis-rs
//! errors to [`StoreError`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind,
    Value,
};

use super::sentinel::{self, SentinelConn};
use crate::error::{Error, Result};
use crate::store::{StoreError, StoreErrorKind};
use crate::url::StoreUrl;

/// The options of one node's connection (Redlock passes them on to each of its nodes).
pub(crate) const OPTIONS: &[&str] = &["ca_file", "connect_timeout", "timeout"];

/// The options of the Redis store itself, beyond its connection's.
const STORE_OPTIONS: &[&str] = &["records"];

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one node (reconnecting), to a Cluster (following `MOVED`/`ASK`) or to
/// the primary of a Sentinel service (following failovers). Cheap to clone: clones share one
/// multiplexed connection.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// Where a background connection (pub/sub hand-off, expiry events) connects: a node, or
/// the primary the sentinels name at each (re)connect.
#[derive(Clone)]
pub(super) enum Target {
    Node(Box<Client>),
    Primary(SentinelConn),
}

impl Target {
    /// The client to connect with now.
    pub async fn client(&self) -> redis::RedisResult<Client> {
        match self {
            Target::Node(c) => Ok((**c).clone()),
            Target::Primary(s) => s.resolve().await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// A client for `host:port` with everything else (credentials, database, TLS) as `seed`'s:
/// for the Cluster masters that `CLUSTER SLOTS` reports.
pub(super) fn client_at(seed: &Client, host: &str, port: u16) -> redis::RedisResult<Client> {
    let info = seed.get_connection_info().clone();
    let addr = match info.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    Client::open(info.set_addr(addr))
}

/// Everything needed to open the store's connections, parsed from a URL.
pub(super) struct Settings {
    /// The URL without password, for messages.
    pub describe: String,
    /// One client per node: the node for a single-node store, the seed nodes for a Cluster,
    /// none for Sentinel.
    pub nodes: Vec<Client>,
    /// The sentinels' view of the primary, for a Sentinel store.
    pub sentinel: Option<SentinelConn>,
    /// Whether this is a Cluster.
    pub cluster: bool,
    pub tls: Option<redis::TlsCertificates>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// `records=true`: every acquire writes the holding's record.
    pub records: bool,
}

impl Settings {
    /// Parses a `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`,
    /// `redis+sentinel://` or `rediss+sentinel://` URL.
    pub fn parse(text: &str) -> Result<Settings> {
        Self::from_url(StoreUrl::parse(text)?)
    }

    /// Builds from a parsed URL (the lock layer has taken its own options).
    pub fn from_url(mut url: StoreUrl) -> Result<Settings> {
        let scheme = url.url.scheme().to_owned();
        let cluster = crate::scheme::REDIS_CLUSTER.answers(&scheme);
        let sentinel = crate::scheme::REDIS_SENTINEL.answers(&scheme);
        if !cluster && !sentinel {
            crate::scheme::REDIS.check(&url)?;
        }
        let records = url.take_bool("records")?.unwrap_or(false);
        if sentinel {
            let credentials = sentinel::Credentials::take(&mut url);
            let also = [STORE_OPTIONS, sentinel::OPTIONS].concat();
            let (tls, connect_timeout, response_timeout) = take_options(&mut url, &also)?;
            let timeouts = (connect_timeout, response_timeout);
            let primary = SentinelConn::from_url(&url, credentials, &tls, timeouts)?;
            return Ok(Settings {
                describe: url.redacted.clone(),
                nodes: Vec::new(),
                sentinel: Some(primary),
                cluster,
                tls,
                connect_timeout,
                response_timeout,
                records,
            });
        }
        let (tls, connect_timeout, response_timeout) = take_options(&mut url, STORE_OPTIONS)?;
        let node_scheme = if scheme.starts_with("rediss") {
            "rediss"
        } else {
            "redis"
        };
        let mut base = url.without_query();
        if !cluster {
            let node = node_url(base.as_str(), &url.redacted, &tls)?;
            return Ok(Settings {
                describe: url.redacted.clone(),
                nodes: vec![node],
                sentinel: None,
                cluster,
                tls,
                connect_timeout,
                response_timeout,
                records,
            });
        }
        let path = base.path().to_owned();
        if !path.is_empty() && path != "/" && path != "/0" {
            return Err(Error::config(format!(
                "{}: Redis Cluster has only database 0; remove the path",
                url.redacted
            )));
        }
        base.set_path("");
        let mut nodes = Vec::new();
        for host in &url.hosts {
            // Each node as redis://user:pass@host:port, keeping the credentials of the URL.
            let mut node = base.clone();
            let (h, p) = host.rsplit_once(':').unwrap_or((host.as_str(), "6379"));
            let port: u16 = p.parse().map_err(|_| {
                Error::config(format!("{}: '{host}' is not host:port", url.redacted))
            })?;
            node.set_host(Some(h))
                .and_then(|_| {
                    node.set_port(Some(port))
                        .map_err(|_| url::ParseError::InvalidPort)
                })
                .map_err(|_| {
                    Error::config(format!("{}: '{host}' is not host:port", url.redacted))
                })?;
            let text =
                node.as_str()
                    .replacen(&format!("{scheme}://"), &format!("{node_scheme}://"), 1);
            nodes.push(node_url(&text, &url.redacted, &tls)?);
        }
        if nodes.is_empty() {
            return Err(Error::config(format!(
                "{}: no nodes; write redis+cluster://host:7000,host:7001",
                url.redacted
            )));
        }
        Ok(Settings {
            describe: url.redacted.clone(),
            nodes,
            sentinel: None,
            cluster,
            tls,
            connect_timeout,
            response_timeout,
            records,
        })
    }

    /// Opens the command connection: fails if no node can be reached.
    pub async fn connect(&self) -> std::result::Result<Conn, StoreError> {
        if let Some(primary) = &self.sentinel {
            primary
                .connect()
                .await
                .map_err(|e| connect_error(&self.describe, e))?;
            return Ok(Conn::Sentinel(primary.clone()));
        }
        if self.cluster {
            let infos = self.nodes.iter().map(|c| c.get_connection_info().clone());
            let mut builder = ClusterClientBuilder::new(infos)
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.response_timeout)
                .retries(4);
            if let Some(tls) = &self.tls {
                builder = builder.certs(clone_certs(tls));
            }
            let client = builder
                .build()
                .map_err(|e| connect_error(&self.describe, e))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| connect_error(&self.describe, e))?;
            Ok(Conn::Cluster(conn))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(Some(self.response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let mut conn = ConnectionManager::new_with_config(self.nodes[0].clone(), config)
                .await
                .map_err(|e| connect_error(&self.describe, e))?;
            // A server that wants a password we did not give answers every command with
            // `NOAUTH`: say so now, before an acquire's `MULTI` meets it (redis-rs 1.8's
            // connection task panics on a transaction whose `MULTI` itself fails).
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| connect_error(&self.describe, e))?;
            Ok(Conn::Single(conn))
        }
    }
}

impl Settings {
    /// Makes the command connection of a single node without connecting: the first command
    /// connects, and every command after a failure tries once more (no backoff, so a node
    /// that is down answers at once). For Redlock, whose nodes may be down when it opens.
    #[cfg(feature = "redlock")]
    pub fn connect_lazy(&self) -> std::result::Result<Conn, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(self.nodes[0].clone(), config)
            .map_err(|e| connect_error(&self.describe, e))?;
        Ok(Conn::Single(conn))
    }
}

/// Takes the connection options; anything else but `also` is an error.
fn take_options(
    url: &mut StoreUrl,
    also: &[&str],
) -> Result<(Option<redis::TlsCertificates>, Duration, Duration)> {
    let ca_file = url.take("ca_file");
    let connect_timeout = url
        .take_duration("connect_timeout")?
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let response_timeout = url
        .take_duration("timeout")?
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
    url.reject_unknown(&[OPTIONS, also].concat())?;
    let tls = match ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| {
                Error::config(format!(
                    "ca_file={path} in {}: cannot read the CA certificate ({e})",
                    url.redacted
                ))
            })?;
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            })
        }
    };
    Ok((tls, connect_timeout, response_timeout))
}

pub(super) fn clone_certs(tls: &redis::TlsCertificates) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: tls.client_tls.as_ref().map(|c| redis::ClientTlsConfig {
            client_cert: c.client_cert.clone(),
            client_key: c.client_key.clone(),
        }),
        root_cert: tls.root_cert.clone(),
    }
}

/// A client for one node URL. redis-rs errors here name no password (checked in tests).
fn node_url(url: &str, redacted: &str, tls: &Option<redis::TlsCertificates>) -> Result<Client> {
    if tls.is_some() && !url.starts_with("rediss") {
        return Err(Error::config(format!(
            "ca_file in {redacted} needs TLS: write rediss://"
        )));
    }
    let built = match tls {
        Some(certs) => Client::build_with_tls(url, clone_certs(certs)),
        None => Client::open(url),
    };
    built.map_err(|e| Error::config(format!("{redacted} is not a valid Redis URL: {e}")))
}

/// An error while connecting: the store cannot be reached (refused, DNS, TLS, auth).
pub(super) fn connect_error(store: &str, e: RedisError) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("cannot connect to {store}: {}", describe_error(&e)),
    )
    .with_source(e)
}

/// Maps an error of an operation on `key` to a [`StoreError`] kind.
pub(super) fn op_error(key: Option<&str>, e: RedisError) -> StoreError {
    let kind = match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
            StoreErrorKind::Unavailable
        }
        // A server that wants a password we did not give: as unreachable as a wrong one.
        _ if is_auth_refusal(&e) => StoreErrorKind::Unavailable,
        _ if e.is_connection_refusal() => StoreErrorKind::Unavailable,
        _ if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() => {
            StoreErrorKind::Transient
        }
        ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::EmptySentinelList => StoreErrorKind::Unavailable,
        // A replica refused a write (a failover under way): nothing ran.
        _ if sentinel::is_readonly(&e) => StoreErrorKind::Transient,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => StoreErrorKind::Transient,
        _ => StoreErrorKind::Rejected,
    };
    let message = match key {
        Some(key) => format!("redis: {} (key '{key}')", describe_error(&e)),
        None => format!("redis: {}", describe_error(&e)),
    };
    StoreError::new(kind, message).with_source(e)
}

/// A Rejected error for a key that holds another type than a string.
pub(super) fn wrong_type(key: &str, found: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Rejected,
        format!(
            "the Redis key '{key}' holds a {found}, not a lock (a string, or a sorted set of readers or permit holders beside its group record); it is someone else's data and was left untouched: choose another key or namespace"
        ),
    )
}

/// An answer of a script that does not have the expected shape.
pub(super) fn bad_reply(key: &str, what: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Rejected,
        format!("unexpected reply from Redis for key '{key}': {what}"),
    )
}

fn describe_error(e: &RedisError) -> String {
    match e.kind() {
        ErrorKind::AuthenticationFailed => {
            format!("authentication failed (check user and password): {e}")
        }
        _ if is_auth_refusal(e) => {
            format!("authentication required (give user and password in the URL): {e}")
        }
        ErrorKind::MasterNameNotFoundBySentinel => format!(
            "no sentinel names a primary for this service that is up (check the service name \
             in the URL's path, or wait for the failover to end): {e}"
        ),
        _ => e.to_string(),
    }
}

/// `NOAUTH` (no password given) or `WRONGPASS` answered to a command, or the protocol
/// error a server that wants a password answers to a long command before any (`unauthenticated
/// multibulk length`: the acquire script has more than ten arguments).
fn is_auth_refusal(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) || e.to_string().contains("unauthenticated")
}
