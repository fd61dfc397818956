//! Redlock's settings, from [`RedlockBuilder`] and the URL query, and the node URLs.

use std::time::Duration;

use crate::duration;
use crate::error::{Error, Result};
use crate::retry::Retry;
use crate::url::StoreUrl;

use super::RedlockStore;

/// Redlock's own URL options (the nodes' options — `ca_file`, `connect_timeout`, `timeout` —
/// are accepted too and passed on to every node).
pub(crate) const OPTIONS: &[&str] = &[
    "node_timeout",
    "drift_factor",
    "retry_delay",
    "retry_jitter",
    "retry_count",
    "fences",
];

/// How long one node may take to answer a lock operation before it counts as a failure.
///
/// Operations answer as soon as a quorum has, so a hung node costs nothing while the others
/// are quick: this only bounds how long a try waits when fewer than a quorum answer promptly,
/// and how much of a lease's validity slow answers can use. 250 ms is under 1% of the
/// default 30 s ttl yet tolerates a busy client or server.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(250);
/// The share of the ttl allowed for clock drift between the nodes.
pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// The pause between two tries of a waiting `acquire`.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The pause varies by up to this much either way.
pub const DEFAULT_RETRY_JITTER: Duration = Duration::from_millis(100);
/// Retries after the first try; negative = unlimited (cadenas waits forever by default).
pub const DEFAULT_RETRY_COUNT: i64 = -1;

/// The largest accepted `drift_factor`: past it, the drift eats most of every lease.
const MAX_DRIFT_FACTOR: f64 = 0.5;
/// The largest accepted `node_timeout`.
const MAX_NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// The checked settings of one store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub node_timeout: Duration,
    pub drift_factor: f64,
    pub retry_delay: Duration,
    pub retry_jitter: Duration,
    pub retry_count: i64,
    /// Leases get fences (see "Fencing" in the store's docs); `false` is the cheaper path.
    pub fences: bool,
}

impl Settings {
    /// `ttl × drift_factor + 2 ms`: what the distlock algorithm allows for clock drift
    /// between the nodes (and the 2 ms for the nodes' expiry resolution).
    pub fn drift(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.drift_factor) + Duration::from_millis(2)
    }

    /// The retry policy the options describe: a pause of `retry_delay ± retry_jitter`
    /// (uniform) and `retry_count + 1` tries (unlimited when negative).
    pub fn retry(&self) -> Retry {
        let low = self
            .retry_delay
            .saturating_sub(self.retry_jitter)
            .max(Duration::from_millis(1));
        let high = self.retry_delay + self.retry_jitter;
        let retry = Retry::default().delay(low).jitter(high - low);
        match u32::try_from(self.retry_count) {
            Ok(count) => retry.attempts(count.saturating_add(1)),
            Err(_) if self.retry_count > 0 => retry.attempts(u32::MAX),
            Err(_) => retry,
        }
    }

    fn check(&self, store: &str) -> Result<()> {
        if self.node_timeout.is_zero() || self.node_timeout > MAX_NODE_TIMEOUT {
            return Err(Error::config(format!(
                "node_timeout {} in {store} must be between 1ms and {}",
                duration::format_duration(self.node_timeout),
                duration::format_duration(MAX_NODE_TIMEOUT)
            )));
        }
        if !(0.0..=MAX_DRIFT_FACTOR).contains(&self.drift_factor) {
            return Err(Error::config(format!(
                "drift_factor {} in {store} must be between 0 and {MAX_DRIFT_FACTOR}",
                self.drift_factor
            )));
        }
        duration::check("retry_delay", self.retry_delay)?;
        if self.retry_jitter > duration::MAX_DURATION {
            duration::check("retry_jitter", self.retry_jitter)?;
        }
        Ok(())
    }
}

/// Settings for a [`RedlockStore`]. Values set here win over the URL's query options.
///
/// ```no_run
/// # async fn example() -> cadenas::Result<()> {
/// use std::time::Duration;
/// use cadenas::stores::redlock::RedlockStore;
/// use cadenas::Locks;
///
/// let store = RedlockStore::builder()
///     .node_timeout(Duration::from_millis(50))
///     .drift_factor(0.01)
///     .retry_delay(Duration::from_millis(200))
///     .retry_jitter(Duration::from_millis(100))
///     .retry_count(10)
///     .connect("redlock://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379")
///     .await?;
/// // `Locks` takes the store's retry policy unless its builder is given one.
/// let locks = Locks::new(store);
/// # let _ = locks;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedlockBuilder {
    node_timeout: Option<Duration>,
    drift_factor: Option<f64>,
    retry_delay: Option<Duration>,
    retry_jitter: Option<Duration>,
    retry_count: Option<i64>,
    fences: Option<bool>,
}

impl RedlockBuilder {
    /// How long one node may take to answer before it counts as failed (default 250 ms; URL
    /// option `node_timeout`). Keep it far below the ttl.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = Some(timeout);
        self
    }

    /// The share of the ttl set aside for clock drift (default 0.01; URL `drift_factor`).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = Some(factor);
        self
    }

    /// The pause between tries of a waiting `acquire` (default 200 ms; URL `retry_delay`).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }

    /// How much the pause varies either way (default 250 ms; URL `retry_jitter`).
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.retry_jitter = Some(jitter);
        self
    }

    /// Retries after the first try; negative = unlimited (default -1; URL `retry_count`).
    pub fn retry_count(mut self, count: i64) -> Self {
        self.retry_count = Some(count);
        self
    }

    /// Whether leases get fences (default `true`; URL `fences`). `false` saves each node the
    /// fence counter and the release's write of it (Redis' work per cycle about 0.6×; see
    /// BENCHMARKS.md, "Redlock") and hands out no fences: nothing then stops a holder that
    /// paused past its lease, and leader elections are refused.
    pub fn fences(mut self, fences: bool) -> Self {
        self.fences = Some(fences);
        self
    }

    /// Connects to `redlock://[user:pass@]host:port,host:port,…[/db]` (`redlock+tls://…` for
    /// TLS). See [`RedlockStore::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is connected until the first operation.
    pub async fn connect(self, url: &str) -> Result<RedlockStore> {
        self.from_url(StoreUrl::parse(url)?).await
    }

    /// Connects to an already parsed URL (the lock layer has taken its own options).
    pub async fn from_url(self, mut url: StoreUrl) -> Result<RedlockStore> {
        let settings = self.settings(&mut url)?;
        let nodes = node_urls(&mut url)?;
        RedlockStore::open(url.redacted.clone(), nodes, settings).await
    }

    /// Takes Redlock's options out of `url`; the builder's values win.
    fn settings(&self, url: &mut StoreUrl) -> Result<Settings> {
        let node_timeout = url.take_duration("node_timeout")?;
        let retry_delay = url.take_duration("retry_delay")?;
        let retry_jitter = match url.take("retry_jitter") {
            // Zero is a valid jitter, which `parse_duration` refuses.
            Some(text) if text.trim() == "0" => Some(Duration::ZERO),
            Some(text) => Some(duration::parse_duration("retry_jitter", &text)?),
            None => None,
        };
        let drift_factor = match url.take("drift_factor") {
            None => None,
            Some(text) => Some(text.parse::<f64>().map_err(|_| {
                Error::config(format!(
                    "drift_factor={text} in {} is not a number (e.g. 0.01)",
                    url.redacted
                ))
            })?),
        };
        let retry_count = match url.take("retry_count") {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                Error::config(format!(
                    "retry_count={text} in {} is not a whole number (-1 = unlimited)",
                    url.redacted
                ))
            })?),
        };
        let fences = url.take_bool("fences")?;
        let settings = Settings {
            fences: self.fences.or(fences).unwrap_or(true),
            node_timeout: self
                .node_timeout
                .or(node_timeout)
                .unwrap_or(DEFAULT_NODE_TIMEOUT),
            drift_factor: self
                .drift_factor
                .or(drift_factor)
                .unwrap_or(DEFAULT_DRIFT_FACTOR),
            retry_delay: self
                .retry_delay
                .or(retry_delay)
                .unwrap_or(DEFAULT_RETRY_DELAY),
            retry_jitter: self
                .retry_jitter
                .or(retry_jitter)
                .unwrap_or(DEFAULT_RETRY_JITTER),
            retry_count: self
                .retry_count
                .or(retry_count)
                .unwrap_or(DEFAULT_RETRY_COUNT),
        };
        settings.check(&url.redacted)?;
        Ok(settings)
    }
}

/// One node: `host:port` for messages, and its `redis://` URL (credentials, database and
/// the Redis store's options included — never print it).
pub(crate) struct NodeUrl {
    pub name: String,
    pub url: String,
}

/// Turns `redlock://u:p@h1:p1,h2:p2/db?timeout=1s` into `redis://u:p@h1:p1/db?timeout=1s`,
/// … (`rediss://` for `redlock+tls://`). Every option left in `url` must be the Redis
/// store's. The same node twice is refused: it would vote twice.
fn node_urls(url: &mut StoreUrl) -> Result<Vec<NodeUrl>> {
    crate::scheme::REDLOCK.check(url)?;
    let scheme = url.url.scheme().to_owned();
    let node_scheme = match scheme.as_str() {
        "redlock+tls" => "rediss",
        _ => "redis",
    };
    let mut accepted = OPTIONS.to_vec();
    accepted.extend_from_slice(crate::stores::redis::OPTIONS);
    if let Some(name) = url.options.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(Error::config(format!(
            "unknown option '{name}' in {}; accepted options: namespace, ttl, {}",
            url.redacted,
            accepted.join(", ")
        )));
    }
    let mut base = url.without_query();
    if !url.options.is_empty() {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(url.options.iter());
        base.set_query(Some(&query.finish()));
    }
    let bad_host = |host: &str| {
        Error::config(format!(
            "{}: '{host}' is not host:port",
            url.redacted.clone()
        ))
    };
    let mut nodes: Vec<NodeUrl> = Vec::new();
    for host in &url.hosts {
        let (h, p) = match host.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (h, p),
            _ if !host.contains(':') || host.ends_with(']') => (host.as_str(), "6379"),
            _ => return Err(bad_host(host)),
        };
        let port: u16 = p.parse().map_err(|_| bad_host(host))?;
        let mut node = base.clone();
        node.set_host(Some(h)).map_err(|_| bad_host(host))?;
        node.set_port(Some(port)).map_err(|_| bad_host(host))?;
        let name = format!("{}:{port}", h.to_ascii_lowercase());
        if nodes.iter().any(|n| n.name == name) {
            return Err(Error::config(format!(
                "{}: node {name} is listed twice; each master must vote once",
                url.redacted
            )));
        }
        let text = node
            .as_str()
            .replacen(&format!("{scheme}://"), &format!("{node_scheme}://"), 1);
        nodes.push(NodeUrl { name, url: text });
    }
    if nodes.is_empty() {
        return Err(Error::config(format!(
            "{}: no nodes; write redlock://host:6379,host:6380,host:6381",
            url.redacted
        )));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Settings, Vec<NodeUrl>)> {
        let mut url = StoreUrl::parse(text)?;
        let settings = RedlockBuilder::default().settings(&mut url)?;
        Ok((settings, node_urls(&mut url)?))
    }

    #[test]
    fn node_urls_keep_credentials_database_and_node_options() {
        let (s, nodes) =
            parse("redlock://u:pw@a:7000,B:7001,c/2?timeout=1s&drift_factor=0.02&retry_count=3")
                .unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a:7000", "b:7001", "c:6379"]);
        assert_eq!(nodes[0].url, "redis://u:pw@a:7000/2?timeout=1s");
        assert_eq!(nodes[2].url, "redis://u:pw@c:6379/2?timeout=1s");
        assert_eq!(s.drift_factor, 0.02);
        assert_eq!(s.retry_count, 3);
        assert_eq!(s.node_timeout, DEFAULT_NODE_TIMEOUT);
        let (_, tls) = parse("redlock+tls://a:1,b:2,c:3").unwrap();
        assert!(tls[1].url.starts_with("rediss://b:2"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for bad in [
            "redlock://a:1,a:1,b:2",
            "redlock://a:1,b:x",
            "redlock://a:1,b:2?bogus=1",
            "redlock://a:1?drift_factor=2",
            "redlock://a:1?drift_factor=abc",
            "redlock://a:1?node_timeout=0ms",
            "redlock://a:1?retry_count=many",
            "redlock://a:1?retry_delay=0ms",
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(Error::Config { .. } | Error::InvalidInput { .. })
                ),
                "{bad} was accepted"
            );
        }
        let e = parse("redlock://u:s3cr3t@a:1,a:1")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn zero_jitter_is_allowed() {
        let (s, _) = parse("redlock://a:1?retry_jitter=0").unwrap();
        assert_eq!(s.retry_jitter, Duration::ZERO);
    }

    #[test]
    fn builder_wins_over_the_url() {
        let mut url = StoreUrl::parse("redlock://a:1?retry_count=3&node_timeout=1s").unwrap();
        let s = RedlockBuilder::default()
            .retry_count(-1)
            .settings(&mut url)
            .unwrap();
        assert_eq!(s.retry_count, -1);
        assert_eq!(s.node_timeout, Duration::from_secs(1));
    }

    #[test]
    fn retry_mapping() {
        let s = Settings {
            node_timeout: DEFAULT_NODE_TIMEOUT,
            drift_factor: DEFAULT_DRIFT_FACTOR,
            retry_delay: Duration::from_millis(200),
            retry_jitter: Duration::from_millis(100),
            retry_count: 2,
            fences: true,
        };
        let r = s.retry();
        assert_eq!(r.get_attempts(), Some(3));
        for _ in 0..200 {
            let p = r.pause(1);
            assert!(p >= Duration::from_millis(100) && p <= Duration::from_millis(300));
        }
        let unlimited = Settings {
            retry_count: -1,
            ..s
        };
        assert_eq!(unlimited.retry().get_attempts(), None);
        assert_eq!(s.drift(Duration::from_secs(10)), Duration::from_millis(102));
    }
}
