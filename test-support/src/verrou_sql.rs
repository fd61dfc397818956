//! A real Node.js Verrou process (`@verrou/core` with Knex) driven over stdin/stdout, for
//! the SQL interop tests. Installed once into the directory the test names (its
//! `CARGO_TARGET_TMPDIR`, so every test binary shares one install).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const SCRIPT: &str = r#"
import { Verrou } from '@verrou/core'
import { knexStore } from '@verrou/core/drivers/knex'
import knex from 'knex'
import readline from 'node:readline'
const [client, connection, tableName] = process.argv.slice(2)
const db = knex({ client, connection })
const verrou = new Verrou({ default: 'db', stores: { db: { driver: knexStore({ connection: db, tableName }) } } })
const held = new Map()
const say = (s) => process.stdout.write(s + '\n')
// Creating a first lock makes Verrou create its table.
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
await db.destroy()
"#;

/// What the SQL interop installs beside `@verrou/core`.
const SQL_PACKAGES: &[&str] = &["@verrou/core@0.5", "knex@3", "pg@8", "mysql2@3"];

/// Installs `packages` into `tmp/folder` (once) and writes `script` there as `interop.mjs`.
async fn install(tmp: &Path, folder: &str, packages: &[&str], script: &str) -> PathBuf {
    let dir = tmp.join(folder);
    if !dir.join("node_modules/@verrou/core").exists() {
        // Installed beside the final folder and renamed into place, so test processes that
        // install at the same time never see a half-written folder.
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("creating the node folder");
        std::fs::write(
            tmp.join("package.json"),
            "{\"private\":true,\"type\":\"module\"}",
        )
        .unwrap();
        // Tests of other stores may install at the same moment, sharing npm's cache: a
        // failed install is tried again (npm prints why) before the test fails.
        let mut installed = false;
        for attempt in 1..=3 {
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel", "error"])
                .args(packages)
                .current_dir(&tmp)
                .status()
                .await
                .expect("npm must be installed (with Node.js 20+) for the Verrou interop test: apt-get install nodejs npm");
            if status.success() {
                installed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
        }
        assert!(
            installed,
            "npm install of @verrou/core failed three times (its errors are above)"
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; use its folder.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    // Written aside and renamed, for the same reason.
    let script_path = dir.with_extension(format!("{}.mjs", std::process::id()));
    std::fs::write(&script_path, script).unwrap();
    std::fs::rename(&script_path, dir.join("interop.mjs")).unwrap();
    dir
}

/// A running Verrou process.
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    /// Starts Verrou on `table` with Knex client `client` (`pg`, `mysql2`), installing it
    /// under `tmp` first if it is not there yet.
    pub async fn start(tmp: impl AsRef<Path>, client: &str, url: &str, table: &str) -> Node {
        Self::start_script(
            tmp,
            "verrou-node",
            SQL_PACKAGES,
            SCRIPT,
            &[client, url, table],
        )
        .await
    }

    /// Starts `script` (which speaks the commands above: `try KEY`, `release KEY`, `locked
    /// KEY`, `quit`, after a first line `ready`) with `args`, with `packages` installed
    /// under `tmp/folder` first if they are not there yet.
    pub async fn start_script(
        tmp: impl AsRef<Path>,
        folder: &str,
        packages: &[&str],
        script: &str,
        args: &[&str],
    ) -> Node {
        let dir = install(tmp.as_ref(), folder, packages, script).await;
        let mut child = Command::new("node")
            .arg("interop.mjs")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed for the Verrou interop test");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = Node {
            child,
            stdin,
            lines,
        };
        assert_eq!(node.read().await, "ready");
        node
    }

    async fn read(&mut self) -> String {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("Verrou answers within 30s")
            .expect("reading from node");
        line.expect("node exited early (see its stderr above)")
    }

    /// Sends one command and returns its answer line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        self.read().await
    }

    /// Stops the process.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The interop check both SQL stores run: Verrou (in `node`, on its own three-column table)
/// and the store that `connect` opens on the same table exclude each other both ways, also
/// for a lock that never expires, and Verrou releases what it took after cadenas added its
/// columns. Verrou takes `k1` before the store connects, so the store first meets a row
/// without its columns.
pub async fn check_interop<S, F>(node: &mut Node, connect: F)
where
    S: cadenas::Store,
    F: std::future::Future<Output = S>,
{
    use cadenas::store::{Acquire, AcquireRequest};
    let long = Some(std::time::Duration::from_secs(60));
    let take = |key: &'static str, ttl| AcquireRequest::new(key, "rust", ttl);
    let answer = node.cmd("try k1").await;
    let node_owner = answer.strip_prefix("acquired ").expect(&answer).to_owned();
    let s = connect.await;
    match s.try_acquire(take("k1", long)).await.unwrap() {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some(node_owner.as_str())),
        other => panic!("cadenas took a lock Verrou holds: {other:?}"),
    }
    assert_eq!(s.inspect("k1").await.unwrap().unwrap().owner, node_owner);
    assert_eq!(node.cmd("release k1").await, "released");
    let acquired = |a: Acquire| assert!(matches!(a, Acquire::Acquired(_)), "{a:?}");
    acquired(s.try_acquire(take("k1", long)).await.unwrap());
    assert_eq!(node.cmd("try k1").await, "held");
    assert_eq!(node.cmd("locked k1").await, "true");
    assert!(s.release("k1", "rust").await.unwrap());
    assert_eq!(node.cmd("locked k1").await, "false");
    assert!(node.cmd("try k1").await.starts_with("acquired "));
    // A lock that never expires (NULL expiration) holds Verrou off too.
    acquired(s.try_acquire(take("k2", None)).await.unwrap());
    assert_eq!(node.cmd("try k2").await, "held");
    // Verrou can release what it took after cadenas added its columns.
    assert_eq!(node.cmd("release k1").await, "released");
    assert!(s.inspect("k1").await.unwrap().is_none());
}
