//! Redlock figures on 5 local `redis-server` masters (ignored by default):
//!
//! ```text
//! cargo test --release --features redlock --test redlock_bench -- --ignored --nocapture
//! ```
//!
//! Prints acquire+release cycles/s for 1 task and for 32 tasks (each on its own key), and the
//! acquire latency p50/p99 with all nodes up and with one node stopped (SIGSTOP).
#![cfg(feature = "redlock")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadenas::Locks;
use cadenas_test_support::redis::RedisServer;

const PHASE: Duration = Duration::from_secs(3);
const SAMPLES: usize = 2000;

fn url(servers: &[RedisServer]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redlock://{}", hosts.join(","))
}

async fn cycles_per_sec(locks: &Locks, tasks: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (locks, stop, cycles) = (locks.clone(), stop.clone(), cycles.clone());
            tokio::spawn(async move {
                let lock = locks.lock(&format!("bench-{tasks}-{t}"));
                while !stop.load(Ordering::Relaxed) {
                    lock.try_acquire().await.unwrap().release().await.unwrap();
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    cycles.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// p50 and p99 of `SAMPLES` acquires (the release after each is not timed).
async fn acquire_latency(locks: &Locks, key: &str) -> (Duration, Duration, Duration) {
    let lock = locks.lock(key);
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let g = lock.try_acquire().await.unwrap();
        samples.push(started.elapsed());
        g.release().await.unwrap();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99), samples[samples.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
async fn redlock_figures() {
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let locks = Locks::connect(&url(&servers)).await.unwrap();
    let node_timeout = cadenas::stores::redlock::DEFAULT_NODE_TIMEOUT;
    // Connections up before measuring.
    locks
        .lock("warm")
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let one = cycles_per_sec(&locks, 1).await;
    let many = cycles_per_sec(&locks, 32).await;
    let (p50, p99, max) = acquire_latency(&locks, "latency-up").await;
    servers[4].pause();
    let (s50, s99, smax) = acquire_latency(&locks, "latency-stopped").await;
    let stopped_cycles = cycles_per_sec(&locks, 1).await;
    servers[4].resume();
    println!("Redlock, 5 local redis-server masters, node_timeout {node_timeout:?}:");
    println!("  acquire+release, 1 task:   {one:>8.0} cycles/s");
    println!("  acquire+release, 32 tasks: {many:>8.0} cycles/s (each task on its own key)");
    println!("  acquire latency, all up:       p50 {p50:?}  p99 {p99:?}  max {max:?}");
    println!("  acquire latency, 1 node SIGSTOP: p50 {s50:?}  p99 {s99:?}  max {smax:?}");
    println!("  acquire+release, 1 task, 1 node SIGSTOP: {stopped_cycles:>8.0} cycles/s");
    assert!(
        s99 < node_timeout,
        "a stopped node delayed acquires: p99 {s99:?}"
    );
}
