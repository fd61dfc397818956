//! A worker: acquire → critical section → release, in a loop, on a few keys.
//!
//! Inside the section it registers with the key's counter, works for a random while (the
//! window faults aim at), and commits. Every step is logged with `now_ns` timestamps.
//! Process workers (`cadenas-torture worker`) and the memory store's thread workers run the
//! same loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use cadenas::{Error, Guard, Locks, Retry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::counter::{Commit, Counter, Register};
use crate::record::{now_ns, Jsonl, Mode, Outcome, Rec, Release, RunConfig, RunDir};

/// How long one `acquire` may wait when the run has no deadline.
const ACQUIRE_WAIT: Duration = Duration::from_secs(60);

/// How many ttls a worker of a run with a deadline waits for one key before it tries another.
/// On a store that judges leases by its clients' clocks (SQLite, DynamoDB), a holder killed
/// just before every worker's clock steps back keeps its lease for the step's length (10 s):
/// without a bound, every worker ends up waiting on that key and the run stalls (no section,
/// no fault, no skew logged) until its deadline.
const KEY_WAIT_TTLS: u32 = 4;

/// The longest a partitioned worker stays in its section waiting to be healed.
const HOLD_MAX: Duration = Duration::from_secs(60);

/// A kill switch for thread workers (process workers get SIGKILL instead).
#[derive(Debug, Default)]
pub struct Kill {
    flag: AtomicBool,
    notify: Notify,
}

impl Kill {
    pub fn fire(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
    fn fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// How a worker's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Finished,
    /// Killed mid-section: the guard was leaked, as a crashed process leaves its lease.
    Killed,
}

pub struct Worker<'a> {
    pub id: u32,
    pub seed: u64,
    /// Sections to run (`None`: until the run's deadline).
    pub iterations: Option<u64>,
    pub config: &'a RunConfig,
    pub dir: &'a RunDir,
    pub kill: Option<Arc<Kill>>,
    /// The host's wall clock minus `now_ns` (fault `clock`: the worker logs its skew).
    pub wall_offset_ms: Option<i64>,
    /// Whether the run has `partition` faults (which hold a worker in its section).
    pub partitionable: bool,
}

/// Connects to `url` with the run's settings, retrying while the store is down (a worker
/// respawned during a server restart) until the run's deadline or a minute has passed.
pub async fn connect(config: &RunConfig, url: &str) -> Result<Locks> {
    let give_up = config
        .deadline_ns
        .unwrap_or(0)
        .max(now_ns() + 60_000_000_000);
    loop {
        let built = Locks::builder()
            .ttl(Some(Duration::from_millis(config.ttl_ms)))
            .auto_extend(true)
            .connect(url)
            .await;
        match built {
            Ok(locks) => return Ok(locks),
            Err(e) if e.is_retryable() && now_ns() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e).context("connecting to the store"),
        }
    }
}

impl Worker<'_> {
    pub async fn run(self, locks: &Locks) -> Result<End> {
        let mut log = Jsonl::append(&self.dir.worker_log(self.id))?;
        log.write(&Rec::Start {
            worker: self.id,
            pid: std::process::id(),
            t: now_ns(),
        })?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut counters: HashMap<String, Arc<Mutex<Counter>>> = HashMap::new();
        let mut seq = 0;
        loop {
            if self.kill.as_ref().is_some_and(|k| k.fired()) {
                return Ok(End::Killed);
            }
            if self.iterations.is_some_and(|n| seq >= n) {
                break;
            }
            let wait = match self.config.deadline_ns {
                Some(d) if now_ns() >= d => break,
                Some(d) => Duration::from_nanos(d - now_ns())
                    .min(Duration::from_millis(self.config.ttl_ms) * KEY_WAIT_TTLS),
                None => ACQUIRE_WAIT,
            };
            let key = &self.config.keys[rng.random_range(0..self.config.keys.len())];
            let retry = Retry::default()
                .delay(Duration::from_millis(25))
                .jitter(Duration::from_millis(25))
                .timeout(wait);
            let (lock, shared) = match self.config.mode {
                Mode::Mutex => (locks.lock(key), false),
                Mode::Semaphore => (locks.semaphore(key, self.config.permits), false),
                Mode::Rwlock if rng.random_range(0..100) < self.config.readers_pct => {
                    (locks.read(key), true)
                }
                Mode::Rwlock => (locks.write(key), false),
            };
            // Mutexes and writers write the counter; permit holders and readers do not.
            let writes = !shared && self.config.mode != Mode::Semaphore;
            let t_start = now_ns();
            let guard = match lock.acquire_with(&retry).await {
                Ok(g) => g,
                // The deadline (checked above) or this key's bound: try another key.
                Err(Error::Timeout { .. }) if self.config.deadline_ns.is_some() => continue,
                Err(e) => {
                    log.write(&Rec::AcquireError {
                        key: key.clone(),
                        t: now_ns(),
                        error: e.to_string(),
                    })?;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(20..60))).await;
                    continue;
                }
            };
            seq += 1;
            log.write(&Rec::Begin {
                seq,
                key: key.clone(),
                owner: guard.owner().to_owned(),
                fence: guard.fence(),
                shared,
                t_start,
                t_acq: now_ns(),
                skew_ms: self.wall_offset_ms.map(crate::clock::wall_skew_ms),
            })?;
            let work = Duration::from_millis(
                rng.random_range(self.config.work_ms.0..=self.config.work_ms.1),
            );
            let section = if writes {
                let counter = match counters.get(key) {
                    Some(c) => c.clone(),
                    None => {
                        let c =
                            Arc::new(Mutex::new(Counter::open(&self.dir.counter(key), self.id)?));
                        counters.insert(key.clone(), c.clone());
                        c
                    }
                };
                self.section(&guard, counter, work).await?
            } else {
                self.work(work)
                    .await?
                    .then(|| Section::new(Outcome::NoWrite, &guard))
            };
            let Some(section) = section else {
                guard.leak();
                return Ok(End::Killed);
            };
            let t_rel = now_ns();
            let release = match guard.release().await {
                Ok(()) => Release::Ok,
                Err(Error::NotOwned { .. }) => Release::NotOwned,
                Err(e) => Release::Error(e.to_string()),
            };
            log.write(&Rec::End {
                seq,
                outcome: section.outcome,
                lost_at_commit: section.lost,
                expired_at_commit: section.expired,
                t_rel,
                release,
            })?;
        }
        log.write(&Rec::Finish {
            t: now_ns(),
            sections: seq,
        })?;
        Ok(End::Finished)
    }

    /// Register, work, commit. `None` when a thread worker was killed mid-section.
    async fn section(
        &self,
        guard: &Guard,
        counter: Arc<Mutex<Counter>>,
        work: Duration,
    ) -> Result<Option<Section>> {
        let owner = guard.owner().to_owned();
        let fence = guard.fence();
        let read = {
            let (counter, owner) = (counter.clone(), owner.clone());
            blocking(move || counter.lock().unwrap().register(&owner, fence)).await?
        };
        let read = match read {
            Register::Ok(v) => v,
            Register::Rejected { highest } => {
                return Ok(Some(Section::new(
                    Outcome::RejectedRegister { highest },
                    guard,
                )))
            }
        };
        if !self.work(work).await? {
            return Ok(None);
        }
        let (expired, lost) = expiry(guard);
        if fence.is_none() {
            // No fence for the resource to check (a store without fences; the checker
            // reports such a section): make sure we still hold the lease right before
            // writing (a pause after this check can still overlap).
            if lost || expired {
                return Ok(Some(Section::new(Outcome::NotHolder, guard)));
            }
            match guard.extend(None).await {
                Ok(()) => {}
                Err(Error::NotOwned { .. }) | Err(Error::Lost { .. }) => {
                    return Ok(Some(Section::new(Outcome::NotHolder, guard)))
                }
                Err(e) => {
                    return Ok(Some(Section::new(
                        Outcome::HolderUnknown(e.to_string()),
                        guard,
                    )))
                }
            }
        }
        let committed =
            blocking(move || counter.lock().unwrap().commit(&owner, fence, read)).await?;
        let outcome = match committed {
            Commit::Ok => Outcome::Accepted,
            Commit::Rejected { highest } => Outcome::RejectedCommit { highest },
        };
        Ok(Some(Section {
            outcome,
            lost,
            expired,
        }))
    }
}

impl Worker<'_> {
    /// The work inside a section, and the wait of a partitioned worker in it. `false` when a
    /// thread worker was killed meanwhile.
    async fn work(&self, work: Duration) -> Result<bool> {
        match &self.kill {
            Some(kill) => tokio::select! {
                _ = tokio::time::sleep(work) => {}
                _ = kill.notify.notified() => return Ok(false),
            },
            None => tokio::time::sleep(work).await,
        }
        if self.partitionable {
            // Cut off by a `partition`: stay in the section until healed, then write late.
            let give_up = now_ns() + HOLD_MAX.as_nanos() as u64;
            if self.dir.hold(self.id).exists() {
                std::fs::write(self.dir.held(self.id), b"")?;
            }
            while self.dir.hold(self.id).exists() && now_ns() < give_up {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(true)
    }
}

/// Refuses a semaphore or read-write run on a store that does not declare the primitive
/// (`Capabilities::semaphores`, `Capabilities::shared_locks`).
pub fn check_mode(config: &RunConfig, locks: &Locks) -> Result<()> {
    let caps = locks.store().capabilities();
    let (declared, what) = match config.mode {
        Mode::Mutex => return Ok(()),
        Mode::Semaphore => (caps.semaphores, "semaphores (Capabilities::semaphores)"),
        Mode::Rwlock => (
            caps.shared_locks,
            "read-write locks (Capabilities::shared_locks)",
        ),
    };
    if !declared {
        anyhow::bail!(
            "{} does not declare {what}: run --mode {} on a store that holds them, or --mode mutex",
            config.describe,
            match config.mode {
                Mode::Semaphore => "semaphore",
                _ => "rwlock",
            }
        );
    }
    Ok(())
}

struct Section {
    outcome: Outcome,
    lost: bool,
    expired: bool,
}

impl Section {
    fn new(outcome: Outcome, guard: &Guard) -> Section {
        let (expired, lost) = expiry(guard);
        Section {
            outcome,
            lost,
            expired,
        }
    }
}

/// `is_expired` then `is_lost`, with no await between (nothing can extend the lease in
/// between): a guard expired by its own clock must say lost too, which the checker checks.
fn expiry(guard: &Guard) -> (bool, bool) {
    let expired = guard.is_expired();
    (expired, guard.lost_signal().is_lost())
}

/// Counter steps may wait on the file lock of a stopped worker: off the runtime's thread, so
/// our watchdog keeps running meanwhile.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a counter step panicked")?
}
