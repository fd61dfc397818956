//! Measurements of the PostgreSQL store next to the server's own advisory locks (ignored;
//! run with `cargo test --release --features postgres --test postgres_measure -- --ignored --nocapture`).
//!
//! `CADENAS_MEASURE_SECS` sets how long each loop runs in all (default 6 s; the loops run in
//! turn in short slices), `CADENAS_MEASURE_VARIANTS` the store URL options to measure,
//! separated by `;` (default: durable, `unlogged=true`, `synchronous_commit=off`, and the
//! last with `test_before_acquire=false`). The store's pool has one connection per task, as
//! many as the ceiling's pools together, unless a variant sets `pool_size`; a variant with
//! `test_before_acquire=false` is compared with a ceiling whose pools have it too.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Instant;

use cadenas::store::{Acquire, AcquireRequest, Store};

use cadenas_test_support::measure::{self, and, compare, cycle, Cycle};
use cadenas_test_support::postgres::*;

/// The ceiling: `pg_try_advisory_lock` then `pg_advisory_unlock`, each statement on a
/// connection checked out of the pool for that statement, as the store does — through a
/// store's own pool (one per task, of size 1, so that the unlock runs on the session that
/// holds the lock), made with the URL options `query`. The stores are returned to be kept
/// (and their tables dropped) to the end.
async fn ceiling(tasks: usize, query: &str) -> (Cycle, Vec<Cleanup>) {
    let (mut pools, mut cleanups) = (vec![], vec![]);
    for _ in 0..tasks {
        let (s, _t, c) = store_with(&and(query, "pool_size=1")).await;
        pools.push(s.pool().clone());
        cleanups.push(c);
    }
    let pools = Arc::new(pools);
    let cycle = cycle(move |i| {
        let pools = pools.clone();
        async move {
            let key = format!("bench{i}");
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&pools[i])
                .await
                .unwrap();
            assert!(locked);
            let unlocked: bool = sqlx::query_scalar("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(&key)
                .fetch_one(&pools[i])
                .await
                .unwrap();
            assert!(unlocked);
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
            sqlx::query("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .execute(&mut *c)
                .await
                .unwrap();
            sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
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

/// The pool option that skips sqlx's ping before each checkout.
const NO_PING: &str = "test_before_acquire=false";

/// Throughput next to bare advisory-lock loops, and hand-off latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure() {
    let variants = std::env::var("CADENAS_MEASURE_VARIANTS")
        .unwrap_or_else(|_| {
            "unlogged=false;unlogged=true;synchronous_commit=off;synchronous_commit=off&test_before_acquire=false".into()
        });
    let variants: Vec<&str> = variants.split(';').filter(|v| !v.is_empty()).collect();
    for tasks in [1usize, 16] {
        let (one, _c1) = ceiling_one_checkout().await;
        for v in &variants {
            let o = match v.contains("pool_size") {
                true => v.to_string(),
                false => and(v, &format!("pool_size={tasks}")),
            };
            // The ceiling's pools ping before a checkout or not, as the store's. (One variant
            // at a time: the shared server allows 100 connections.)
            let (ceiling, _c2) =
                ceiling(tasks, if o.contains(NO_PING) { NO_PING } else { "" }).await;
            let (ours, _c3) = store_cycle(&o).await;
            let rates = compare(tasks, &[ceiling, one.clone(), ours]).await;
            let (fair, one, r) = (rates[0], rates[1], rates[2]);
            println!(
                "postgres {o} tasks={tasks}: {r:.0} cycles/s; advisory-lock ceiling {fair:.0}/s (a pool checkout per statement, as the store), {one:.0}/s (one checkout per cycle); ratio {:.2} ({:.2} to the one-checkout ceiling)",
                r / fair,
                r / one
            );
        }
    }
    for query in ["", "synchronous_commit=off"] {
        handoff(query).await;
    }
}

/// Hand-off latency: release in one store, wake in another whose try found the key held.
async fn handoff(query: &str) {
    let (waiter, table, _c) = store_with(query).await;
    let holder = connect(&with_query(
        &base_url(),
        &and(&format!("table={table}"), query),
    ))
    .await;
    let mut sub = waiter.subscribe("h").await.unwrap().unwrap();
    let mut lat = vec![];
    for _ in 0..200 {
        fence_of(
            holder
                .try_acquire(AcquireRequest::new("h", "h", LONG))
                .await
                .unwrap(),
        );
        assert!(matches!(
            waiter
                .try_acquire(AcquireRequest::new("h", "w", LONG))
                .await
                .unwrap(),
            Acquire::Held(_)
        ));
        let t = Instant::now();
        holder.release("h", "h").await.unwrap();
        sub.released().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "postgres hand-off [{query}] (release call + NOTIFY): p50 {:?} p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
