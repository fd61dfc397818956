//! The real `cadenas` binary against a SQLite file shared by several processes.
#![cfg(feature = "sqlite")]

use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::Duration;

use cadenas_test_support::process::{wait_exit, wait_until};

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;

struct Env {
    dir: tempfile::TempDir,
    store: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("locks.db").display());
        Env { dir, store }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("cadenas").unwrap();
        c.env("CADENAS_STORE", &self.store)
            .env_remove("CADENAS_STORES")
            .timeout(Duration::from_secs(60));
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        StdCommand::new(assert_cmd::cargo::cargo_bin("cadenas"))
            .args(args)
            .env("CADENAS_STORE", &self.store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn acquire(&self, key: &str, extra: &[&str]) -> String {
        let out = self
            .cmd()
            .arg("acquire")
            .args(extra)
            .arg(key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn locked(&self, key: &str) -> bool {
        let code = self
            .cmd()
            .args(["status", key])
            .output()
            .unwrap()
            .status
            .code();
        match code {
            Some(0) => true,
            Some(1) => false,
            other => panic!("status exited {other:?}"),
        }
    }

    fn wait_until(&self, what: &str, cond: impl FnMut() -> bool) {
        wait_until(what, Duration::from_secs(30), cond);
    }
}

#[test]
fn exec_runs_the_command_with_the_lock_and_passes_its_status() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["exec", "job", "--", "sh", "-c"])
        .arg(r#"echo "$CADENAS_KEY $CADENAS_FENCE ${#CADENAS_OWNER}"; exit 7"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(parts[0], "job");
    assert!(parts[1].parse::<u64>().unwrap() >= 1, "a fence is passed");
    assert_eq!(parts[2], "26", "a 26-character owner id is passed");
    assert!(!env.locked("job"), "released when the command ends");
}

#[test]
fn exec_sees_the_lock_held_while_it_runs() {
    let env = Env::new();
    let bin = assert_cmd::cargo::cargo_bin("cadenas");
    let script = format!("{} status job", bin.display());
    env.cmd()
        .args(["exec", "job", "--", "sh", "-c", &script])
        .assert()
        .success()
        .stdout(predicates::str::contains("locked by"));
}

#[test]
fn conflicts_exit_75_or_the_chosen_code() {
    let env = Env::new();
    let token = env.acquire("busy", &["--ttl", "1m", "--owner", "cron-a"]);
    assert!(token.starts_with("cadenas1."));
    env.cmd()
        .args(["exec", "--wait", "0", "busy", "--", "true"])
        .assert()
        .code(75)
        .stderr(predicates::str::contains("busy").and(predicates::str::contains("cron-a")));
    env.cmd()
        .args([
            "exec",
            "--wait",
            "150ms",
            "--conflict-exit-code",
            "9",
            "busy",
            "--",
            "true",
        ])
        .assert()
        .code(9);
    env.cmd()
        .args(["acquire", "--wait", "0", "busy"])
        .assert()
        .code(75);
    env.cmd().args(["release", &token]).assert().success();
    env.cmd()
        .args(["exec", "--wait", "0", "busy", "--", "true"])
        .assert()
        .success();
}

#[test]
fn acquire_status_list_extend_release() {
    let env = Env::new();
    let token = env.acquire("deploy", &["--ttl", "10s", "--metadata", "v1.2.3 by ci"]);
    let out = env
        .cmd()
        .args(["status", "--json", "deploy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["locked"], true);
    assert_eq!(v["metadata"], "v1.2.3 by ci");
    assert!(v["remaining_ms"].as_u64().unwrap() <= 10_000);
    env.cmd()
        .args(["extend", "--ttl", "5m", &token])
        .assert()
        .success();
    let out = env.cmd().args(["list", "--json", "dep"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["key"], "deploy");
    assert!(v[0]["remaining_ms"].as_u64().unwrap() > 60_000, "extended");
    env.cmd()
        .args(["status", "deploy"])
        .assert()
        .success()
        .stdout(predicates::str::contains("metadata: v1.2.3 by ci"));
    env.cmd().args(["release", &token]).assert().success();
    env.cmd()
        .args(["status", "deploy"])
        .assert()
        .code(1)
        .stdout("free\n");
    // A second release of the same token: the lock is no longer held by it.
    env.cmd()
        .args(["release", &token])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("not held"));
    env.cmd().args(["extend", &token]).assert().code(1);
}

#[test]
fn force_release_frees_anyones_lock() {
    let env = Env::new();
    env.acquire("stuck", &["--ttl", "none"]);
    assert!(env.locked("stuck"));
    env.cmd()
        .args(["release", "--force", "stuck"])
        .assert()
        .success();
    assert!(!env.locked("stuck"));
}

#[test]
fn bad_input_gets_exit_2_and_a_message() {
    let env = Env::new();
    for (args, needle) in [
        (vec!["acquire", "--ttl", "0", "k"], "ttl"),
        (vec!["acquire", "--ttl", "-5s", "k"], "negative"),
        (vec!["acquire", "--ttl", "abc", "k"], "not a duration"),
        (
            vec!["acquire", "--ttl", "10 parsecs", "k"],
            "not a duration",
        ),
        (vec!["acquire", "--ttl", "999999h", "k"], "one year"),
        (vec!["acquire", ""], "key is empty"),
        (vec!["release", "not-a-token"], "not a cadenas token"),
        (
            vec!["release", "cadenas1.eyJrIjoiayJ9.00000000"],
            "checksum",
        ),
        (
            vec!["status", "--store", "gopher://h", "k"],
            "unknown store URL scheme",
        ),
        (vec!["exec", "k"], "CMD"),
    ] {
        env.cmd()
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(needle));
    }
    let long = "k".repeat(256);
    env.cmd()
        .args(["acquire", &long])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("256 bytes"));
}

#[test]
fn passwords_never_reach_the_terminal() {
    let env = Env::new();
    let out = env
        .cmd()
        .args([
            "status",
            "--store",
            "gopher://admin:hunter2secret@db:1/x",
            "k",
        ])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2secret"), "{all}");
    assert!(all.contains("admin:***@db"), "{all}");
}

#[test]
fn a_lost_lock_stops_the_command_and_exits_76() {
    let env = Env::new();
    let exec = env.spawn(&[
        "exec",
        "--ttl",
        "600ms",
        "--kill-after",
        "5s",
        "lease",
        "--",
        "sleep",
        "60",
    ]);
    env.wait_until("exec holds the lock", || env.locked("lease"));
    env.cmd()
        .args(["release", "--force", "lease"])
        .assert()
        .success();
    let out = wait_exit(exec, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(76),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
}

#[test]
fn sigterm_is_forwarded_and_the_lock_released() {
    let env = Env::new();
    let marker = env.dir.path().join("started");
    let script = format!(
        "trap 'exit 42' TERM; touch {}; while true; do sleep 0.05; done",
        marker.display()
    );
    let exec = env.spawn(&["exec", "sig", "--", "sh", "-c", &script]);
    env.wait_until("the command started", || Path::new(&marker).exists());
    nix_kill(exec.id(), "TERM");
    let out = wait_exit(exec, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.locked("sig"));
}

fn nix_kill(pid: u32, sig: &str) {
    let ok = StdCommand::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn processes_take_turns_on_one_key() {
    // Four OS processes, three turns each, on one SQLite file: no two inside at once.
    let env = Env::new();
    let dir = env.dir.path();
    let script = format!(
        "cd {}; if ! mkdir inside 2>/dev/null; then echo overlap >> errors; fi; echo x >> turns; sleep 0.02; rmdir inside",
        dir.display()
    );
    let children: Vec<Child> = (0..4)
        .map(|_| {
            let s = format!(
                "for i in 1 2 3; do {} exec --wait 60s turn -- sh -c '{}' || exit 1; done",
                assert_cmd::cargo::cargo_bin("cadenas").display(),
                script
            );
            StdCommand::new("sh")
                .args(["-c", &s])
                .env("CADENAS_STORE", &env.store)
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = wait_exit(c, Duration::from_secs(120));
        assert!(out.status.success());
    }
    assert!(
        !dir.join("errors").exists(),
        "two processes held the lock at once"
    );
    let turns = std::fs::read_to_string(dir.join("turns")).unwrap();
    assert_eq!(turns.lines().count(), 12);
}

#[test]
fn processes_starting_together_on_a_new_file_all_get_in() {
    // Creating the file, switching it to WAL and creating the table race between processes.
    for _ in 0..3 {
        let env = Env::new();
        let children: Vec<Child> = (0..8).map(|_| env.spawn(&["status", "fresh"])).collect();
        for c in children {
            let out = wait_exit(c, Duration::from_secs(60));
            assert_eq!(
                out.status.code(),
                Some(1),
                "every process sees the lock free: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `exec --extend-every` renews the lease at the chosen interval: the lock outlives several
/// ttls while CMD runs (CMD itself checks), and an interval not shorter than the ttl is a
/// usage error naming the key.
#[test]
fn exec_extends_at_the_chosen_interval() {
    let env = Env::new();
    let bin = assert_cmd::cargo::cargo_bin("cadenas");
    let check = "sleep 1; exec \"$0\" status renewed";
    env.cmd()
        .args([
            "exec",
            "--ttl",
            "300ms",
            "--extend-every",
            "50ms",
            "renewed",
            "--",
        ])
        .args(["sh", "-c", check, bin.to_str().unwrap()])
        .assert()
        .code(0);
    assert!(!env.locked("renewed"), "released when CMD ended");
    env.cmd()
        .args([
            "exec",
            "--ttl",
            "300ms",
            "--extend-every",
            "1s",
            "renewed",
            "--",
            "true",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("'renewed'").and(predicates::str::contains("interval")));
}
