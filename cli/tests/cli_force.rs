//! `cadenas acquire --force` and `cadenas exec --force`: the real binary takes a held lock
//! in one atomic step; the displaced `exec` exits 76.

use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;

/// Runs the binary on `store` to completion.
fn run(store: &str, args: &[&str]) -> Output {
    Command::cargo_bin("cadenas")
        .unwrap()
        .args(args)
        .env("CADENAS_STORE", store)
        .env_remove("CADENAS_STORES")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
}

/// Starts the binary on `store`; the returned receiver gets its output when it exits, and
/// `kill` on its pid stops it if a test gives up on it.
fn start(store: &str, args: &[&str]) -> (u32, mpsc::Receiver<Output>) {
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("cadenas"))
        .args(args)
        .env("CADENAS_STORE", store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    (pid, rx)
}

/// The output of a started process once it exits; kills it and fails after `limit`.
fn exited((pid, done): (u32, mpsc::Receiver<Output>), limit: Duration) -> Output {
    done.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = StdCommand::new("kill").arg(pid.to_string()).status();
        panic!("the process did not exit within {limit:?}")
    })
}

/// `status --json KEY`: the holder's record, `None` when free.
fn holder(store: &str, key: &str) -> Option<serde_json::Value> {
    let out = run(store, &["status", "--json", key]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out.stderr)));
    (v["locked"] == true).then_some(v)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A SQLite store in a fresh temp dir (kept as long as the returned guard).
fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("force.db").display());
    (dir, store)
}

#[test]
fn acquire_force_displaces_a_running_exec_which_exits_76() {
    let (_dir, store) = sqlite();
    let exec = start(
        &store,
        &[
            "exec",
            "--owner",
            "first",
            "--ttl",
            "900ms",
            "--kill-after",
            "5s",
            "job",
            "--",
            "sleep",
            "60",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(h) = holder(&store, "job") {
            break h;
        }
        assert!(Instant::now() < deadline, "exec never held the lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    let old_fence = before["fence"].as_u64().expect("sqlite fences");

    let out = run(
        &store,
        &[
            "acquire", "--force", "--owner", "second", "--ttl", "5m", "job",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("took lock 'job' over from owner 'first'")
            && said.contains(&format!("(fence {old_fence})")),
        "stderr names whom it displaced: {said}"
    );
    assert!(!text(&out.stdout).trim().is_empty(), "a token on stdout");

    let displaced = exited(exec, Duration::from_secs(20));
    assert_eq!(
        displaced.status.code(),
        Some(76),
        "{}",
        text(&displaced.stderr)
    );
    assert!(text(&displaced.stderr).contains("lost"));
    let now = holder(&store, "job").expect("still held by the new owner");
    assert_eq!(now["owner"], "second");
    assert!(now["fence"].as_u64().unwrap() > old_fence);
}

#[test]
fn exec_force_takes_a_held_lock_and_runs_with_a_higher_fence() {
    let (_dir, store) = sqlite();
    let token = run(
        &store,
        &["acquire", "--owner", "stuck", "--ttl", "none", "batch"],
    );
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_owned();
    let old_fence = holder(&store, "batch").unwrap()["fence"].as_u64().unwrap();

    let out = run(
        &store,
        &[
            "exec",
            "--force",
            "batch",
            "--",
            "sh",
            "-c",
            "echo \"$CADENAS_FENCE\"",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("over from owner 'stuck'"));
    let fence: u64 = text(&out.stdout).trim().parse().unwrap();
    assert!(fence > old_fence, "{fence} after {old_fence}");
    // exec released when the command ended; the displaced token no longer releases.
    assert!(holder(&store, "batch").is_none());
    assert_eq!(run(&store, &["release", &token]).status.code(), Some(1));
}

#[test]
fn force_on_a_free_key_just_takes_it() {
    let (_dir, store) = sqlite();
    let out = run(&store, &["acquire", "--force", "--owner", "me", "free"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("took lock"), "nobody displaced");
    assert_eq!(holder(&store, "free").unwrap()["owner"], "me");
}

#[test]
fn force_with_wait_is_a_usage_error() {
    let (_dir, store) = sqlite();
    let out = run(&store, &["acquire", "--force", "--wait", "5s", "k"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[cfg(feature = "redlock")]
#[test]
fn force_on_redlock_exits_2_and_says_why() {
    // Redlock connects lazily, and refuses a take-over before contacting any node.
    let store = "redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    let out = run(store, &["acquire", "--force", "k"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("one atomic step") && said.contains("release --force k"),
        "{said}"
    );
    let out = run(store, &["exec", "--force", "k", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
