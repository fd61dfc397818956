//! Measurements of the PostgreSQL store next to the server's own advisory locks (ignored;
//! run with `cargo test --release --features postgres --test postgres_measure -- --ignored --nocapture`).
//!
//! `CADENAS_MEASURE_SECS` sets the length of each run (default 2 s), `CADENAS_MEASURE_ROUNDS`
//! how many times each loop runs, in turn with the others (default 3; medians are printed),
//! `CADENAS_MEASURE_VARIANTS` the store URL options to measure, separated by `;` (default:
//! `unlogged=false;unlogged=true;synchronous_commit=off`).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Instant;

use cadenas::store::{Acquire, Store};
use cadenas::stores::postgres::PostgresStore;

#[path = "support/postgres.rs"]
mod pg;
use pg::*;

#[path = "support/measure.rs"]
mod measure;
use measure::{and, median, rate, rounds};

/// The ceiling: `pg_try_advisory_lock` then `pg_advisory_unlock`, each statement on a
/// connection checked out of the pool for that statement, as the store does — through a
/// store's own pool (one per task, of size 1, so that the unlock runs on the session that
/// holds the lock).
async fn ceiling(tasks: usize, query: &str) -> f64 {
    let mut stores = Vec::new();
    for _ in 0..tasks {
        let (s, _t, c) = store_with(&and(query, "pool_size=1")).await;
        stores.push((s, c));
    }
    let pools: Arc<Vec<_>> = Arc::new(stores.iter().map(|(s, _)| s.pool().clone()).collect());
    rate(tasks, move |i| {
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
    })
    .await
}

/// The same loop holding one pooled connection for both statements (the ceiling of the
/// earlier figures, which pays one pool checkout per cycle instead of two).
async fn ceiling_one_checkout(tasks: usize, store: &PostgresStore) -> f64 {
    let pool = store.pool().clone();
    rate(tasks, move |i| {
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
    })
    .await
}

async fn store_cycles(tasks: usize, store: &Arc<PostgresStore>) -> f64 {
    let store = store.clone();
    rate(tasks, move |i| {
        let s = store.clone();
        async move {
            let key = format!("bench{i}");
            fence_of(s.try_acquire(req(&key, "o", LONG)).await.unwrap());
            assert!(s.release(&key, "o").await.unwrap());
        }
    })
    .await
}

/// Throughput next to bare advisory-lock loops, and hand-off latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure() {
    let variants = std::env::var("CADENAS_MEASURE_VARIANTS")
        .unwrap_or_else(|_| "unlogged=false;unlogged=true;synchronous_commit=off".into());
    let variants: Vec<&str> = variants.split(';').filter(|v| !v.is_empty()).collect();
    for tasks in [1usize, 16] {
        let mut stores = Vec::new();
        for v in &variants {
            let (s, _t, c) = store_with(&and(v, "pool_size=16")).await;
            stores.push((Arc::new(s), c));
        }
        let (one_store, _t, _c) = store_with("pool_size=16").await;
        let (mut fair, mut one) = (vec![], vec![]);
        let mut ours = vec![vec![]; variants.len()];
        for _ in 0..rounds() {
            fair.push(ceiling(tasks, "").await);
            one.push(ceiling_one_checkout(tasks, &one_store).await);
            for (i, (s, _)) in stores.iter().enumerate() {
                ours[i].push(store_cycles(tasks, s).await);
            }
        }
        let (fair, one) = (median(fair), median(one));
        println!(
            "postgres tasks={tasks}: advisory-lock ceiling {fair:.0}/s (one checkout per statement, as the store), {one:.0}/s (one per cycle)"
        );
        for (v, rates) in variants.iter().zip(ours) {
            let r = median(rates);
            println!(
                "postgres {v} tasks={tasks}: {r:.0} cycles/s, ratio {:.2} (to the one-checkout ceiling {:.2})",
                r / fair,
                r / one
            );
        }
    }
    // Hand-off latency: release in one store, wake in another whose try found the key held.
    let (waiter, table, _c) = store_with("").await;
    let holder = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let mut sub = waiter.subscribe("h").await.unwrap().unwrap();
    let mut lat = vec![];
    for _ in 0..200 {
        fence_of(holder.try_acquire(req("h", "h", LONG)).await.unwrap());
        assert!(matches!(
            waiter.try_acquire(req("h", "w", LONG)).await.unwrap(),
            Acquire::Held(_)
        ));
        let t = Instant::now();
        holder.release("h", "h").await.unwrap();
        sub.released().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "postgres hand-off (release call + NOTIFY): p50 {:?} p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
