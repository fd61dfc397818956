//! Measurements of the MySQL/MariaDB store next to the server's own named locks (ignored;
//! run with `cargo test --release --features mysql --test mysql_measure -- --ignored --nocapture`).
//!
//! `CADENAS_MEASURE_SECS` sets the length of each run (default 2 s), `CADENAS_MEASURE_ROUNDS`
//! how many times each loop runs, in turn with the others (default 3; medians are printed).
#![cfg(feature = "mysql")]

use std::sync::Arc;

use cadenas::store::Store;
use cadenas::stores::mysql::MySqlStore;

#[path = "support/mysql.rs"]
mod my;
use my::*;

#[path = "support/measure.rs"]
mod measure;
use measure::{median, rate, rounds};

/// The ceiling: `GET_LOCK` then `RELEASE_LOCK`, each statement on a connection checked out
/// of the pool for that statement, as the store does — through a store's own pool (one per
/// task, of size 1, so that the release runs on the session that holds the lock).
async fn ceiling(tasks: usize) -> f64 {
    let mut stores = Vec::new();
    for _ in 0..tasks {
        let (s, _t, c) = store_with("pool_size=1").await;
        stores.push((s, c));
    }
    let pools: Arc<Vec<_>> = Arc::new(stores.iter().map(|(s, _)| s.pool().clone()).collect());
    rate(tasks, move |i| {
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
    })
    .await
}

/// The same loop holding one pooled connection for both statements (the ceiling of the
/// earlier figures, which pays one pool checkout per cycle instead of two).
async fn ceiling_one_checkout(tasks: usize, store: &MySqlStore) -> f64 {
    let pool = store.pool().clone();
    rate(tasks, move |i| {
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
    })
    .await
}

/// Throughput next to bare `GET_LOCK`/`RELEASE_LOCK` loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure() {
    for tasks in [1usize, 16] {
        let (s, _t, _c) = store_with("pool_size=16").await;
        let s = Arc::new(s);
        let (mut fair, mut one, mut ours) = (vec![], vec![], vec![]);
        for _ in 0..rounds() {
            fair.push(ceiling(tasks).await);
            one.push(ceiling_one_checkout(tasks, &s).await);
            let s = s.clone();
            ours.push(
                rate(tasks, move |i| {
                    let s = s.clone();
                    async move {
                        let key = format!("bench{i}");
                        fence_of(s.try_acquire(req(&key, "o", LONG)).await.unwrap());
                        assert!(s.release(&key, "o").await.unwrap());
                    }
                })
                .await,
            );
        }
        let (fair, one, ours) = (median(fair), median(one), median(ours));
        println!(
            "mariadb tasks={tasks}: {ours:.0} cycles/s; GET_LOCK ceiling {fair:.0}/s (one checkout per statement, as the store), {one:.0}/s (one per cycle); ratio {:.2} ({:.2} to the one-checkout ceiling)",
            ours / fair,
            ours / one
        );
    }
}
