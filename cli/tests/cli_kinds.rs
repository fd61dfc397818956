//! `cadenas exec --permits N` and `--shared`, `acquire` with them, and `status`/`list`
//! showing every holder: the real binary in several processes, on SQLite and on Redis (a
//! random namespace of `CADENAS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! The held commands wait for a file the test creates (their own polling loop), so each
//! holding lasts exactly as long as the test needs; the test waits on the markers they
//! write, with deadlines, and never on a sleep.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cadenas_test_support::process::{wait_exit, wait_until};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A store shared by the processes of one test, and a folder for their marker files.
struct Env {
    store: String,
    dir: tempfile::TempDir,
    /// The Redis namespace whose keys are deleted at the end.
    redis_ns: Option<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(ns) = &self.redis_ns else { return };
        let Ok(mut con) = ::redis::Client::open(cadenas_test_support::redis_url())
            .and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("*{ns}*"))
            .query(&mut con)
            .unwrap_or_default();
        for k in keys {
            let _: ::redis::RedisResult<()> = ::redis::cmd("DEL").arg(&k).query(&mut con);
        }
    }
}

impl Env {
    fn sqlite() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("locks.db").display());
        Env {
            store,
            dir,
            redis_ns: None,
        }
    }

    fn redis() -> Env {
        let ns = format!("cadenas-cli-kinds-{:012x}", rand::random::<u64>() >> 16);
        let store = cadenas_test_support::with_query(
            &cadenas_test_support::redis_url(),
            &format!("namespace={ns}"),
        );
        Env {
            store,
            dir: tempfile::tempdir().unwrap(),
            redis_ns: Some(ns),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cadenas(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("cadenas"));
        c.env("CADENAS_STORE", &self.store)
            .env_remove("CADENAS_STORES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the binary to completion (60 s at most).
    fn run(&self, args: &[&str]) -> Output {
        wait_exit(self.cadenas().args(args).spawn().unwrap(), 2 * LIMIT)
    }

    /// `exec FLAGS KEY --` a shell command that writes its fence to `name`, then waits until
    /// the file `name.stop` exists (or the test's folder is gone: a failed test leaves no
    /// command running).
    fn hold(&self, flags: &[&str], key: &str, name: &str) -> Child {
        let script = r#"echo "$CADENAS_FENCE" > "$0.tmp" && mv "$0.tmp" "$0"
            while [ -e "$0" ] && [ ! -e "$0.stop" ]; do sleep 0.02; done"#;
        self.cadenas()
            .arg("exec")
            .args(flags)
            .args([key, "--", "sh", "-c", script])
            .arg(self.path(name))
            .spawn()
            .unwrap()
    }

    /// Waits until the holder `name` runs its command; returns its fence. Fails at once if
    /// it exited instead.
    fn running(&self, name: &str, child: &mut Child) -> u64 {
        let marker = self.path(name);
        wait_until(&format!("holder {name} runs"), LIMIT, || {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("holder {name} exited ({status}) instead of running: {stderr}");
            }
            marker.exists()
        });
        fence_in(&marker)
    }

    fn stop(&self, name: &str) {
        std::fs::write(self.path(&format!("{name}.stop")), b"").unwrap();
    }

    /// `status --json KEY`.
    fn status(&self, key: &str) -> Value {
        let out = self.run(&["status", "--json", key]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out.stderr)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fence_in(path: &Path) -> u64 {
    let s = std::fs::read_to_string(path).unwrap();
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: not a fence: {s:?}", path.display()))
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn finished(child: Child) {
    let out = wait_exit(child, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The owners `status --json` lists as holders.
fn owners(v: &Value) -> Vec<String> {
    v["holders"]
        .as_array()
        .unwrap_or_else(|| panic!("no holders: {v}"))
        .iter()
        .map(|h| h["owner"].as_str().unwrap().to_owned())
        .collect()
}

/// Two `exec --permits 2` hold at once, a third with `--wait 0` exits 75 and one that waits
/// gets a permit once one of them ends.
fn two_permits_and_a_third_waits(env: &Env) {
    let flags = ["--permits", "2", "--ttl", "5s"];
    let mut a = env.hold(&[&flags[..], &["--owner", "a"]].concat(), "sem", "a");
    let mut b = env.hold(&[&flags[..], &["--owner", "b"]].concat(), "sem", "b");
    let (fa, fb) = (env.running("a", &mut a), env.running("b", &mut b));
    assert_ne!(fa, fb, "each permit has its own fence");
    let v = env.status("sem");
    assert_eq!(v["kind"], "permits", "{v}");
    assert_eq!(v["permits"], 2, "{v}");
    let mut held = owners(&v);
    held.sort();
    assert_eq!(held, ["a", "b"], "{v}");

    let third = env.run(&["exec", "--permits", "2", "--wait", "0", "sem", "--", "true"]);
    assert_eq!(code(&third), Some(75), "{}", text(&third.stderr));
    assert!(
        text(&third.stderr).contains("sem"),
        "{}",
        text(&third.stderr)
    );
    let status = env.run(&["status", "sem"]);
    assert!(
        text(&status.stdout).contains("2 of 2 permits held"),
        "{}",
        text(&status.stdout)
    );

    // A third that waits gets the permit `a` gives back, beside `b`.
    let mut c = env.hold(&[&flags[..], &["--owner", "c"]].concat(), "sem", "c");
    env.stop("a");
    finished(a);
    let fc = env.running("c", &mut c);
    assert!(fc > fa.max(fb), "fence {fc} after {fa} and {fb}");
    let mut held = owners(&env.status("sem"));
    held.sort();
    assert_eq!(held, ["b", "c"]);
    env.stop("b");
    env.stop("c");
    finished(b);
    finished(c);
    assert_eq!(env.status("sem")["locked"], false);
}

/// Two readers hold at once; a writer waits for both (and, once it waits, holds a new reader
/// back), and gets the key after them: its command sees itself the only holder.
fn readers_overlap_and_the_writer_follows(env: &Env) {
    let mut r1 = env.hold(&["--shared", "--owner", "r1"], "rw", "r1");
    let mut r2 = env.hold(&["--shared", "--owner", "r2"], "rw", "r2");
    let (f1, f2) = (env.running("r1", &mut r1), env.running("r2", &mut r2));
    // Both commands run now: the readers overlap.
    let v = env.status("rw");
    assert_eq!(v["kind"], "shared", "{v}");
    let mut held = owners(&v);
    held.sort();
    assert_eq!(held, ["r1", "r2"], "{v}");
    let status = env.run(&["status", "rw"]);
    let shown = text(&status.stdout);
    assert!(
        shown.contains("held by 2 readers")
            && shown.contains("reader r1")
            && shown.contains("reader r2"),
        "{shown}"
    );

    // The writer's command records who holds the key while it runs.
    let bin = assert_cmd::cargo::cargo_bin("cadenas");
    let script = r#"echo "$CADENAS_FENCE" > "$1.fence"; "$0" status --json rw > "$1.tmp" && mv "$1.tmp" "$1""#;
    let writer = env
        .cadenas()
        .args(["exec", "--owner", "w", "rw", "--", "sh", "-c", script])
        .arg(&bin)
        .arg(env.path("w"))
        .spawn()
        .unwrap();
    // Once the writer waits, new readers wait too.
    wait_until(
        "a new reader is held back by the waiting writer",
        LIMIT,
        || {
            let out = env.run(&["exec", "--shared", "--wait", "0", "rw", "--", "true"]);
            match code(&out) {
                Some(75) => true,
                Some(0) => false,
                other => panic!("reader exited {other:?}: {}", text(&out.stderr)),
            }
        },
    );
    env.stop("r1");
    finished(r1);
    assert!(!env.path("w").exists(), "the writer ran while r2 read");
    env.stop("r2");
    finished(r2);
    finished(writer);
    let seen: Value = serde_json::from_slice(&std::fs::read(env.path("w")).unwrap()).unwrap();
    assert_eq!(seen["kind"], "exclusive", "{seen}");
    assert_eq!(
        owners(&seen),
        ["w"],
        "the writer held the key alone: {seen}"
    );
    let fw = fence_in(&env.path("w.fence"));
    assert!(fw > f1.max(f2), "writer's fence {fw} after {f1} and {f2}");
    assert_eq!(env.status("rw")["locked"], false);
}

/// `acquire --shared` prints tokens that `extend` and `release` take; `list` shows both
/// readers; a writer cannot get in meanwhile.
fn shared_tokens(env: &Env) {
    let acquire = |owner: &str| {
        let out = env.run(&[
            "acquire", "--shared", "--ttl", "1m", "--owner", owner, "cfg",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let (t1, t2) = (acquire("r1"), acquire("r2"));
    let list = env.run(&["list", "--json"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "cfg")
        .unwrap_or_else(|| panic!("cfg not listed: {listed}"));
    assert_eq!(entry["kind"], "shared", "{entry}");
    assert_eq!(entry["holders"].as_array().unwrap().len(), 2, "{entry}");
    let lines = text(&env.run(&["list", "cfg"]).stdout);
    assert_eq!(
        lines.lines().filter(|l| l.ends_with("\tshared")).count(),
        2,
        "one line per reader: {lines}"
    );
    let writer = env.run(&["acquire", "--wait", "0", "cfg"]);
    assert_eq!(code(&writer), Some(75), "{}", text(&writer.stderr));

    let extend = env.run(&["extend", "--ttl", "2m", &t1]);
    assert!(extend.status.success(), "{}", text(&extend.stderr));
    let release = env.run(&["release", &t1]);
    assert!(release.status.success(), "{}", text(&release.stderr));
    assert_eq!(owners(&env.status("cfg")), ["r2"]);
    let again = env.run(&["release", &t1]);
    assert_eq!(code(&again), Some(1), "{}", text(&again.stderr));
    let release = env.run(&["release", &t2]);
    assert!(release.status.success(), "{}", text(&release.stderr));
    assert_eq!(env.status("cfg")["locked"], false);
    let writer = env.run(&["acquire", "--wait", "0", "cfg"]);
    assert!(writer.status.success(), "{}", text(&writer.stderr));
    let release = env.run(&["release", text(&writer.stdout).trim()]);
    assert!(release.status.success(), "{}", text(&release.stderr));
}

/// The three tests on one store.
macro_rules! on_store {
    ($feature:literal, $name:ident, $env:expr) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;

            #[test]
            fn two_permits_and_a_third_waits() {
                super::two_permits_and_a_third_waits(&$env);
            }

            #[test]
            fn readers_overlap_and_the_writer_follows() {
                super::readers_overlap_and_the_writer_follows(&$env);
            }

            #[test]
            fn shared_tokens() {
                super::shared_tokens(&$env);
            }
        }
    };
}

on_store!("sqlite", sqlite, Env::sqlite());
on_store!("redis", redis, Env::redis());
