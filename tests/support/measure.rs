//! A throughput loop shared by the ignored measurement tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The length of each run: `CADENAS_MEASURE_SECS` (default 2 s).
pub fn run_for() -> Duration {
    let secs = std::env::var("CADENAS_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// How many times each loop runs, in turn with the others, so that the machine's changing
/// load touches all of them alike: `CADENAS_MEASURE_ROUNDS` (default 3).
pub fn rounds() -> usize {
    std::env::var("CADENAS_MEASURE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// The median of some rates.
pub fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
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

/// Runs `cycle(task)` in `tasks` tasks for `run_for`; cycles per second.
pub async fn rate<F, Fut>(tasks: usize, cycle: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let run_for = run_for();
    let end = Instant::now() + run_for;
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
    total as f64 / run_for.as_secs_f64()
}
