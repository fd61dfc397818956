//! Throughput loops compared on a noisy machine, for the ignored measurement tests.
//!
//! The loops being compared run in turn in short slices (200 ms each), many times over, so a
//! change in the machine's load touches all of them alike; each one's rate is its cycles
//! over its own time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One cycle of a loop, run by task `i`.
pub type Cycle = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Wraps a closure as a [`Cycle`].
pub fn cycle<F, Fut>(f: F) -> Cycle
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)))
}

const SLICE: Duration = Duration::from_millis(200);

/// How long each loop runs in all: `CADENAS_MEASURE_SECS` (default 6 s).
pub fn run_for() -> Duration {
    let secs = std::env::var("CADENAS_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs)
}

/// URL options `a` and `b` together.
pub fn and(a: &str, b: &str) -> String {
    [a, b]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs `cycle` in `tasks` tasks until `end`; the number of cycles done.
async fn slice(tasks: usize, cycle: &Cycle, end: Instant) -> u64 {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let cycle = cycle.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    cycle(i).await;
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
    total
}

/// Cycles per second of each loop, run with `tasks` tasks, in turn in short slices.
pub async fn compare(tasks: usize, loops: &[Cycle]) -> Vec<f64> {
    let slices = (run_for().as_secs_f64() / SLICE.as_secs_f64()).ceil() as usize;
    let mut done = vec![0u64; loops.len()];
    let mut spent = vec![Duration::ZERO; loops.len()];
    for _ in 0..slices {
        for (k, l) in loops.iter().enumerate() {
            let start = Instant::now();
            done[k] += slice(tasks, l, start + SLICE).await;
            spent[k] += start.elapsed();
        }
    }
    done.iter()
        .zip(&spent)
        .map(|(n, t)| *n as f64 / t.as_secs_f64())
        .collect()
}

/// Acquire and release of key `bench<task>` through `store`, for 60 s leases.
pub fn store_cycle(store: Arc<dyn cadenas::store::Store>) -> Cycle {
    use cadenas::store::{Acquire, AcquireRequest};
    cycle(move |i| {
        let s = store.clone();
        async move {
            let key = format!("bench{i}");
            let request = AcquireRequest::new(&key, "o", Some(Duration::from_secs(60)));
            match s.try_acquire(request).await.unwrap() {
                Acquire::Acquired(lease) => assert!(lease.fence.is_some()),
                Acquire::Held(h) => panic!("{key} held by {h:?}"),
            }
            assert!(s.release(&key, "o").await.unwrap());
        }
    })
}
