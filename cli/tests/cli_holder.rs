//! `cadenas exec` keeps its lock with the watchdog, across OS processes, on SQLite and Redis;
//! and exits 76 when the store goes away under it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cadenas_test_support::process::{wait_exit, wait_until};

fn cadenas(store: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("cadenas"));
    c.env("CADENAS_STORE", store).env_remove("CADENAS_STORES");
    c
}

/// `Some(true)` locked, `Some(false)` free, `None` when `status` failed (store unreachable).
fn status(store: &str, key: &str) -> Option<bool> {
    let out = cadenas(store).args(["status", key]).output().unwrap();
    match out.status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        _ => None,
    }
}

/// `exec --ttl 1s` holds the lock for 5 s; another process polling `status` never sees it
/// free until the command has finished.
fn held_for_five_seconds_with_a_one_second_ttl(store: &str, dir: &Path) {
    let done = dir.join("done");
    let script = format!("sleep 5; touch {}", done.display());
    let exec = cadenas(store)
        .args(["exec", "--ttl", "1s", "long-job", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("exec holds the lock", Duration::from_secs(30), || {
        status(store, "long-job") == Some(true)
    });
    let first = Instant::now();
    let mut polls = 0;
    loop {
        let seen = status(store, "long-job");
        // The command touches `done` before exec releases: a free lock without `done` means
        // it was free while the command ran.
        if done.exists() {
            break;
        }
        polls += 1;
        assert_eq!(
            seen,
            Some(true),
            "poll {polls}, {:?} after it was first seen held: the lock was free (or the status failed) while the command ran",
            first.elapsed()
        );
        assert!(
            first.elapsed() < Duration::from_secs(60),
            "the command never finished"
        );
    }
    assert!(
        first.elapsed() >= Duration::from_secs(4),
        "held {:?}: several ttls",
        first.elapsed()
    );
    let out = wait_exit(exec, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status(store, "long-job"),
        Some(false),
        "released at the end"
    );
    eprintln!(
        "{store}: {polls} polls over {:?}, all locked",
        first.elapsed()
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn exec_with_a_one_second_ttl_is_never_seen_free_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("locks.db").display());
    held_for_five_seconds_with_a_one_second_ttl(&store, dir.path());
}

#[cfg(feature = "redis")]
use cadenas_test_support::redis::RedisServer;

#[cfg(feature = "redis")]
#[test]
fn exec_with_a_one_second_ttl_is_never_seen_free_redis() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    held_for_five_seconds_with_a_one_second_ttl(&server.url(), dir.path());
}

/// Stopping the Redis server while `exec` runs: the watchdog cannot confirm the lease, the
/// command gets SIGTERM and `exec` exits 76 before the lease would have expired.
#[cfg(feature = "redis")]
#[test]
fn exec_exits_76_when_the_redis_server_stops() {
    let mut server = RedisServer::start();
    let store = format!("{}?timeout=500ms&connect_timeout=500ms", server.url());
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let exec = cadenas(&store)
        .args(["exec", "--ttl", "3s", "--kill-after", "2s", "k", "--"])
        .args(["sh", "-c", "touch \"$0\"; exec sleep 60"])
        .arg(&started)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the command runs, `exec` has its acquire's answer: a server stopped before that
    // fails the acquire (exit 1), which is not what this test is about.
    wait_until("exec runs its command", Duration::from_secs(30), || {
        started.exists()
    });
    assert_eq!(status(&store, "k"), Some(true));
    server.kill();
    let killed = Instant::now();
    let out = wait_exit(exec, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(76), "{stderr}");
    assert!(stderr.contains("lost"), "{stderr}");
    // The lost signal fires before the 3 s lease ends; stopping the command and giving up
    // the release on a dead store take a little more.
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "exited {:?} after the server stopped",
        killed.elapsed()
    );
}
