//! A short torture of every store with its faults on: no violation, no lost update, and
//! every fault kind the run asks for injected at least once (each store's run asks for the
//! kinds it takes but clock and partition). The long run's command is in the README
//! ("Torture").
//!
//! Semaphores and read-write locks have short runs of their own (`semaphore_*`, `rwlock_*`)
//! on the stores that declare them, with kill and stop faults.
//!
//! The clock and partition faults have short runs of their own (`clock_*`, `partition_*`):
//! clock faults run every worker under libfaketime (Debian's `faketime`), partitions put
//! every worker in a network namespace of its own and need root and iproute2; without them
//! those tests fail with the tool's message saying what is missing.
//!
//! The servers are real: Redis, Redis Cluster (three masters), Redis Sentinel (a primary, two
//! replicas, three sentinels) and Redlock run the tool's own `redis-server`s, etcd three
//! `etcd` members of its own, DynamoDB the tool's own `dynalite`; PostgreSQL and MariaDB are
//! the local ones (127.0.0.1:5432 user `postgres`, 127.0.0.1:3306 user `root`, database
//! `test`). A missing server fails the test with the tool's message.

use std::process::Command;

use serde_json::Value;

/// Runs `cadenas-torture run` with the faults `faults` for a few seconds (6: a shuffled deck
/// of up to five kinds, with a stop lasting 1.5 ttl, gets through a round even on a loaded
/// machine; the clock and partition faults have runs of their own) and checks its JSON
/// summary, every one of those faults injected.
fn torture(store: &str, faults: &[&str]) {
    torture_with(store, &faults.join(","), &[], faults);
}

/// `torture` with the faults `faults` and more arguments; returns the summary.
fn torture_with(store: &str, faults: &str, extra: &[&str], expected_faults: &[&str]) -> Value {
    let (summary, context) = checked_run(store, faults, extra, expected_faults);
    let n = |field: &str| {
        summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {context}"))
    };
    assert!(n("accepted") > 0, "{context}");
    summary
}

/// Runs the tool and checks its summary: no violation, no lost update, some sections, every
/// fault of `expected_faults` injected. Returns the summary and the run's output.
fn checked_run(
    store: &str,
    faults: &str,
    extra: &[&str],
    expected_faults: &[&str],
) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cadenas-torture"))
        .args(["run", "--store", store, "--procs", "4", "--duration", "6s"])
        .args(["--ttl", "1s", "--fault-every", "400ms", "--faults", faults])
        .args(extra)
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
    assert!(n("sections") > 0, "{context}");
    for kind in expected_faults {
        assert!(
            summary["faults"][*kind].as_u64().unwrap_or(0) > 0,
            "fault {kind} was never injected:\n{context}"
        );
    }
    (summary, context)
}

/// A semaphore run (3 permits of one key among the 4 workers) or a read-write run (one key,
/// 75 % readers) with holders killed and stopped: the checker's sweep finds at most 3
/// permit holders and 3 at once somewhere, or readers that overlap and writers alone (and
/// their counter right).
fn kinds(store: &str, mode: &str) {
    let permits = ["--mode", "semaphore", "--permits", "3", "--keys", "1"];
    let rwlock = ["--mode", "rwlock", "--keys", "1"];
    let extra: &[&str] = if mode == "semaphore" {
        &permits
    } else {
        &rwlock
    };
    let (summary, context) = checked_run(store, "kill,stop", extra, &["kill", "stop"]);
    let reached = field(&summary, "max_holders");
    if mode == "semaphore" {
        assert_eq!(reached, 3, "{context}");
        assert_eq!(field(&summary, "accepted"), 0, "{context}");
    } else {
        assert!(reached >= 2, "{context}");
        assert!(
            field(&summary, "accepted") > 0,
            "no writer wrote: {context}"
        );
    }
    assert!(field(&summary, "no_write_sections") > 0, "{context}");
}

fn field(summary: &Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} missing: {summary}"))
}

/// Workers' wall clocks run fast (1.5×), slow (0.5×) and step ±10 s while holders are
/// killed. `server_clock`: the store's clock decides expiry, so no live holder may lose a
/// lease (the checker counts any as a violation, as it does a killed holder's lease that
/// outlives its ttl); the test also checks here that none was refused or released late.
fn clock(store: &str, server_clock: bool) {
    let summary = torture_with(store, "clock,kill", &[], &["clock", "kill"]);
    // Rates alone (1.5× or 0.5× over a 6 s run) skew a clock by at most 3 s; a 10 s step,
    // offset by a slow clock's lag, shows as more than 5 s.
    assert!(
        field(&summary, "max_clock_skew_ms") >= 5_000,
        "no worker's clock was ever stepped 10 s: {summary}"
    );
    if server_clock {
        for name in [
            "rejected_register",
            "rejected_commit",
            "releases_not_owned",
            "lost_at_commit",
        ] {
            assert_eq!(field(&summary, name), 0, "{name}: {summary}");
        }
    }
}

/// A holder cut off from the store for 1.5 ttl, kept in its section (one key, so the
/// others take it once its lease is gone) must learn `Lost`, and its late write is refused.
/// Longer work (20..60 ms) so that the cut finds a holder before its write most times.
fn partition(store: &str) {
    let summary = torture_with(
        store,
        "partition,kill",
        &["--keys", "1", "--work-ms", "20..60"],
        &["partition"],
    );
    let held = field(&summary, "partitioned_holders");
    assert!(
        held > 0,
        "no partition caught a holder in its section: {summary}"
    );
    assert_eq!(field(&summary, "partitioned_lost"), held, "{summary}");
    assert!(
        field(&summary, "partitioned_refused") > 0,
        "no late write of a partitioned holder was refused by fence: {summary}"
    );
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
fn cluster() {
    // Three masters of the tool's own; `restart` kills one (its keys are lost) and starts it
    // again on its cluster configuration.
    torture("cluster", &["kill", "stop", "restart"]);
}

#[test]
fn sentinel() {
    // A primary, two replicas, three sentinels of the tool's own; `restart` is a failover.
    torture("sentinel", &["kill", "stop", "restart"]);
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

#[test]
fn dynamodb_on_moto() {
    // The tool's own moto server: the other emulator, with its own gaps.
    torture("dynamodb-moto", &["kill", "stop", "drop", "delay"]);
}

#[test]
fn clock_sqlite() {
    // SQLite's "now" is the host's clock: every worker's clock steps together.
    clock("sqlite", false);
}

#[test]
fn clock_redis() {
    clock("redis", true);
}

#[test]
fn clock_postgres() {
    clock("postgres", true);
}

// Memory has no partition: its holders are threads of the tool's process, with no network
// between them and the store; SQLite neither (a file).

#[test]
fn partition_redis() {
    partition("redis");
}

#[test]
fn partition_postgres() {
    partition("postgres");
}

// Semaphores and read-write locks on the stores that declare them.

#[test]
fn semaphore_memory() {
    kinds("memory", "semaphore");
}

#[test]
fn rwlock_memory() {
    kinds("memory", "rwlock");
}

#[test]
fn semaphore_redis() {
    kinds("redis", "semaphore");
}

#[test]
fn rwlock_redis() {
    kinds("redis", "rwlock");
}

#[test]
fn semaphore_sqlite() {
    kinds("sqlite", "semaphore");
}

#[test]
fn rwlock_sqlite() {
    kinds("sqlite", "rwlock");
}

#[test]
fn semaphore_postgres() {
    kinds("postgres", "semaphore");
}

#[test]
fn rwlock_postgres() {
    kinds("postgres", "rwlock");
}

#[test]
fn semaphore_mysql() {
    kinds("mysql", "semaphore");
}

#[test]
fn rwlock_mysql() {
    kinds("mysql", "rwlock");
}
