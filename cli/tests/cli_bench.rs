//! `cadenas bench --duration 1s --json` against every store (about a second each): the report
//! is one JSON object with sane figures, and the run leaves no lock behind.
//!
//! Servers: Redis at `CADENAS_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), PostgreSQL
//! at `CADENAS_TEST_POSTGRES_URL`, MySQL/MariaDB at `CADENAS_TEST_MYSQL_URL`; SQL runs use a
//! random table dropped at the end.

use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

/// Runs `cadenas bench --json` on `store` for a second and returns its report.
fn bench(store: &str, extra: &[&str]) -> Value {
    try_bench(store, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// [`bench`], with the failure as a message (so that the caller can clean up first).
fn try_bench(store: &str, extra: &[&str]) -> Result<Value, String> {
    let out = Command::cargo_bin("cadenas")
        .unwrap()
        .args(["bench", "--duration", "1s", "--keys", "100", "--json"])
        .args(extra)
        .args(["--store", store])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "cadenas bench on {store} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    match stdout.lines().collect::<Vec<_>>()[..] {
        [line] => serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {stdout}")),
        _ => Err(format!(
            "expected one JSON object on one line, got: {stdout}"
        )),
    }
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("field {field} is not a number in {v}"))
}

/// The figures every report must have, whatever the store's speed.
fn check_sane(v: &Value, tasks: u64) {
    assert_eq!(v["tasks"].as_u64(), Some(tasks), "{v}");
    assert!(num(v, "uncontended_cycles_per_sec") > 0.0, "{v}");
    assert!(num(v, "contended_cycles_per_sec") > 0.0, "{v}");
    assert!(v["handoff_samples"].as_u64().unwrap() >= 5, "{v}");
    let pcts: Vec<f64> = [
        "handoff_p50_us",
        "handoff_p95_us",
        "handoff_p99_us",
        "handoff_max_us",
    ]
    .iter()
    .map(|f| num(v, f))
    .collect();
    assert!(pcts[0] > 0.0, "{v}");
    assert!(
        pcts.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {v}"
    );
    let q: Vec<f64> = v["handoff_quantiles_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(q.len(), 21, "{v}");
    assert!(
        q.windows(2).all(|w| w[0] <= w[1]),
        "quantiles out of order: {v}"
    );
    assert_eq!(q[10], pcts[0], "the 50 % quantile is p50: {v}");
    assert_eq!(q[20], pcts[3], "the 100 % quantile is the max: {v}");
    let ns = v["namespace"].as_str().unwrap();
    assert!(ns.starts_with("cadenas-bench-"), "{v}");
}

#[test]
fn memory_store() {
    let v = bench("memory:", &["--tasks", "4"]);
    check_sane(&v, 4);
    assert_eq!(v["store"], "memory:");
    assert_eq!(v["held"], 0);
}

#[test]
fn memory_store_with_held_locks_and_one_thread() {
    let v = bench("memory:", &["--held", "20000", "--threads", "1"]);
    check_sane(&v, 1);
    assert_eq!(v["held"], 20000);
    assert_eq!(v["threads"], 1);
    assert!(num(&v, "held_fill_secs") > 0.0, "{v}");
    assert!(
        v["held_rss_bytes_per_lock"].is_number(),
        "memory per held lock is reported from 10,000 held locks on: {v}"
    );
}

/// `--permits N` measures permits of a semaphore (the hand-off holds two of the three
/// permits beside the holder: as exclusive locks the second would fail), `--shared`
/// readers; the report says which.
#[test]
fn permits_and_readers() {
    let v = bench("memory:", &["--tasks", "4", "--permits", "3"]);
    check_sane(&v, 4);
    assert_eq!(
        (v["kind"].as_str(), v["permits"].as_u64()),
        (Some("permits"), Some(3)),
        "{v}"
    );
    let v = bench("memory:", &["--shared"]);
    check_sane(&v, 1);
    assert_eq!(
        (v["kind"].as_str(), v["permits"].as_u64()),
        (Some("shared"), None),
        "{v}"
    );
    let v = bench("memory:", &[]);
    assert_eq!(v["kind"], "exclusive", "{v}");
    let e = try_bench("memory:", &["--permits", "0"]).unwrap_err();
    assert!(e.contains("not a permit count"), "{e}");
    let e = try_bench("memory:", &["--permits", "2", "--shared"]).unwrap_err();
    assert!(e.contains("--shared"), "{e}");
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_store_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let v = bench(&url, &["--tasks", "2", "--held", "50"]);
    check_sane(&v, 2);
    assert_eq!(v["held"], 50);
    let list = Command::cargo_bin("cadenas")
        .unwrap()
        .args(["list", "--json", "--store", &url])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
}

/// Runs `f` on a fresh single-threaded tokio runtime (for cleanup in sync tests).
#[cfg(any(feature = "redis", feature = "postgres", feature = "mysql"))]
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[cfg(feature = "redis")]
#[test]
fn redis_store_leaves_no_lock() {
    use redis::AsyncCommands;

    let url = cadenas_test_support::redis_url();
    let connect = || async {
        let client = redis::Client::open(url.as_str()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url}: {e}. Install and start it (apt-get install redis-server; redis-server --daemonize yes) or set CADENAS_TEST_REDIS_URL.")
        })
    };
    block_on(connect());
    let v = bench(&url, &["--tasks", "4", "--held", "200"]);
    let ns = v["namespace"].as_str().unwrap().to_owned();
    // Everything the run left: lock keys under `ns:`, and the fence counters named after them.
    let left: Vec<String> = block_on(async {
        let mut con = connect().await;
        let mut left = Vec::new();
        let mut iter: redis::AsyncIter<String> = con.scan_match(format!("*{ns}*")).await.unwrap();
        while let Some(k) = iter.next_item().await {
            left.push(k.unwrap());
        }
        drop(iter);
        for k in &left {
            let _: () = con.del(k).await.unwrap();
        }
        left
    });
    check_sane(&v, 4);
    assert_eq!(v["held"], 200);
    let locks: Vec<&String> = left.iter().filter(|k| k.starts_with(&ns)).collect();
    assert!(locks.is_empty(), "locks left after the run: {locks:?}");
}

/// Benches the SQL store at `base` on a fresh table with 4 tasks and `extra` options;
/// `count_and_drop(table)` then counts the rows left in it and drops what the store made.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn sql_store(
    base: &str,
    extra: &[&str],
    count_and_drop: impl FnOnce(&str) -> Option<i64>,
) -> Value {
    let table = format!("cadenas_bench_{:016x}", rand::random::<u64>());
    let args = [&["--tasks", "4"], extra].concat();
    let v = try_bench(&format!("{base}?table={table}"), &args);
    let left = count_and_drop(&table);
    let v = v.unwrap_or_else(|e| panic!("{e}"));
    check_sane(&v, 4);
    assert_eq!(left, Some(0), "rows left in {table} after the run");
    v
}

/// A store of this process only has no other process to hand off to.
#[test]
fn handoff_across_needs_a_shared_store() {
    let e = try_bench("memory:", &["--handoff-across"]).unwrap_err();
    assert!(
        e.contains("--handoff-across") && e.contains("memory:"),
        "{e}"
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store() {
    use cadenas_test_support::postgres::{admin, base_url};
    sql_store(&base_url(), &[], |table| {
        block_on(async {
            let pool = admin().await;
            let count = format!("SELECT count(*) FROM \"{table}\"");
            let left = sqlx::query_scalar(&count).fetch_one(&pool).await.ok();
            let drop = format!(
                "DROP TABLE IF EXISTS \"{table}\", \"{table}_holders\"; \
                 DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""
            );
            sqlx::raw_sql(&drop).execute(&pool).await.unwrap();
            left
        })
    });
}

/// With the hand-off's waiter on a connection of its own, as in another process: the
/// server wakes it (its poll delay is 250 ms).
#[cfg(feature = "mysql")]
#[test]
fn mysql_store() {
    use cadenas_test_support::mysql::{admin, base_url};
    let v = sql_store(&base_url(), &["--handoff-across"], |table| {
        block_on(async {
            let pool = admin().await;
            let count = format!("SELECT count(*) FROM `{table}`");
            let left = sqlx::query_scalar(&count).fetch_one(&pool).await.ok();
            let drop =
                format!("DROP TABLE IF EXISTS `{table}`, `{table}_fences`, `{table}_holders`");
            sqlx::raw_sql(&drop).execute(&pool).await.unwrap();
            left
        })
    });
    assert_eq!(v["handoff_across"], true, "{v}");
    assert!(
        num(&v, "handoff_p50_us") < 100_000.0,
        "the waiter in another connection was polled, not woken: {v}"
    );
}
