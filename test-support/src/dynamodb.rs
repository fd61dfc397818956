//! DynamoDB-compatible servers on free ports in temporary directories: `dynalite` (npm, no
//! transactions) and `moto_server` (PyPI `moto[server]`, in server mode). Each emulator has
//! its own gaps, so the DynamoDB store's tests run on both; neither expires items by TTL.
//!
//! `dynalite` is installed on first use into `<target>/tmp/dynalite` (Cargo's target dir,
//! found from the running test binary) with `npm install`, unless `dynalite` is on PATH;
//! moto must be importable by `python3` (`scripts/test` installs `moto[server]` with pip). A missing emulator
//! fails the test with the command that installs it. Each server is killed on Drop; when
//! the test is failing (panicking), its log is printed first.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// moto's server (what `moto_server` runs) with one change: requests are served one at a
/// time. `moto_server` answers each request on a thread of its own and its DynamoDB backend
/// does not serialize them, so two conditional writes to one item at once can both pass
/// their condition (the store's fence check caught two holders at once). DynamoDB applies
/// writes to an item one at a time; serializing moto's requests gives the same.
const MOTO: &str = r#"
import sys, threading
try:
    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
except ImportError as e:
    sys.exit(f"moto is missing ({e}): install it with pip install 'moto[server]'")
app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()
def serialized(environ, start_response):
    with one_at_a_time:
        return list(app(environ, start_response))
run_simple(sys.argv[1], int(sys.argv[2]), serialized, threaded=True)
"#;

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// `dynalite` (Node.js, LevelDB in memory).
    Dynalite,
    /// `moto_server` (Python).
    Moto,
}

impl Emulator {
    /// Both, for tests that run on each.
    pub const ALL: [Emulator; 2] = [Emulator::Dynalite, Emulator::Moto];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Emulator::Dynalite => "dynalite",
            Emulator::Moto => "moto",
        }
    }
}

/// A running emulator.
pub struct DynamoServer {
    child: Child,
    port: u16,
    emulator: Emulator,
    dir: tempfile::TempDir,
}

/// Cargo's target directory, found from the running binary (`target/debug/deps/…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// The `dynalite` command: on PATH, or installed under the target dir (once; processes
/// installing at once each install aside and rename into place).
fn dynalite() -> PathBuf {
    if Command::new("dynalite")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return PathBuf::from("dynalite");
    }
    let dir = target_dir().join("tmp").join("dynalite");
    let bin = dir.join("node_modules/.bin/dynalite");
    if bin.exists() {
        return bin;
    }
    let aside = dir.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::create_dir_all(&aside).expect("creating the dynalite folder");
    std::fs::write(aside.join("package.json"), "{\"private\":true}").unwrap();
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "dynalite@4",
        ])
        .current_dir(&aside)
        .status();
    let installed = status.is_ok_and(|s| s.success());
    assert!(
        installed,
        "dynalite is needed for the DynamoDB tests and `npm install dynalite@4` failed: install \
         Node.js 20+ and npm (apt-get install nodejs npm), or put `dynalite` on PATH \
         (npm install -g dynalite)"
    );
    if std::fs::rename(&aside, &dir).is_err() {
        // Another process won the race; use its folder.
        let _ = std::fs::remove_dir_all(&aside);
    }
    bin
}

impl DynamoServer {
    /// Starts `emulator` on a free port of 127.0.0.1 and waits until it answers.
    pub fn start(emulator: Emulator) -> DynamoServer {
        let dir = tempfile::tempdir().expect("a temp dir for the emulator");
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut command = match emulator {
            Emulator::Dynalite => {
                let mut c = Command::new(dynalite());
                // In memory (no --path); tables active at once.
                c.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--createTableMs",
                    "0",
                ]);
                c.args(["--deleteTableMs", "0", "--updateTableMs", "0"]);
                c
            }
            Emulator::Moto => {
                let mut c = Command::new("python3");
                c.args(["-c", MOTO, "127.0.0.1", &port.to_string()]);
                c
            }
        };
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| match emulator {
                Emulator::Moto => panic!(
                    "python3 could not be started for moto ({e}): the DynamoDB tests run moto \
                     in server mode. Install Python 3 and `pip install 'moto[server]'`"
                ),
                Emulator::Dynalite => panic!("dynalite could not be started ({e})"),
            });
        let mut server = DynamoServer {
            child,
            port,
            emulator,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{} exited at start ({status}):\n{}",
                    emulator.name(),
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within {READY_TIMEOUT:?}:\n{}",
                emulator.name(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `dynamodb://127.0.0.1:PORT/TABLE`.
    pub fn url(&self, table: &str) -> String {
        format!("dynamodb://127.0.0.1:{}/{table}", self.port)
    }

    /// Which emulator this is.
    pub fn emulator(&self) -> Emulator {
        self.emulator
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for DynamoServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.emulator.name(), self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A random table name for one test (`cadenas_test_…`).
pub fn random_table() -> String {
    format!("cadenas_test_{:012x}", rand::random::<u64>() >> 16)
}

/// `@verrou/core`'s DynamoDB driver in Node.js, speaking the commands of
/// [`Node`](crate::verrou_sql::Node): `node interop.mjs ENDPOINT TABLE`.
pub const VERROU_SCRIPT: &str = r#"
import { Verrou } from '@verrou/core'
import { dynamodbStore } from '@verrou/core/drivers/dynamodb'
import { DynamoDBClient } from '@aws-sdk/client-dynamodb'
import readline from 'node:readline'
const [endpoint, name] = process.argv.slice(2)
const connection = new DynamoDBClient({ endpoint, region: 'us-east-1',
  credentials: { accessKeyId: 'cadenas', secretAccessKey: 'cadenas' } })
const verrou = new Verrou({ default: 'ddb', stores: { ddb: { driver: dynamodbStore({ connection, table: { name } }) } } })
const held = new Map()
const say = (s) => process.stdout.write(s + '\n')
// Verrou creates its table when the store is built; a first read waits for that.
await verrou.createLock('cadenas-warmup', '1s').isLocked()
say('ready')
for await (const line of readline.createInterface({ input: process.stdin })) {
  const [cmd, key] = line.split(' ')
  try {
    if (cmd === 'try') {
      const lock = verrou.createLock(key, '30s')
      if (await lock.acquireImmediately()) { held.set(key, lock); say('acquired ' + lock.getOwner()) } else say('held')
    } else if (cmd === 'release') { await held.get(key).release(); held.delete(key); say('released') }
    else if (cmd === 'locked') say(String(await verrou.createLock(key).isLocked()))
    else if (cmd === 'quit') break
  } catch (e) { say('error ' + e.message) }
}
connection.destroy()
"#;

/// The packages [`VERROU_SCRIPT`] needs.
pub const VERROU_PACKAGES: &[&str] = &["@verrou/core@0.5", "@aws-sdk/client-dynamodb@3"];

/// An endpoint that answers every request with DynamoDB's
/// `ProvisionedThroughputExceededException` (HTTP 400), as a table over its capacity does.
/// Stops on Drop.
pub struct Throttling {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Throttling {
    /// Starts it on a free port of 127.0.0.1.
    pub fn start() -> Throttling {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let answer = "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\",\"message\":\"The level of configured provisioned throughput for the table was exceeded.\"}";
                        let response = format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: ProvisionedThroughputExceededException\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if reader.get_mut().write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Throttling { port, stop }
    }

    /// `dynamodb://127.0.0.1:PORT/TABLE`.
    pub fn url(&self, table: &str) -> String {
        format!("dynamodb://127.0.0.1:{}/{table}", self.port)
    }
}

impl Drop for Throttling {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
