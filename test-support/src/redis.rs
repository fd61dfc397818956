//! Real `redis-server` processes on free ports in temporary directories — plain, TLS (with
//! a certificate authority made by the test) and a Cluster of masters built with
//! `redis-cli --cluster create`. Each process is killed on Drop; when the test is failing
//! (panicking), its log is printed first.
//!
//! A missing `redis-server` fails the test with the command that installs it: these tests
//! are never silently skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Fails (with how to install it) unless `program` runs.
fn require(program: &str) -> Result<(), String> {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return Ok(());
    }
    Err(format!(
        "`{program}` was not found on PATH: these tests run a real Redis. Install it with \
         `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)."
    ))
}

/// A free TCP port on 127.0.0.1 with port + 10000 free too (a Cluster node's bus port).
fn free_port_with_bus() -> u16 {
    crate::free_ports_at(&[0, 10_000])
}

/// Where a server keeps its files: a temporary directory removed with it, or a directory
/// of the caller's that outlives it (the torture tool keeps its logs).
enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// Files of a certificate authority and a server certificate for `127.0.0.1`/`localhost`.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate authority (PEM), for `?ca_file=`.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes a fresh CA and a server certificate signed by it, in `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cadenas test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// One `redis-server` process.
pub struct RedisServer {
    /// The port it listens on (the TLS port of a TLS server).
    pub port: u16,
    child: Option<Child>,
    dir: Dir,
    /// TLS files, for a TLS server.
    pub tls: Option<TlsFiles>,
    password: Option<String>,
    args: Vec<String>,
    /// What its log says once it serves (a sentinel says something else than a server).
    ready: &'static str,
}

impl RedisServer {
    /// A plain server.
    pub fn start() -> RedisServer {
        Self::spawn(&[], false, None, false)
    }

    /// A plain server that requires `password` (`requirepass`).
    pub fn with_password(password: &str) -> RedisServer {
        Self::spawn(&["--requirepass", password], false, Some(password), false)
    }

    /// A TLS-only server whose certificate is signed by a CA made for this test.
    pub fn tls() -> RedisServer {
        Self::spawn(&[], true, None, false)
    }

    /// A TLS-only server (as [`tls`](Self::tls)) that requires `password`.
    pub fn tls_with_password(password: &str) -> RedisServer {
        Self::spawn(&["--requirepass", password], true, Some(password), false)
    }

    /// A plain server whose files (and log) go to `parent/redis-PORT`, kept after it stops;
    /// an error, instead of a panic, if `redis-server` is missing or does not start (for
    /// tools that report errors themselves).
    pub fn start_in(parent: &Path) -> Result<RedisServer, String> {
        require("redis-server")?;
        let port = crate::free_port();
        let dir = parent.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut server = Self::configure(Dir::Kept(dir), port, &[], None, None, false);
        server.try_run()?;
        Ok(server)
    }

    pub(crate) fn spawn(
        extra: &[&str],
        tls: bool,
        password: Option<&str>,
        cluster: bool,
    ) -> RedisServer {
        require("redis-server").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = if cluster {
            free_port_with_bus()
        } else {
            crate::free_port()
        };
        let tls_files = tls.then(|| TlsFiles::generate(dir.path()));
        let mut server = Self::configure(Dir::Temp(dir), port, extra, tls_files, password, cluster);
        server.run();
        server
    }

    /// A TLS-only server with the certificate `files` (several servers of one topology
    /// sharing one CA).
    pub(crate) fn spawn_tls_with(
        extra: &[&str],
        files: TlsFiles,
        password: Option<&str>,
    ) -> RedisServer {
        require("redis-server").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        let mut server = Self::configure(Dir::Temp(dir), port, extra, Some(files), password, false);
        server.run();
        server
    }

    /// The server's command line, without starting it.
    fn configure(
        dir: Dir,
        port: u16,
        extra: &[&str],
        tls_files: Option<TlsFiles>,
        password: Option<&str>,
        cluster: bool,
    ) -> RedisServer {
        let port_text = port.to_string();
        let log = dir.path().join("redis.log");
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            log.display().to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        match &tls_files {
            Some(files) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port_text.clone(),
                "--tls-cert-file".into(),
                files.cert.display().to_string(),
                "--tls-key-file".into(),
                files.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                files.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
            None => args.extend(["--port".into(), port_text.clone()]),
        }
        if cluster {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.path().join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                "5000".into(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        RedisServer {
            port,
            child: None,
            dir,
            tls: tls_files,
            password: password.map(str::to_owned),
            args,
            ready: "Ready to accept connections",
        }
    }

    /// A process started with `args` (a configuration file first, then options) in a
    /// temporary directory of its own, ready once its log says `ready`; `args` may name
    /// `{dir}` and `{port}` (this process's directory and port). For sentinels and replicas.
    pub(crate) fn custom(
        args: &[&str],
        ready: &'static str,
        setup: impl FnOnce(&Path, u16),
    ) -> RedisServer {
        require("redis-server").unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_port();
        setup(dir.path(), port);
        let path = dir.path().display().to_string();
        let fill = |a: &&str| {
            a.replace("{dir}", &path)
                .replace("{port}", &port.to_string())
        };
        let mut server = RedisServer {
            port,
            child: None,
            dir: Dir::Temp(dir),
            tls: None,
            password: None,
            args: args.iter().map(fill).collect(),
            ready,
        };
        server.run();
        server
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run(&mut self) {
        if let Err(e) = self.try_run() {
            panic!("{e}");
        }
    }

    /// Starts the process and waits until its log says it is ready.
    fn try_run(&mut self) -> Result<(), String> {
        let readies_before = self.log().matches(self.ready).count();
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.log().matches(self.ready).count() <= readies_before {
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Kills the server and starts it again on the same port, with empty data (no
    /// persistence): what a crash of a Redis without AOF looks like to clients.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// As [`restart`](Self::restart), with an error instead of a panic.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        self.try_run()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Whether the process still runs (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `redis://127.0.0.1:PORT` (with the password, if any), or `rediss://` for TLS.
    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// A redis-rs client for direct checks (plain servers only).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Suspends the server (SIGSTOP): its connections stay open but it answers nothing, like
    /// a hung host. Killing it (or Drop) still works while it is stopped.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a server suspended by [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("the server runs")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Kills the server now (to test a server going away).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of redis-server on port {} ({}) ---\n{}",
                self.port,
                self.url()
                    .replace(self.password.as_deref().unwrap_or("\u{0}"), "***"),
                self.log()
            );
        }
        self.kill();
    }
}

/// A Redis Cluster of `masters` masters, no replicas.
pub struct RedisCluster {
    /// The masters, in the order of the cluster's URL.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create`, and waits until every
    /// node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        require("redis-cli").unwrap_or_else(|e| panic!("{e}"));
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::spawn(&[], false, None, true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ok = cluster
                .nodes
                .iter()
                .all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok in {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Runs `redis-cli -p PORT ARGS…` against node `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        cli(self.nodes[i].port, args)
    }
}

/// Runs `redis-cli -p PORT ARGS…` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_with_password(port, None, args)
}

/// [`cli`] authenticated with `password` (passed in the environment, never on the command
/// line).
pub fn cli_with_password(port: u16, password: Option<&str>, args: &[&str]) -> String {
    cli_tls(port, password, None, args)
}

/// [`cli_with_password`] over TLS when `ca` (the CA that signed the server's certificate) is
/// given.
pub fn cli_tls(port: u16, password: Option<&str>, ca: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &port.to_string()]);
    if let Some(ca) = ca {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    if let Some(pw) = password {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let out = cmd.args(args).output().expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
