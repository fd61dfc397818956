//! `cadenas bench`: how fast is my lock store? (like `redis-benchmark` or `pgbench`)
//!
//! Three phases, each about a third of `--duration`, on keys under a random namespace that is
//! cleaned up at the end:
//! 1. uncontended: `--tasks` tasks acquire and release over `--keys` distinct keys, each task
//!    on its own keys;
//! 2. contended: `--tasks` tasks on one key;
//! 3. hand-off: one holder, one waiter blocked on the key; the time from the holder's release
//!    to the waiter holding the lock. The waiter shares the holder's store connection, or
//!    with `--handoff-across` has one of its own (a second store on the URL). On SQLite and
//!    DynamoDB a process's stores share their release notification, so there it does not
//!    show how a waiter in another process, which polls, fares.
//!
//! With `--permits N` every lock of the three phases is one permit of a semaphore of N (the
//! hand-off waits for the last permit: the other N − 1 are held by other owners meanwhile);
//! with `--shared` every lock is a reader of a read-write lock (in the hand-off a writer
//! holds the key and the waiter is a reader). Without either, the locks are exclusive: on a
//! store with read-write locks that is the writer's cycle.
//!
//! With `--held N`, N other locks are taken first and held through the three phases (how the
//! store copes with many live locks), then released.
//!
//! Locks are removed at the end, but stores that keep a fence counter per key after release
//! (Redis, MySQL) keep those of the keys the run used, under the run's namespace (printed in
//! the JSON report).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use cadenas::{Error, LockKind, Locks, Retry};

use crate::hold::lock_of;

/// What `cadenas bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The store, without password.
    pub store: String,
    /// The random namespace the run's keys lived under.
    pub namespace: String,
    /// Worker threads of the async runtime the run used.
    pub threads: usize,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Distinct keys in the uncontended phase.
    pub keys: usize,
    /// How the run's locks hold their keys: `exclusive`, `shared` or `permits`.
    pub kind: &'static str,
    /// The semaphore's permit count (`--permits`).
    pub permits: Option<u32>,
    /// Other locks held during the three phases.
    pub held: usize,
    /// Seconds it took to take the `held` locks.
    pub held_fill_secs: f64,
    /// Growth of this process's resident memory per held lock, in bytes (Linux, `held` ≥
    /// 10,000): the whole cost of a lock for the memory store, the client's for the others.
    pub held_rss_bytes_per_lock: Option<f64>,
    /// Total run time asked for, seconds.
    pub duration_secs: f64,
    /// Uncontended acquire+release cycles per second.
    pub uncontended_cycles_per_sec: f64,
    /// Contended (one key, all tasks) acquire+release cycles per second.
    pub contended_cycles_per_sec: f64,
    /// The hand-off waiter had a store connection of its own (`--handoff-across`).
    pub handoff_across: bool,
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
    /// Hand-off latency at 0 %, 5 %, 10 %, … 100 % (21 values), microseconds: the
    /// distribution, for plots.
    pub handoff_quantiles_us: Vec<f64>,
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
    /// Other locks to hold during the run.
    pub held: usize,
    /// The hand-off waiter connects to the store on its own.
    pub handoff_across: bool,
    /// How the measured locks hold their keys (`--permits`, `--shared`).
    pub kind: LockKind,
}

impl BenchOptions {
    /// The CLI's defaults on `store`: 1 task, 1,000 keys, 3 s, nothing else held.
    pub fn new(store: impl Into<String>) -> BenchOptions {
        BenchOptions {
            store: store.into(),
            tasks: 1,
            keys: 1000,
            duration: Duration::from_secs(3),
            held: 0,
            handoff_across: false,
            kind: LockKind::Exclusive,
        }
    }
}

/// The line on stderr while the run goes on, only on a terminal.
#[derive(Clone, Copy)]
struct Progress(bool);

impl Progress {
    fn show(self, what: &str) {
        if self.0 {
            eprint!("\r\x1b[2Kcadenas bench: {what}");
        }
    }

    fn clear(self) {
        if self.0 {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Runs the benchmark.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, Error> {
    if opts.tasks == 0 || opts.keys == 0 {
        return Err(crate::invalid(
            "bench",
            "--tasks and --keys must be at least 1",
        ));
    }
    let progress = Progress(std::io::stderr().is_terminal());
    let ns = format!("cadenas-bench-{}", &cadenas::new_owner()[..8]);
    let locks = Locks::builder()
        .namespace(ns.clone())
        .ttl(Some(Duration::from_secs(30)))
        .connect(&opts.store)
        .await?;
    let waiter = match opts.handoff_across {
        true => Some(across(&locks, &ns, opts).await?),
        false => None,
    };
    let result = measure(&locks, waiter.as_ref().unwrap_or(&locks), opts, progress).await;
    if let Some(w) = waiter {
        let _ = w.disconnect().await;
    }
    progress.show("cleaning up");
    for info in locks.list("").await.unwrap_or_default() {
        let _ = locks.lock(&info.key).force_release().await;
    }
    let _ = locks.disconnect().await;
    progress.clear();
    let mut report = result?;
    report.namespace = ns;
    Ok(report)
}

/// The hand-off waiter's own connection to the store of `locks`, in namespace `ns`.
async fn across(locks: &Locks, ns: &str, opts: &BenchOptions) -> Result<Locks, Error> {
    if !locks.store().capabilities().shared {
        return Err(crate::invalid(
            "bench",
            format!(
                "--handoff-across needs a store that processes share; {} is this process's own",
                locks.describe()
            ),
        ));
    }
    Locks::builder()
        .namespace(ns)
        .ttl(Some(Duration::from_secs(30)))
        .connect(&opts.store)
        .await
}

async fn measure(
    locks: &Locks,
    waiter: &Locks,
    opts: &BenchOptions,
    progress: Progress,
) -> Result<BenchReport, Error> {
    let rss_before = rss_bytes();
    let fill_started = Instant::now();
    let held = hold(locks, opts.held, progress).await;
    let held_fill_secs = fill_started.elapsed().as_secs_f64();
    let held_rss_bytes_per_lock = match (rss_before, rss_bytes()) {
        (Some(b), Some(a)) if opts.held >= 10_000 => {
            Some(a.saturating_sub(b) as f64 / opts.held as f64)
        }
        _ => None,
    };
    let phases = match held {
        Ok(()) => phases(locks, waiter, opts, progress).await,
        Err(e) => Err(e),
    };
    // Release the held locks even when a phase failed.
    release_held(locks, opts.held, progress).await;
    let (uncontended, contended, mut samples) = phases?;
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let i = ((samples.len() - 1) as f64 * p).round() as usize;
        samples[i] as f64 / 1000.0
    };
    Ok(BenchReport {
        store: locks.describe().to_owned(),
        namespace: String::new(),
        threads: tokio::runtime::Handle::current().metrics().num_workers(),
        tasks: opts.tasks,
        keys: opts.keys,
        kind: opts.kind.name(),
        permits: match opts.kind {
            LockKind::Permits(n) => Some(n),
            _ => None,
        },
        held: opts.held,
        held_fill_secs,
        held_rss_bytes_per_lock,
        duration_secs: opts.duration.as_secs_f64(),
        uncontended_cycles_per_sec: uncontended,
        contended_cycles_per_sec: contended,
        handoff_across: opts.handoff_across,
        handoff_samples: samples.len(),
        handoff_p50_us: pct(0.50),
        handoff_p95_us: pct(0.95),
        handoff_p99_us: pct(0.99),
        handoff_max_us: pct(1.0),
        handoff_quantiles_us: (0..=20).map(|i| pct(i as f64 / 20.0)).collect(),
    })
}

/// The three phases: uncontended and contended cycles/s, hand-off samples (ns); the
/// hand-off's waiter uses `waiter`.
async fn phases(
    locks: &Locks,
    waiter: &Locks,
    opts: &BenchOptions,
    progress: Progress,
) -> Result<(f64, f64, Vec<u64>), Error> {
    let phase = opts.duration / 3;
    let per_task = opts.keys.div_ceil(opts.tasks).max(1);
    let uncontended = cycles(
        locks,
        opts.kind,
        opts.tasks,
        per_task,
        phase,
        progress,
        "uncontended",
        |t, i| format!("k{t}-{i}"),
    )
    .await?;
    let contended = cycles(
        locks,
        opts.kind,
        opts.tasks,
        1,
        phase,
        progress,
        "contended",
        |_, _| "contended".to_owned(),
    )
    .await?;
    progress.show("hand-off");
    let samples = handoff(locks, waiter, opts.kind, phase).await?;
    Ok((uncontended, contended, samples))
}

/// Tasks that take the held locks (or release them).
const HOLDERS: usize = 64;

fn held_key(i: usize) -> String {
    format!("held-{i}")
}

/// Takes `n` locks `held-0…` and keeps them (for an hour at most, in case the run is killed).
async fn hold(locks: &Locks, n: usize, progress: Progress) -> Result<(), Error> {
    let taken = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..HOLDERS.min(n) {
        let (locks, taken) = (locks.clone(), taken.clone());
        handles.push(tokio::spawn(async move {
            for i in (t..n).step_by(HOLDERS) {
                let lock = locks
                    .lock(&held_key(i))
                    .with_ttl(Some(Duration::from_secs(3600)))
                    .with_auto_extend(false);
                lock.try_acquire().await?.leak();
                taken.fetch_add(1, Ordering::Relaxed);
                if i % 128 == t {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    let mut result = Ok(());
    for mut h in handles {
        let r = loop {
            match tokio::time::timeout(Duration::from_millis(200), &mut h).await {
                Ok(r) => break r,
                Err(_) => progress.show(&format!(
                    "holding {} of {n} locks",
                    taken.load(Ordering::Relaxed)
                )),
            }
        };
        let r = r
            .map_err(|e| crate::invalid("bench", e.to_string()))
            .and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// Releases the locks `hold` took (best effort: the run's result is already known).
async fn release_held(locks: &Locks, n: usize, progress: Progress) {
    if n > 0 {
        progress.show(&format!("releasing {n} held locks"));
    }
    let handles: Vec<_> = (0..HOLDERS.min(n))
        .map(|t| {
            let locks = locks.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(HOLDERS) {
                    let _ = locks.lock(&held_key(i)).force_release().await;
                    if i % 128 == t {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Acquire+release cycles per second of `tasks` tasks for `time`, each task cycling over its
/// keys `key(t, 0..per_task)`.
#[allow(clippy::too_many_arguments)]
async fn cycles(
    locks: &Locks,
    kind: LockKind,
    tasks: usize,
    per_task: usize,
    time: Duration,
    progress: Progress,
    phase: &str,
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
                .map(|k| lock_of(&locks, k, kind).with_retry(retry.clone()))
                .collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let g = lock_handles[i % lock_handles.len()].acquire().await?;
                g.release().await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
                // An in-memory store never makes a task wait: let the timer and the other
                // tasks run now and then (not often: on a multi-thread runtime each yield
                // wakes an idle worker to steal the task, a context switch or two).
                if i % 4096 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    let started = Instant::now();
    let until = started + time;
    while Instant::now() < until {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let n = done.load(Ordering::Relaxed);
        progress.show(&format!(
            "{phase}: {n} cycles, {:.0}/s ({secs:.1} of {:.1} s)",
            n as f64 / secs,
            time.as_secs_f64()
        ));
        tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(250))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for h in handles {
        h.await
            .map_err(|e| crate::invalid("bench", e.to_string()))??;
    }
    Ok(counted as f64 / elapsed)
}

/// Hand-off latencies in nanoseconds for `time`, from a holder on `locks` to a waiter on
/// `waiter` (the same, or another connection to the store) that holds the key as `kind`.
/// For a semaphore of N the other N − 1 permits are held meanwhile; for a reader the holder
/// is a writer.
async fn handoff(
    locks: &Locks,
    waiter: &Locks,
    kind: LockKind,
    time: Duration,
) -> Result<Vec<u64>, Error> {
    let key = "handoff";
    // The waiter's poll delay is long, so a missed notification shows as a large sample.
    let waiter_lock = lock_of(waiter, key, kind).with_retry(
        Retry::default()
            .delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(30)),
    );
    let holder_lock = match kind {
        LockKind::Shared => locks.lock(key),
        _ => lock_of(locks, key, kind),
    };
    let mut others = Vec::new();
    if let LockKind::Permits(n) = kind {
        for _ in 1..n {
            let other = lock_of(locks, key, kind).with_ttl(Some(Duration::from_secs(3600)));
            others.push(other.try_acquire().await?);
        }
    }
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
            .map_err(|e| crate::invalid("bench", e.to_string()))?;
        let g = r?;
        samples.push(got_at.saturating_duration_since(released_at).as_nanos() as u64);
        g.release().await?;
        if samples.len() >= 100_000 {
            break;
        }
    }
    for g in others {
        g.release().await?;
    }
    Ok(samples)
}

/// This process's resident memory in bytes (Linux only).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
