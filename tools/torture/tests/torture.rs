//! A short torture of every store with its faults on: no violation, no lost update, and
//! every fault kind the store takes injected at least once. The long run's command is in the
//! README ("Torture").
//!
//! The servers are real: Redis and Redlock run the tool's own `redis-server`s, etcd three
//! `etcd` members of its own, DynamoDB the tool's own `dynalite`; PostgreSQL and MariaDB are
//! the local ones (127.0.0.1:5432 user `postgres`, 127.0.0.1:3306 user `root`, database
//! `test`). A missing server fails the test with the tool's message.

use std::process::Command;

use serde_json::Value;

/// Runs `cadenas-torture run` for a few seconds (6: the shuffled fault deck of five kinds,
/// with a stop lasting 1.5 ttl, gets through a round even on a loaded machine) and checks
/// its JSON summary.
fn torture(store: &str, expected_faults: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cadenas-torture"))
        .args(["run", "--store", store, "--procs", "4", "--duration", "6s"])
        .args(["--ttl", "1s", "--fault-every", "400ms", "--faults", "all"])
        .arg("--json")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run cadenas-torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "cadenas-torture on {store} exited {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("no JSON summary ({e}):\n{context}");
    });
    let n = |field: &str| {
        summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {context}"))
    };
    assert_eq!(n("violations"), 0, "{context}");
    assert_eq!(n("lost_updates"), 0, "{context}");
    assert!(out.status.success(), "{context}");
    assert!(n("sections") > 0 && n("accepted") > 0, "{context}");
    for kind in expected_faults {
        assert!(
            summary["faults"][*kind].as_u64().unwrap_or(0) > 0,
            "fault {kind} was never injected:\n{context}"
        );
    }
}

#[test]
fn memory() {
    torture("memory", &["kill", "stop"]);
}

#[test]
fn sqlite() {
    torture("sqlite", &["kill", "stop"]);
}

#[test]
fn redis() {
    torture("redis", &["kill", "stop", "restart", "drop", "delay"]);
}

#[test]
fn redlock() {
    torture("redlock", &["kill", "stop", "restart", "drop", "delay"]);
}

#[test]
fn etcd() {
    torture("etcd", &["kill", "stop", "restart", "drop", "delay"]);
}

#[test]
fn postgres() {
    torture("postgres", &["kill", "stop", "connkill", "drop", "delay"]);
}

#[test]
fn mysql() {
    torture("mysql", &["kill", "stop", "connkill", "drop", "delay"]);
}

#[test]
fn dynamodb() {
    // The tool's own dynalite.
    torture("dynamodb", &["kill", "stop", "drop", "delay"]);
}
