//! Measurements of the PostgreSQL store next to the server's own advisory locks (ignored;
//! run with `cargo test --release --features postgres --test postgres_measure -- --ignored --nocapture`).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cadenas::store::Store;

#[path = "support/postgres.rs"]
mod pg;
use pg::*;

/// Throughput next to a bare advisory-lock loop, and hand-off latency. Run with
/// `cargo test --release --features postgres --test postgres_measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure() {
    let run_for = Duration::from_secs(3);
    for unlogged in [false, true] {
        let (s, _t, _c) = store_with(&format!("pool_size=16&unlogged={unlogged}")).await;
        let s = Arc::new(s);
        let pool = s.pool().clone();
        for tasks in [1usize, 16] {
            let cycles = |bare: bool| {
                let (s, pool) = (s.clone(), pool.clone());
                async move {
                    let end = Instant::now() + run_for;
                    let handles: Vec<_> = (0..tasks)
                        .map(|i| {
                            let (s, pool) = (s.clone(), pool.clone());
                            tokio::spawn(async move {
                                let (key, mut n) = (format!("bench{i}"), 0u64);
                                while Instant::now() < end {
                                    if bare {
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
                                    } else {
                                        fence_of(
                                            s.try_acquire(req(&key, "o", LONG)).await.unwrap(),
                                        );
                                        assert!(s.release(&key, "o").await.unwrap());
                                    }
                                    n += 1;
                                }
                                n
                            })
                        })
                        .collect();
                    let mut total = 0;
                    for h in handles {
                        total += h.await.unwrap();
                    }
                    total as f64 / run_for.as_secs_f64()
                }
            };
            let ceiling = cycles(true).await;
            let ours = cycles(false).await;
            println!(
                "postgres unlogged={unlogged} tasks={tasks}: {ours:.0} cycles/s, advisory-lock ceiling {ceiling:.0}/s, ratio {:.2}",
                ours / ceiling
            );
        }
    }
    // Hand-off latency: release in one store, wake in another.
    let (waiter, table, _c) = store_with("").await;
    let holder = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let mut sub = waiter.subscribe("h").await.unwrap().unwrap();
    let mut lat = vec![];
    for _ in 0..200 {
        fence_of(holder.try_acquire(req("h", "h", LONG)).await.unwrap());
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
