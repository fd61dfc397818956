//! Measurements of the MySQL/MariaDB store next to the server's own named locks (ignored;
//! run with `cargo test --release --features mysql --test mysql_measure -- --ignored --nocapture`).
//!
//! `CADENAS_MEASURE_SECS` sets how long each loop runs in all (default 6 s; the loops run in
//! turn in short slices). The store's pool has one connection per task, as many as the
//! ceiling's pools together; it is measured with 16 as well, and with
//! `test_before_acquire=false` next to a ceiling whose pools have it too.
#![cfg(feature = "mysql")]

use std::sync::Arc;

use cadenas_test_support::measure::{self, compare, cycle, Cycle};
use cadenas_test_support::mysql::*;

/// The ceiling: `GET_LOCK` then `RELEASE_LOCK`, each statement on a connection checked out
/// of the pool for that statement, as the store does — through a store's own pool (one per
/// task, of size 1, so that the release runs on the session that holds the lock), with the
/// URL options `query` added. The stores are returned to be kept (and their tables dropped)
/// to the end.
async fn ceiling(tasks: usize, query: &str) -> (Cycle, Vec<Cleanup>) {
    let (mut pools, mut cleanups) = (vec![], vec![]);
    for _ in 0..tasks {
        let (s, _t, c) = store_with(&format!("pool_size=1{query}")).await;
        pools.push(s.pool().clone());
        cleanups.push(c);
    }
    let pools = Arc::new(pools);
    let cycle = cycle(move |i| {
        let pools = pools.clone();
        async move {
            let key = format!("bench{i}");
            let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                .bind(&key)
                .fetch_one(&pools[i])
                .await
                .unwrap();
            assert_eq!(locked, Some(1));
            let unlocked: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
                .bind(&key)
                .fetch_one(&pools[i])
                .await
                .unwrap();
            assert_eq!(unlocked, Some(1));
        }
    });
    (cycle, cleanups)
}

/// The same loop holding one pooled connection (of 16) for both statements: the ceiling of
/// the earlier figures, which pays one pool checkout per cycle instead of two.
async fn ceiling_one_checkout() -> (Cycle, Cleanup) {
    let (s, _t, c) = store_with("pool_size=16").await;
    let pool = s.pool().clone();
    let cycle = cycle(move |i| {
        let pool = pool.clone();
        async move {
            let key = format!("bench{i}");
            let mut c = pool.acquire().await.unwrap();
            sqlx::query("SELECT GET_LOCK(?, 0)")
                .bind(&key)
                .execute(&mut *c)
                .await
                .unwrap();
            sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(&key)
                .execute(&mut *c)
                .await
                .unwrap();
        }
    });
    (cycle, c)
}

/// Acquire and release through the store, on a fresh table with URL options `query`.
async fn store_cycle(query: &str) -> (Cycle, Cleanup) {
    let (s, _t, c) = store_with(query).await;
    (measure::store_cycle(Arc::new(s)), c)
}

/// Throughput next to bare `GET_LOCK`/`RELEASE_LOCK` loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure() {
    for tasks in [1usize, 16] {
        let (one, _c1) = ceiling_one_checkout().await;
        let same = format!("pool_size={tasks}");
        let noping = format!("pool_size={tasks}&test_before_acquire=false");
        for o in [same.as_str(), "pool_size=16", noping.as_str()] {
            // The ceiling's pools ping before a checkout or not, as the store's. (One variant
            // at a time, to stay well within the server's connection limit.)
            let extra = if o.contains("test_before_acquire=false") {
                "&test_before_acquire=false"
            } else {
                ""
            };
            let (ceiling, _c2) = ceiling(tasks, extra).await;
            let (ours, _c3) = store_cycle(o).await;
            let rates = compare(tasks, &[ceiling, one.clone(), ours]).await;
            let (fair, one, r) = (rates[0], rates[1], rates[2]);
            println!(
                "mariadb {o} tasks={tasks}: {r:.0} cycles/s; GET_LOCK ceiling {fair:.0}/s (a pool checkout per statement, as the store), {one:.0}/s (one checkout per cycle); ratio {:.2} ({:.2} to the one-checkout ceiling)",
                r / fair,
                r / one
            );
        }
    }
}
