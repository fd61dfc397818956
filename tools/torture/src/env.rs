//! The store under test and what surrounds it: the tool's own redis-servers, proxies in
//! front of network stores, the SQL admin connection, and each worker's URL.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rand::seq::IndexedRandom;

use crate::faults::FaultKind;
use crate::proxy::Proxy;
use crate::record::StoreKind;
use crate::servers::{redact, EtcdCluster, RedisCluster, RedisServer, SentinelTopology, SqlAdmin};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_MYSQL: &str = "mysql://root@127.0.0.1:3306/test";
const REDLOCK_NODES: usize = 5;
const ETCD_MEMBERS: usize = 3;
const CLUSTER_MASTERS: usize = 3;

pub struct StoreEnv {
    pub kind: StoreKind,
    pub describe: String,
    /// Servers the tool started (one for Redis, five for Redlock, the three masters of a
    /// Redis Cluster): restartable.
    pub servers: Vec<Arc<Mutex<RedisServer>>>,
    /// The Sentinel topology the tool started (a primary, two replicas, three sentinels):
    /// its primary can be failed over.
    pub sentinel: Option<Arc<Mutex<SentinelTopology>>>,
    /// The etcd cluster the tool started (three members): members restartable.
    pub etcd: Option<Arc<Mutex<EtcdCluster>>>,
    pub proxies: Arc<Vec<Proxy>>,
    pub admin: Option<tokio::sync::Mutex<SqlAdmin>>,
    /// The emulator the tool started for `--store dynamodb` (stopped on Drop).
    dynamo: Option<cadenas_test_support::dynamodb::DynamoServer>,
    /// The workers' URL (through the proxies), before per-worker changes.
    url: String,
    tag: String,
}

impl StoreEnv {
    /// Resolves `--store`: a store name (`memory`, `sqlite`, `redis`, `cluster`, `sentinel`,
    /// `redlock`, `postgres`, `mysql`, `etcd`, `dynamodb`: own servers or the local
    /// defaults) or a full URL.
    pub async fn setup(
        spec: &str,
        dir: &std::path::Path,
        faults: &[FaultKind],
        tag: &str,
    ) -> Result<StoreEnv> {
        let scheme = spec.split(':').next().unwrap_or("").to_ascii_lowercase();
        let kind = Self::kind_of(spec)?;
        let bare = !spec.contains("://");
        let mut env = StoreEnv {
            kind,
            describe: String::new(),
            servers: Vec::new(),
            sentinel: None,
            etcd: None,
            proxies: Arc::default(),
            admin: None,
            dynamo: None,
            url: String::new(),
            tag: tag.to_owned(),
        };
        let mut url = match kind {
            StoreKind::Memory => "memory:".to_owned(),
            StoreKind::Sqlite if bare => format!("sqlite://{}", dir.join("locks.db").display()),
            StoreKind::Redis | StoreKind::Redlock if bare => {
                let count = if kind == StoreKind::Redis {
                    1
                } else {
                    REDLOCK_NODES
                };
                let mut hosts = Vec::new();
                for _ in 0..count {
                    let server = RedisServer::start_in(dir).map_err(anyhow::Error::msg)?;
                    hosts.push(format!("127.0.0.1:{}", server.port));
                    env.servers.push(Arc::new(Mutex::new(server)));
                }
                format!("{scheme}://{}", hosts.join(","))
            }
            StoreKind::Cluster if bare => {
                let cluster =
                    blocking_start("a Redis Cluster", || RedisCluster::start(CLUSTER_MASTERS))
                        .await?;
                let url = cluster.url();
                let RedisCluster { nodes } = cluster;
                env.servers = nodes.into_iter().map(|n| Arc::new(Mutex::new(n))).collect();
                url
            }
            StoreKind::Sentinel if bare => {
                let topology =
                    blocking_start("a Redis Sentinel topology", SentinelTopology::start).await?;
                let url = topology.url();
                env.sentinel = Some(Arc::new(Mutex::new(topology)));
                url
            }
            StoreKind::Etcd if bare => {
                let cluster =
                    EtcdCluster::start_in(dir, ETCD_MEMBERS).map_err(anyhow::Error::msg)?;
                let url = cluster.url();
                env.etcd = Some(Arc::new(Mutex::new(cluster)));
                url
            }
            StoreKind::Postgres if bare => DEFAULT_POSTGRES.to_owned(),
            StoreKind::Mysql if bare => DEFAULT_MYSQL.to_owned(),
            StoreKind::Dynamodb if bare => {
                use cadenas_test_support::dynamodb::{DynamoServer, Emulator};
                // `dynamodb` is the tool's own dynalite, `dynamodb-moto` its own moto server.
                let emulator = if spec.eq_ignore_ascii_case("dynamodb-moto") {
                    Emulator::Moto
                } else {
                    Emulator::Dynalite
                };
                let server = DynamoServer::start(emulator);
                let url = server.url(&format!("torture_{tag}"));
                env.dynamo = Some(server);
                url
            }
            _ => spec.to_owned(),
        };
        if faults.contains(&FaultKind::Restart)
            && env.servers.is_empty()
            && env.etcd.is_none()
            && env.sentinel.is_none()
        {
            bail!("fault `restart` needs a server the tool runs itself: use --store redis, cluster, sentinel, redlock or etcd");
        }
        env.describe = cadenas::url::StoreUrl::parse(&url)
            .map(|u| u.redacted)
            .unwrap_or_else(|_| redact(&url));
        let direct = url.clone();
        if faults.iter().any(|f| f.needs_proxy()) {
            url = env.proxied(&url).await?;
        }
        match kind {
            StoreKind::Redis
            | StoreKind::Cluster
            | StoreKind::Sentinel
            | StoreKind::Redlock
            | StoreKind::Etcd => url = with_option(&url, "namespace", &format!("torture{tag}")),
            StoreKind::Postgres | StoreKind::Mysql => {
                let table = format!("torture_{tag}");
                let admin_url = admin_url(&direct)?;
                env.admin = Some(tokio::sync::Mutex::new(if kind == StoreKind::Postgres {
                    SqlAdmin::postgres(&admin_url, &table).await?
                } else {
                    let db = url::Url::parse(&admin_url)?
                        .path()
                        .trim_start_matches('/')
                        .to_owned();
                    SqlAdmin::mysql(&admin_url, &table, &db).await?
                }));
                url = with_option(&url, "table", &table);
                url = with_option(&url, "pool_size", "2");
            }
            _ => {}
        }
        env.url = url;
        Ok(env)
    }

    /// Which store `--store` names.
    pub fn kind_of(spec: &str) -> Result<StoreKind> {
        let scheme = spec.split(':').next().unwrap_or("").to_ascii_lowercase();
        Ok(match scheme.as_str() {
            "memory" => StoreKind::Memory,
            "sqlite" => StoreKind::Sqlite,
            "redis" | "rediss" => StoreKind::Redis,
            "cluster" | "redis+cluster" | "rediss+cluster" => StoreKind::Cluster,
            "sentinel" | "redis+sentinel" | "rediss+sentinel" => StoreKind::Sentinel,
            "redlock" => StoreKind::Redlock,
            "postgres" | "postgresql" => StoreKind::Postgres,
            "mysql" | "mariadb" => StoreKind::Mysql,
            "etcd" | "etcds" => StoreKind::Etcd,
            "dynamodb" | "dynamodb-moto" => StoreKind::Dynamodb,
            other => bail!(
                "unknown store '{other}': use memory, sqlite, redis, cluster, sentinel, redlock, postgres, mysql, etcd, dynamodb, dynamodb-moto or a URL of one"
            ),
        })
    }

    /// Puts a proxy in front of every host of `url` and returns the URL through them.
    async fn proxied(&mut self, url: &str) -> Result<String> {
        let (through, proxies) = proxy_hosts(url, std::net::Ipv4Addr::LOCALHOST)
            .await
            .with_context(|| format!("proxying {}", self.describe))?;
        self.proxies = Arc::new(proxies);
        Ok(through)
    }

    /// The run's random tag (in table, namespace and interface names).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The name a worker's connections carry: its PostgreSQL `application_name` or its
    /// MySQL user.
    pub fn conn_name(&self, worker: u32) -> String {
        format!("torture{}w{worker}", self.tag)
    }

    /// The URL worker `id` connects with.
    pub async fn worker_url(&self, id: u32) -> Result<String> {
        match (self.kind, &self.admin) {
            (StoreKind::Postgres, _) => Ok(with_option(
                &self.url,
                "application_name",
                &self.conn_name(id),
            )),
            (StoreKind::Mysql, Some(admin)) => {
                let user = self.conn_name(id);
                let password = admin.lock().await.create_user(&user).await?;
                let mut u = url::Url::parse(&self.url)?;
                u.set_username(&user)
                    .map_err(|()| anyhow::anyhow!("cannot set the user"))?;
                u.set_password(Some(&password))
                    .map_err(|()| anyhow::anyhow!("cannot set the password"))?;
                Ok(u.to_string())
            }
            _ => Ok(self.url.clone()),
        }
    }

    /// Picks two distinct own servers at random (Redlock restarts), or the one (Redis).
    pub fn restart_targets(&self, rng: &mut impl rand::Rng) -> Vec<Arc<Mutex<RedisServer>>> {
        let n = if self.kind == StoreKind::Redlock {
            2
        } else {
            1
        };
        self.servers.choose_multiple(rng, n).cloned().collect()
    }

    pub async fn teardown(&self) -> Result<()> {
        for p in self.proxies.iter() {
            p.drop_all();
        }
        if let Some(admin) = &self.admin {
            admin.lock().await.cleanup().await?;
        }
        for s in &self.servers {
            s.lock().unwrap().kill();
        }
        if let Some(topology) = &self.sentinel {
            // Poisoned if a failover panicked in test support: the processes still go.
            let t = &mut *topology
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for node in t.nodes.iter_mut().chain(t.sentinels.iter_mut()) {
                node.kill();
            }
        }
        if let Some(cluster) = &self.etcd {
            let mut c = cluster.lock().unwrap();
            for i in 0..c.len() {
                c.kill(i);
            }
        }
        Ok(())
    }
}

/// Starts servers with `start` (test support, which panics when they cannot start) on a
/// blocking thread; its panic becomes an error saying what could not be started.
async fn blocking_start<T: Send + 'static>(
    what: &str,
    start: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(start).await.map_err(|e| {
        let why = e
            .try_into_panic()
            .ok()
            .and_then(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            })
            .unwrap_or_else(|| "cancelled".to_owned());
        anyhow::anyhow!("could not start {what}: {why}")
    })
}

/// Puts a proxy listening on `bind` in front of every host of `url`; returns the URL through
/// them and the proxies (which stop when dropped).
pub async fn proxy_hosts(url: &str, bind: std::net::Ipv4Addr) -> Result<(String, Vec<Proxy>)> {
    let hosts = cadenas::url::StoreUrl::parse(url)?.hosts;
    if hosts.is_empty() || hosts.iter().any(|h| !h.contains(':')) {
        bail!(
            "faults `drop`, `delay` and `partition` need a network store with host:port in its URL"
        );
    }
    let (mut through, mut proxies) = (Vec::new(), Vec::new());
    for host in &hosts {
        let proxy = Proxy::start_on(bind, host).await?;
        through.push(proxy.addr.to_string());
        proxies.push(proxy);
    }
    Ok((
        url.replacen(&hosts.join(","), &through.join(","), 1),
        proxies,
    ))
}

/// The admin's URL: the store's own (not through a proxy) without query; `mariadb://`
/// becomes `mysql://` for the driver.
fn admin_url(url: &str) -> Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("bad URL {}", redact(url)))?;
    u.set_query(None);
    let text = u.to_string();
    Ok(match text.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => text,
    })
}

/// Adds `name=value` to the query unless the URL has that option already.
fn with_option(url: &str, name: &str, value: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
    {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            with_option("postgres://h:1/db", "table", "t"),
            "postgres://h:1/db?table=t"
        );
        assert_eq!(
            with_option("postgres://h:1/db?table=x", "table", "t"),
            "postgres://h:1/db?table=x"
        );
        assert_eq!(
            with_option("redis://h:1?a=b", "n", "v"),
            "redis://h:1?a=b&n=v"
        );
        assert_eq!(
            admin_url("mariadb://root@h:3306/test?table=t").unwrap(),
            "mysql://root@h:3306/test"
        );
    }
}
