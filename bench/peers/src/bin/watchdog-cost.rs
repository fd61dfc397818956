//! What the watchdog costs: holds many locks with `auto_extend` and counts the extends the
//! store receives and the CPU time this process uses while it holds them.
//!
//! ```text
//! cargo run --release -p cadenas-peers --bin watchdog-cost -- redis://127.0.0.1:6379 10000 30s 30s
//! cargo run --release -p cadenas-peers --bin watchdog-cost -- memory: 10000 30s 30s
//! ```
//!
//! Arguments: store URL (default `memory:`), number of locks (default 10000), ttl (default
//! 30s), how long to measure once every lock is held (default 30s). Keys live under a random
//! namespace and are released at the end. The watchdog extends each lock every ttl/3 plus a
//! random tenth of that, so the expected rate is about `locks / (1.05 × ttl / 3)` extends per
//! second: about 950/s for 10,000 locks at 30 s.
//!
//! The figures it measured are in BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cadenas::store::{Acquire, AcquireRequest, Capabilities, Lease, LockInfo, Subscription};
use cadenas::{Locks, Store, StoreError};

/// A store that counts the extends passing through to the real one.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    extends: AtomicU64,
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, r: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        self.inner.try_acquire(r).await
    }
    // Delegated too: the capabilities above are the inner store's.
    async fn take_over(&self, r: AcquireRequest<'_>) -> Result<cadenas::TakeOver, StoreError> {
        self.inner.take_over(r).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.inner.release(key, owner).await
    }
    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        self.extends.fetch_add(1, Ordering::Relaxed);
        self.inner.extend(key, owner, ttl).await
    }
    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.set_metadata(key, owner, metadata).await
    }
    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.force_release(key).await
    }
    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inner.inspect(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        self.inner.subscribe(key).await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

/// User + system CPU time of this process, from `/proc/self/stat` (Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 per second on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

fn arg(n: usize, default: &str) -> String {
    std::env::args()
        .nth(n)
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = arg(1, "memory:");
    let count: usize = arg(2, "10000").parse()?;
    let ttl = cadenas::parse_duration("ttl", &arg(3, "30s"))?;
    let window = cadenas::parse_duration("duration", &arg(4, "30s"))?;

    let store = Locks::connect(&url).await?.store().clone();
    let counting = Arc::new(Counting {
        inner: store,
        extends: AtomicU64::new(0),
    });
    let namespace = format!("cadenas-wdcost-{}", &cadenas::new_owner()[..8]);
    let locks = Locks::builder()
        .namespace(namespace.clone())
        .ttl(Some(ttl))
        .auto_extend(true)
        .build_arc(counting.clone())?;

    let started = Instant::now();
    let mut guards = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let batch = chunk.iter().map(|i| {
            let lock = locks.lock(&format!("k{i}"));
            async move { lock.try_acquire().await }
        });
        for g in futures_util::future::join_all(batch).await {
            guards.push(g?);
        }
    }
    println!(
        "store {} ({namespace}): {count} locks held with ttl {} in {:.2?}",
        locks.describe(),
        cadenas::format_duration(ttl),
        started.elapsed()
    );

    let (e0, c0, t0) = (
        counting.extends.load(Ordering::Relaxed),
        cpu_time(),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (e1, c1, elapsed) = (
        counting.extends.load(Ordering::Relaxed),
        cpu_time(),
        t0.elapsed(),
    );
    let extends = e1 - e0;
    let rate = extends as f64 / elapsed.as_secs_f64();
    let expected = count as f64 / (ttl.as_secs_f64() / 3.0);
    println!("extends: {extends} in {elapsed:.2?} = {rate:.0}/s (ttl/3 cadence: {expected:.0}/s)");
    if let (Some(c0), Some(c1)) = (c0, c1) {
        let cpu = c1.saturating_sub(c0);
        println!(
            "cpu: {cpu:.2?} user+system = {:.2}% of one core; {:.1} µs per extend",
            100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
            if extends > 0 {
                cpu.as_secs_f64() * 1e6 / extends as f64
            } else {
                0.0
            }
        );
    }
    let lost = guards.iter().filter(|g| g.is_expired()).count();
    println!("leases lost during the run: {lost}");

    let released = Instant::now();
    let batch = guards.into_iter().map(|g| g.release());
    let failed = futures_util::future::join_all(batch)
        .await
        .into_iter()
        .filter(Result::is_err)
        .count();
    println!(
        "released in {:.2?} ({failed} failed); left under the namespace: {}",
        released.elapsed(),
        locks.list("").await?.len()
    );
    locks.disconnect().await?;
    if url.starts_with("redis://") {
        remove_redis_keys(&url, &namespace).await?;
    }
    Ok(())
}

/// Deletes the fence counters (kept forever by design) under the run's namespace.
async fn remove_redis_keys(url: &str, namespace: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let pattern = format!("*{namespace}*");
    let (mut cursor, mut removed) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            removed += keys.len();
            let () = redis::cmd("DEL").arg(&keys).query_async(&mut con).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    println!("removed {removed} Redis keys of the run");
    Ok(())
}
