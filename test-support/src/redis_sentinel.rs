//! A Redis Sentinel topology on free ports in temporary directories: a primary, its
//! replicas and three sentinels (`redis-server sentinel.conf --sentinel`) that watch it,
//! with short failure detection (`down-after-milliseconds` 1000) so that a failover takes a
//! few seconds. Every process is killed on Drop (its log printed first when the test fails).

use std::time::{Duration, Instant};

use crate::redis::{cli_tls, RedisServer, TlsFiles};

/// How long the sentinels take to see each other and the replicas, at most.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The name of the service the sentinels watch.
pub const SERVICE: &str = "cadenas";

/// A primary with replicas and three sentinels.
pub struct SentinelTopology {
    /// The data nodes: the first one is the primary at the start, the others its replicas.
    pub nodes: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
    password: Option<String>,
    sentinel_password: Option<String>,
    /// The certificates every process of a TLS topology serves (one CA), in a directory of
    /// their own.
    tls: Option<(TlsFiles, tempfile::TempDir)>,
}

impl SentinelTopology {
    /// A primary, two replicas, three sentinels; no passwords.
    pub fn start() -> SentinelTopology {
        Self::with_passwords(None, None)
    }

    /// As [`start`](Self::start); the data nodes require `password` and the sentinels
    /// `sentinel_password`, when given. Returns once every sentinel knows both replicas and
    /// the other sentinels (a failover can be authorised).
    pub fn with_passwords(
        password: Option<&str>,
        sentinel_password: Option<&str>,
    ) -> SentinelTopology {
        Self::build(2, 3, password, sentinel_password, false)
    }

    /// One primary watched by one sentinel (quorum 1), no replicas: enough to find the
    /// primary, not to fail over. Starts in well under a second (for the bad-input rows).
    pub fn single(password: Option<&str>, sentinel_password: Option<&str>) -> SentinelTopology {
        Self::build(0, 1, password, sentinel_password, false)
    }

    /// One primary with one replica, watched by one sentinel (quorum 1): enough for a
    /// failover that sentinel decides alone (`SENTINEL FAILOVER`).
    pub fn one_sentinel_one_replica() -> SentinelTopology {
        Self::build(1, 1, None, None, false)
    }

    /// As [`single`](Self::single), every process speaking TLS only (certificates signed by
    /// one CA made for the topology; the sentinel talks TLS to the data node too).
    pub fn single_tls(password: Option<&str>) -> SentinelTopology {
        Self::build(0, 1, password, None, true)
    }

    /// The CA of a TLS topology's certificates (for `?ca_file=`).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|(files, _)| files.ca.as_path())
    }

    fn build(
        replicas: usize,
        sentinels: usize,
        password: Option<&str>,
        sentinel_password: Option<&str>,
        tls: bool,
    ) -> SentinelTopology {
        let tls = tls.then(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            (TlsFiles::generate(dir.path()), dir)
        });
        let mut auth: Vec<&str> = Vec::new();
        if let Some(pw) = password {
            auth.extend(["--requirepass", pw, "--masterauth", pw]);
        }
        let spawn = |args: &[&str]| match &tls {
            Some((files, _)) => {
                let mut args = args.to_vec();
                args.extend(["--tls-replication", "yes"]);
                RedisServer::spawn_tls_with(&args, files.clone(), password)
            }
            None => RedisServer::spawn(args, false, password, false),
        };
        let primary = spawn(&auth);
        let primary_port = primary.port.to_string();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let mut args = auth.clone();
            args.extend(["--replicaof", "127.0.0.1", &primary_port]);
            nodes.push(spawn(&args));
        }
        let mut topology = SentinelTopology {
            nodes,
            sentinels: Vec::new(),
            password: password.map(str::to_owned),
            sentinel_password: sentinel_password.map(str::to_owned),
            tls,
        };
        // Replicas attached before the sentinels start are known to them at once.
        topology.wait("both replicas are in sync", |t| {
            t.node_cli(0, &["INFO", "replication"])
                .matches("state=online")
                .count()
                == replicas
        });
        let quorum = sentinels / 2 + 1;
        let listen = match &topology.tls {
            Some((files, _)) => format!(
                "port 0\ntls-port {{port}}\ntls-replication yes\ntls-auth-clients no\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            ),
            None => "port {port}\n".to_owned(),
        };
        let mut conf = format!(
            "{listen}bind 127.0.0.1\ndir {{dir}}\nlogfile {{dir}}/redis.log\n\
             sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 4000\n\
             sentinel parallel-syncs {SERVICE} 2\n"
        );
        if let Some(pw) = password {
            conf.push_str(&format!("sentinel auth-pass {SERVICE} {pw}\n"));
        }
        if let Some(pw) = sentinel_password {
            conf.push_str(&format!("requirepass {pw}\n"));
        }
        for _ in 0..sentinels {
            let sentinel = RedisServer::custom(
                &["{dir}/sentinel.conf", "--sentinel"],
                "+monitor master",
                |dir, port| {
                    let text = conf
                        .replace("{port}", &port.to_string())
                        .replace("{dir}", &dir.display().to_string());
                    std::fs::write(dir.join("sentinel.conf"), text).expect("write sentinel.conf");
                },
            );
            topology.sentinels.push(sentinel);
        }
        topology.wait("the sentinels know each other and both replicas", |t| {
            (0..t.sentinels.len()).all(|i| {
                t.sentinel_cli(i, &["SENTINEL", "CKQUORUM", SERVICE])
                    .contains(&format!("OK {sentinels} usable"))
                    && t.sentinel_cli(i, &["SENTINEL", "REPLICAS", SERVICE])
                        .matches("slave")
                        .count()
                        >= replicas
            })
        });
        topology
    }

    /// `redis+sentinel://[:PASSWORD@]127.0.0.1:S1,…/cadenas[?sentinel_password=…]`, or
    /// `rediss+sentinel://…?ca_file=CA` for a TLS topology.
    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        let mut url = format!("{scheme}://{auth}{}/{SERVICE}", hosts.join(","));
        if let Some(pw) = &self.sentinel_password {
            url = crate::with_query(&url, &format!("sentinel_password={pw}"));
        }
        if let Some(ca) = self.ca_file() {
            url = crate::with_query(&url, &format!("ca_file={}", ca.display()));
        }
        url
    }

    /// The port of the primary as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        (0..self.sentinels.len()).find_map(|i| {
            let out = self.sentinel_cli(i, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]);
            out.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }

    /// The index in [`nodes`](Self::nodes) of the node on `port`.
    pub fn node_on(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of the topology")
    }

    /// Kills the current primary (SIGKILL); returns its index.
    pub fn kill_primary(&mut self) -> usize {
        let port = self.primary_port().expect("the sentinels name a primary");
        let i = self.node_on(port);
        self.nodes[i].kill();
        i
    }

    /// Waits until the sentinels name another primary than node `old`, and that node says
    /// it is a master; returns its index.
    pub fn wait_for_promotion(&self, old: usize, limit: Duration) -> usize {
        let old_port = self.nodes[old].port;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(port) = self.primary_port().filter(|p| *p != old_port) {
                let i = self.node_on(port);
                if self.node_cli(i, &["ROLE"]).starts_with("master") {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no replica was promoted within {limit:?}; sentinel log:\n{}",
                self.sentinels[0].log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `i` is a replica whose link to its primary is up (after a restart,
    /// once the sentinels have made it a replica and it has resynced); panics after `limit`.
    pub fn wait_for_replica(&self, i: usize, limit: Duration) {
        let port = self.nodes[i].port;
        crate::process::wait_until(
            &format!("the node on port {port} is a replica in sync"),
            limit,
            || {
                self.node_cli(i, &["INFO", "replication"])
                    .contains("master_link_status:up")
            },
        );
    }

    /// `redis-cli` against data node `i` (with its password).
    pub fn node_cli(&self, i: usize, args: &[&str]) -> String {
        cli_tls(
            self.nodes[i].port,
            self.password.as_deref(),
            self.ca_file(),
            args,
        )
    }

    /// `redis-cli` against sentinel `i` (with the sentinels' password).
    pub fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        cli_tls(
            self.sentinels[i].port,
            self.sentinel_password.as_deref(),
            self.ca_file(),
            args,
        )
    }

    fn wait(&self, what: &str, cond: impl Fn(&SentinelTopology) -> bool) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {SETTLE_TIMEOUT:?} waiting until {what}; sentinel log:\n{}",
                self.sentinels.first().map(|s| s.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
