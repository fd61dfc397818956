//! `cadenas bench`: how fast is my lock store? (like `redis-benchmark` or `pgbench`)
//!
//! Three phases, each about a third of `--duration`, on keys under a random namespace that is
//! cleaned up at the end:
//! 1. uncontended: `--tasks` tasks acquire and release over `--keys` distinct keys, each task
//!    on its own keys;
//! 2. contended: `--tasks` tasks on one key;
//! 3. hand-off: one holder, one waiter blocked on the key; the time from the holder's release
//!    to the waiter holding the lock.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::{Error, Locks, Retry};

/// What `cadenas bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The store, without password.
    pub store: String,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Distinct keys in the uncontended phase.
    pub keys: usize,
    /// Uncontended acquire+release cycles per second.
    pub uncontended_cycles_per_sec: f64,
    /// Contended (one key, all tasks) acquire+release cycles per second.
    pub contended_cycles_per_sec: f64,
    /// Hand-off samples taken.
    pub handoff_samples: usize,
    /// Hand-off latency percentiles, microseconds.
    pub handoff_p50_us: f64,
    /// 95th percentile.
    pub handoff_p95_us: f64,
    /// 99th percentile.
    pub handoff_p99_us: f64,
    /// Worst sample.
    pub handoff_max_us: f64,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Store URL.
    pub store: String,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Distinct keys for the uncontended phase.
    pub keys: usize,
    /// Total run time (split over the three phases).
    pub duration: Duration,
}

fn progress(what: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2Kcadenas bench: {what}…");
    }
}

/// Runs the benchmark.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, Error> {
    if opts.tasks == 0 || opts.keys == 0 {
        return Err(Error::invalid(
            "bench",
            "--tasks and --keys must be at least 1",
        ));
    }
    let ns = format!("cadenas-bench-{}", &crate::new_owner()[..8]);
    let locks = Locks::builder()
        .namespace(ns)
        .ttl(Some(Duration::from_secs(30)))
        .connect(&opts.store)
        .await?;
    let phase = opts.duration / 3;

    progress("uncontended");
    let per_task = opts.keys.div_ceil(opts.tasks).max(1);
    let uncontended = cycles(&locks, opts.tasks, per_task, phase, |t, i| {
        format!("k{t}-{i}")
    })
    .await?;
    progress("contended");
    let contended = cycles(&locks, opts.tasks, 1, phase, |_, _| "contended".to_owned()).await?;
    progress("hand-off");
    let mut samples = handoff(&locks, phase).await?;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let i = ((samples.len() - 1) as f64 * p).round() as usize;
        samples[i] as f64 / 1000.0
    };
    let report = BenchReport {
        store: locks.describe().to_owned(),
        tasks: opts.tasks,
        keys: opts.keys,
        uncontended_cycles_per_sec: uncontended,
        contended_cycles_per_sec: contended,
        handoff_samples: samples.len(),
        handoff_p50_us: pct(0.50),
        handoff_p95_us: pct(0.95),
        handoff_p99_us: pct(0.99),
        handoff_max_us: pct(1.0),
    };
    for info in locks.list("").await.unwrap_or_default() {
        let _ = locks.lock(&info.key).force_release().await;
    }
    let _ = locks.disconnect().await;
    Ok(report)
}

/// Acquire+release cycles per second of `tasks` tasks for `time`, each task cycling over its
/// keys `key(t, 0..per_task)`.
async fn cycles(
    locks: &Locks,
    tasks: usize,
    per_task: usize,
    time: Duration,
    key: impl Fn(usize, usize) -> String,
) -> Result<f64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let retry = Retry::default()
        .delay(Duration::from_millis(5))
        .jitter(Duration::from_millis(5));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let keys: Vec<String> = (0..per_task).map(|i| key(t, i)).collect();
        let (locks, stop, done, retry) = (locks.clone(), stop.clone(), done.clone(), retry.clone());
        handles.push(tokio::spawn(async move {
            let lock_handles: Vec<_> = keys
                .iter()
                .map(|k| locks.lock(k).retry(retry.clone()))
                .collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let g = lock_handles[i % lock_handles.len()].acquire().await?;
                g.release().await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
                // An in-memory store never makes a task wait: let the timer run.
                if i % 128 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await
            .map_err(|e| Error::invalid("bench", e.to_string()))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Hand-off latencies in nanoseconds for `time`.
async fn handoff(locks: &Locks, time: Duration) -> Result<Vec<u64>, Error> {
    let key = "handoff";
    // The waiter's poll delay is long, so a missed notification shows as a large sample.
    let waiter_lock = locks.lock(key).retry(
        Retry::default()
            .delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(30)),
    );
    let holder_lock = locks.lock(key);
    let mut samples = Vec::new();
    let until = Instant::now() + time;
    while Instant::now() < until || samples.len() < 5 {
        let g = holder_lock.acquire().await?;
        let waiter = waiter_lock.clone();
        let handle = tokio::spawn(async move {
            let r = waiter.acquire().await;
            (Instant::now(), r)
        });
        // Let the waiter find the lock held and start waiting.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let released_at = Instant::now();
        g.release().await?;
        let (got_at, r) = handle
            .await
            .map_err(|e| Error::invalid("bench", e.to_string()))?;
        let g = r?;
        samples.push(got_at.saturating_duration_since(released_at).as_nanos() as u64);
        g.release().await?;
        if samples.len() >= 100_000 {
            break;
        }
    }
    Ok(samples)
}
