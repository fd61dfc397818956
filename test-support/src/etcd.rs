//! Real `etcd` processes: one member or a cluster of several, on free ports in temporary
//! directories, each member killed on Drop (its log printed first when the test is
//! failing). Members can be killed, paused and restarted, and `etcdctl` runs against them.
//!
//! The members run with a 50 ms heartbeat and a 500 ms election timeout, so a cluster
//! elects a new leader within about a second of losing one, and the shortest lease is one
//! second (etcd's minimum is 1.5 election timeouts).
//!
//! A missing `etcd` fails the test with the command that installs it: never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
        "`{program}` was not found on PATH: these tests run a real etcd. Install it with \
         `apt-get install etcd-server etcd-client` (Debian/Ubuntu; scripts/test does it) or \
         `brew install etcd` (macOS)."
    ))
}

/// One member of a cluster.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }
}

/// A cluster of `etcd` members on 127.0.0.1 (one member for a plain server).
pub struct EtcdCluster {
    members: Vec<Member>,
    initial: String,
    token: String,
    _temp: Option<tempfile::TempDir>,
    user: Option<(String, String)>,
    /// The certificates of a member that serves clients over TLS only.
    tls: Option<crate::redis::TlsFiles>,
}

impl EtcdCluster {
    /// One member.
    pub fn start() -> EtcdCluster {
        Self::with_members(1)
    }

    /// `n` members, started together; returns once every member answers and the cluster
    /// has a leader.
    pub fn with_members(n: usize) -> EtcdCluster {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let path = temp.path().to_owned();
        let mut cluster = Self::configure(&path, n).unwrap_or_else(|e| panic!("{e}"));
        cluster._temp = Some(temp);
        cluster.run_all().unwrap_or_else(|e| panic!("{e}"));
        cluster
    }

    /// One member serving its clients over TLS only, with a certificate for 127.0.0.1 signed
    /// by a CA made for this test ([`ca_file`](Self::ca_file)); [`url`](Self::url) is then
    /// `etcds://127.0.0.1:PORT?ca_file=…`.
    pub fn tls() -> EtcdCluster {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let path = temp.path().to_owned();
        let mut cluster = Self::configure(&path, 1).unwrap_or_else(|e| panic!("{e}"));
        cluster.tls = Some(crate::redis::TlsFiles::generate(&path));
        cluster._temp = Some(temp);
        cluster.run_all().unwrap_or_else(|e| panic!("{e}"));
        cluster
    }

    /// The CA file that signed a TLS member's certificate ([`tls`](Self::tls)).
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    fn client_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `n` members whose files (and logs) go to `parent/etcd-PORT`, kept after they stop;
    /// an error instead of a panic when etcd is missing or does not start (for tools that
    /// report errors themselves).
    pub fn start_in(parent: &Path, n: usize) -> Result<EtcdCluster, String> {
        let mut cluster = Self::configure(parent, n)?;
        cluster.run_all()?;
        Ok(cluster)
    }

    fn configure(parent: &Path, n: usize) -> Result<EtcdCluster, String> {
        require("etcd")?;
        let mut members = Vec::new();
        for i in 0..n {
            let (client_port, peer_port) = (crate::free_port(), crate::free_port());
            let dir = parent.join(format!("etcd-{client_port}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            members.push(Member {
                name: format!("m{i}"),
                client_port,
                peer_port,
                dir,
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Ok(EtcdCluster {
            members,
            initial,
            token: format!("cadenas-{:x}", rand::random::<u64>()),
            _temp: None,
            user: None,
            tls: None,
        })
    }

    fn run_all(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            self.spawn(i)?;
        }
        self.wait_healthy()
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log())
            .map_err(|e| format!("{}: {e}", m.log().display()))?;
        let client = format!("{}://127.0.0.1:{}", self.client_scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
        }
        let child = command
            .args(["--name", &m.name, "--data-dir"])
            .arg(m.dir.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until every running member reports healthy (which needs a leader).
    pub fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let healthy = self
                .running()
                .all(|i| self.etcdctl_at(i, &["endpoint", "health"]).status.success());
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not become healthy within {READY_TIMEOUT:?}; logs:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| self.members[*i].child.is_some())
    }

    /// The store URL naming every member: `etcd://127.0.0.1:P,127.0.0.1:P…`.
    pub fn url(&self) -> String {
        let hosts = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let url = match &self.user {
            Some((u, p)) => format!("etcd://{u}:{p}@{hosts}"),
            None => format!("etcd://{hosts}"),
        };
        match &self.tls {
            Some(tls) => format!("etcds{}?ca_file={}", &url[4..], tls.ca.display()),
            None => url,
        }
    }

    /// The URL of member `i` alone.
    pub fn member_url(&self, i: usize) -> String {
        format!("etcd://127.0.0.1:{}", self.members[i].client_port)
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: it is built with at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// `etcdctl` against every member (as the root user once [`enable_auth`](Self::enable_auth)
    /// ran), with `args` still to add.
    pub fn etcdctl(&self) -> Command {
        let endpoints = self
            .members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.client_scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        self.etcdctl_to(&endpoints)
    }

    fn etcdctl_to(&self, endpoints: &str) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s");
        if let Some((u, p)) = &self.user {
            c.arg(format!("--user={u}:{p}"));
        }
        if let Some(tls) = &self.tls {
            c.arg("--cacert").arg(&tls.ca);
        }
        c
    }

    fn etcdctl_at(&self, i: usize, args: &[&str]) -> Output {
        let endpoint = format!(
            "{}://127.0.0.1:{}",
            self.client_scheme(),
            self.members[i].client_port
        );
        self.etcdctl_to(&endpoint)
            .args(args)
            .output()
            .expect("etcdctl runs (apt-get install etcd-client)")
    }

    /// Creates user `root` with `password`, turns authentication on, and from then on uses
    /// them in [`url`](Self::url) and [`etcdctl`](Self::etcdctl).
    pub fn enable_auth(&mut self, password: &str) {
        require("etcdctl").unwrap_or_else(|e| panic!("{e}"));
        for args in [
            vec!["user", "add", &format!("root:{password}")],
            vec!["auth", "enable"],
        ] {
            let out = self.etcdctl().args(&args).output().expect("etcdctl runs");
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.user = Some(("root".to_owned(), password.to_owned()));
    }

    /// Which member leads now, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        for i in self.running() {
            let out = self.etcdctl_at(i, &["endpoint", "status", "--write-out=fields"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("\"{name}\"")))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_owned())
            };
            if let (Some(id), Some(leader)) = (field("MemberID"), field("Leader")) {
                if id == leader && id != "0" {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory, after [`kill`](Self::kill).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// Pauses member `i` (SIGSTOP); [`resume`](Self::resume) continues it.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Continues member `i` after [`pause`](Self::pause).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(m.log()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            all.push_str(&format!("--- etcd {} (port {}):\n", m.name, m.client_port));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.members.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}
