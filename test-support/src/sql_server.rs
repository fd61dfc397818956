//! A private PostgreSQL or MariaDB server on a free port in a temporary
//! directory, for tests that must stop and restart the database (the machine's shared
//! servers are used by other tests at the same time and must never be restarted).
//!
//! Each server is a child process killed on Drop; when the test is failing (panicking), its
//! log is printed first. A missing server binary fails the test with the command that
//! installs it: these tests are never silently skipped.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres`
//! run as the `postgres` OS user (the owner of the temporary directory then).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A clean shutdown (PostgreSQL's "fast" mode, SIGINT; MariaDB's SIGTERM).
    Clean,
    /// A crash: PostgreSQL's "immediate" mode (SIGQUIT: no checkpoint, crash recovery at the
    /// next start), MariaDB killed with SIGKILL.
    Crash,
}

fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed ({cmd:?}):\n{text}");
    text
}

/// Waits until `log` contains `marker` more than `before` times, or panics with the log.
fn wait_for_log(log: &Path, marker: &str, before: usize, child: &mut Child, what: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(marker).count() > before {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready; its log:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready after {READY_TIMEOUT:?}; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server process and its log; on Drop the log is printed if the test is failing, and
/// the process is stopped as by a crash.
struct Process {
    name: &'static str,
    log: PathBuf,
    child: Option<Child>,
    /// The signals for a clean stop and for a crash.
    clean: &'static str,
    crash: &'static str,
}

impl Process {
    /// Spawns `cmd` and waits until its log shows `marker` once more than before.
    fn run(&mut self, cmd: &mut Command, marker: &str) {
        let before = self.log().matches(marker).count();
        let mut child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        wait_for_log(&self.log, marker, before, &mut child, self.name);
        self.child = Some(child);
    }

    fn stop(&mut self, how: Stop) {
        if let Some(mut child) = self.child.take() {
            let name = if how == Stop::Crash {
                self.crash
            } else {
                self.clean
            };
            let pid = child.id().to_string();
            let status = Command::new("kill")
                .args(["-s", name, &pid])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name} {pid} failed");
            let deadline = Instant::now() + Duration::from_secs(20);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{} did not stop within 20 s of SIG{name}", self.name);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", self.crash, &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = run_checked(
        Command::new("id").args([flag, user]),
        &format!("looking up the {user} user"),
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("`id {flag} {user}` printed {out:?}"))
}

fn running_as_root() -> bool {
    let out = run_checked(Command::new("id").arg("-u"), "id -u");
    out.trim() == "0"
}

/// A private PostgreSQL server (initdb'd into a temp dir, trust auth, user `postgres`).
pub struct PgServer {
    /// The port it listens on.
    pub port: u16,
    bin: PathBuf,
    /// `(uid, gid)` to run as, when we are root.
    run_as: Option<(u32, u32)>,
    process: Process,
    // Dropped last: the server stops before its directory goes.
    dir: tempfile::TempDir,
}

/// Where the PostgreSQL server binaries are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu put them there, off PATH).
fn pg_bindir() -> PathBuf {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_initdb(d))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "the PostgreSQL server binaries (initdb, postgres) were not found (neither \
             `pg_config --bindir` nor /usr/lib/postgresql/<version>/bin): these tests run a \
             private PostgreSQL server. Install it with `apt-get install postgresql` \
             (Debian/Ubuntu) or `brew install postgresql` (macOS)."
        ),
    }
}

impl PgServer {
    /// Initializes a cluster in a fresh temp dir and starts it on a free port.
    pub fn start() -> PgServer {
        let bin = pg_bindir();
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = running_as_root().then(|| (id_of("-u", "postgres"), id_of("-g", "postgres")));
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the temp dir to the postgres user");
        }
        let port = crate::free_port();
        let mut server = PgServer {
            port,
            bin,
            run_as,
            process: Process {
                name: "the private postgres",
                log: dir.path().join("postgres.log"),
                child: None,
                clean: "INT",  // "fast" shutdown
                crash: "QUIT", // "immediate" shutdown
            },
            dir,
        };
        let data = server.data();
        run_checked(
            server.command("initdb").arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        );
        server.run();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env_remove("PGDATA");
        cmd
    }

    fn run(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.process.log)
            .expect("open the server log");
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=40",
                "-c",
                "shared_buffers=16MB",
                // The tests crash the server process, not the machine: what was written
                // reaches the files through the OS either way, and without fsync the
                // crash recovery does not first sync the whole data directory (seconds on
                // a busy disk).
                "-c",
                "fsync=off",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.process
            .run(&mut cmd, "database system is ready to accept connections");
    }

    /// Stops the server (see [`Stop`]) and waits for it to exit.
    pub fn stop(&mut self, how: Stop) {
        self.process.stop(how);
    }

    /// Stops the server and starts it again on the same port and data directory.
    pub fn restart(&mut self, how: Stop) {
        self.stop(how);
        self.run();
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A private MariaDB (or MySQL) server with an empty data directory and
/// `--skip-grant-tables` (any user, no password), with a database `test`.
pub struct MariaDbServer {
    /// The port it listens on.
    pub port: u16,
    program: PathBuf,
    root: bool,
    process: Process,
    // Dropped last: the server stops before its directory goes.
    dir: tempfile::TempDir,
}

/// `mariadbd` (or `mysqld`) on PATH or in the sbin directories, which are often off PATH.
fn mariadbd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for name in ["mariadbd", "mysqld"] {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`mariadbd` (or `mysqld`) was not found on PATH or in /usr/sbin: these tests run a \
         private MariaDB server. Install it with `apt-get install mariadb-server` \
         (Debian/Ubuntu) or `brew install mariadb` (macOS)."
    )
}

impl MariaDbServer {
    /// Starts a server on a free port with a fresh data directory and creates database `test`.
    pub async fn start() -> MariaDbServer {
        let program = mariadbd();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut server = MariaDbServer {
            port: crate::free_port(),
            program,
            root: running_as_root(),
            process: Process {
                name: "the private mariadbd",
                log: dir.path().join("mariadbd.log"),
                child: None,
                clean: "TERM",
                crash: "KILL",
            },
            dir,
        };
        server.run();
        let url = format!("mysql://root@127.0.0.1:{}/", server.port);
        let pool = sqlx::MySqlPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the private mariadbd: {e}"));
        sqlx::query("CREATE DATABASE IF NOT EXISTS test")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        server
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.program);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", self.process.log.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.root {
            cmd.arg("--user=root");
        }
        self.process.run(&mut cmd, "ready for connections");
    }

    /// Stops the server (see [`Stop`]) and waits for it to exit.
    pub fn stop(&mut self, how: Stop) {
        self.process.stop(how);
    }

    /// Stops the server and starts it again on the same port and data directory.
    pub fn restart(&mut self, how: Stop) {
        self.stop(how);
        self.run();
    }

    /// `mysql://root@127.0.0.1:PORT/test`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
