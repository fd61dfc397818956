//! What a run writes to its directory, and the shared clock its timestamps use.
//!
//! ```text
//! DIR/run.json            the run's settings (RunConfig)
//! DIR/workers/wNNN.jsonl  one worker's log: Start, Begin/End per section, Finish
//! DIR/workers/wNNN.err    its stderr (process workers)
//! DIR/counters/KEY.journal the fenced counter of one key (see counter.rs)
//! DIR/clocks/wNNN.faketime a worker's fake wall clock (fault `clock`; `host.faketime`: all's)
//! DIR/holds/wNNN          exists while a partitioned worker must stay in its section
//! DIR/holds/wNNN.held     the worker's answer: it is waiting in its section
//! DIR/faults.jsonl        the faults the orchestrator injected
//! DIR/exits.jsonl         how each worker ended
//! DIR/summary.json        the checker's summary
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Nanoseconds on CLOCK_MONOTONIC: one clock for every process on the host (Linux), so the
/// logs of different workers can be compared.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The stores the tool knows how to torture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Sqlite,
    Redis,
    /// Redis Cluster (`redis+cluster://`).
    Cluster,
    /// Redis Sentinel (`redis+sentinel://`).
    Sentinel,
    Redlock,
    Postgres,
    Mysql,
    Etcd,
    Dynamodb,
}

/// What the workers hold: a mutex, one permit of a semaphore, or a read-write lock's read or
/// write side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `Locks::lock`: every section writes the counter.
    #[default]
    Mutex,
    /// `Locks::semaphore(KEY, permits)`: up to N sections at once, none writes the counter.
    Semaphore,
    /// `Locks::read` (sections that only read) and `Locks::write` (sections that write the
    /// counter).
    Rwlock,
}

/// The settings of one run, written to `run.json` and read by workers and the checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub store: StoreKind,
    /// The store as shown to people (no password).
    pub describe: String,
    pub keys: Vec<String>,
    pub ttl_ms: u64,
    /// Bounds of the random work time inside a critical section.
    pub work_ms: (u64, u64),
    /// Workers start no section after this instant (`now_ns` clock).
    pub deadline_ns: Option<u64>,
    /// Sections per worker slot, when the run is counted in iterations.
    pub iterations: Option<u64>,
    pub seed: u64,
    pub procs: usize,
    /// The fault kinds enabled, by name.
    pub faults: Vec<String>,
    /// What the workers hold (absent in runs from before semaphores: a mutex).
    #[serde(default)]
    pub mode: Mode,
    /// The semaphore's permit count (`Mode::Semaphore`).
    #[serde(default)]
    pub permits: u32,
    /// The share of sections that read, in percent (`Mode::Rwlock`).
    #[serde(default)]
    pub readers_pct: u32,
}

/// How a section's lease ended at release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The store confirmed we still held it: the lease was ours from acquire to release.
    Ok,
    /// The store said we no longer held it.
    NotOwned,
    /// The release failed (store unreachable); whether we held it is unknown.
    Error(String),
}

/// What the protected resource (the counter) made of a section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Registered and committed: the counter counted it.
    Accepted,
    /// The counter had seen a fence at least as high (`highest`) when we registered.
    RejectedRegister { highest: u64 },
    /// Someone registered a higher fence after us: our commit was refused.
    RejectedCommit { highest: Option<u64> },
    /// Unfenced stores: the holder check right before commit found the lease gone.
    NotHolder,
    /// Unfenced stores: the holder check failed (store error): nothing committed.
    HolderUnknown(String),
    /// A permit holder or a reader: it writes nothing (the checker judges its overlaps
    /// with the other holders from the logs).
    NoWrite,
}

impl Outcome {
    pub fn rejected(&self) -> bool {
        matches!(
            self,
            Outcome::RejectedRegister { .. } | Outcome::RejectedCommit { .. }
        )
    }
}

/// One line of a worker's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Rec {
    Start {
        worker: u32,
        pid: u32,
        t: u64,
    },
    /// The lock is held: written right after `acquire` returned.
    Begin {
        seq: u64,
        key: String,
        owner: String,
        fence: Option<u64>,
        /// A reader of a read-write lock (`Mode::Rwlock`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shared: bool,
        /// Before `acquire` was called.
        t_start: u64,
        /// After it returned.
        t_acq: u64,
        /// How far the worker's wall clock was from the host's (fault `clock`), in ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skew_ms: Option<i64>,
    },
    /// The section is over: written after `release` returned.
    End {
        seq: u64,
        outcome: Outcome,
        /// Whether the guard said lost (`is_lost`) / expired (`is_expired`) just before commit.
        lost_at_commit: bool,
        expired_at_commit: bool,
        /// Right before `release` was called.
        t_rel: u64,
        release: Release,
    },
    AcquireError {
        key: String,
        t: u64,
        error: String,
    },
    Finish {
        t: u64,
        sections: u64,
    },
}

/// A fault the orchestrator injected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    /// The worker it targeted, if it targeted one.
    pub worker: Option<u32>,
    pub t_start: u64,
    pub t_end: u64,
    pub detail: String,
}

/// How a worker ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exit {
    pub worker: u32,
    pub pid: u32,
    pub how: ExitHow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitHow {
    Finished,
    /// Killed by the orchestrator's `kill` fault.
    KilledByUs,
    /// Anything else: a crash, an error exit, a hang the orchestrator had to end.
    Failed(String),
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn create(dir: &Path) -> Result<RunDir> {
        for sub in ["workers", "counters", "clocks", "holds"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(RunDir(dir.to_owned()))
    }

    pub fn config(&self) -> PathBuf {
        self.0.join("run.json")
    }
    pub fn worker_log(&self, id: u32) -> PathBuf {
        self.0.join("workers").join(format!("w{id:03}.jsonl"))
    }
    pub fn worker_err(&self, id: u32) -> PathBuf {
        self.0.join("workers").join(format!("w{id:03}.err"))
    }
    pub fn counter(&self, key: &str) -> PathBuf {
        self.0.join("counters").join(format!("{key}.journal"))
    }
    /// A worker's libfaketime file (`None`: the one every worker shares).
    pub fn clock(&self, id: Option<u32>) -> PathBuf {
        let name = id.map_or("host".to_owned(), |id| format!("w{id:03}"));
        self.0.join("clocks").join(format!("{name}.faketime"))
    }
    pub fn hold(&self, id: u32) -> PathBuf {
        self.0.join("holds").join(format!("w{id:03}"))
    }
    /// Written by a worker once it waits on its hold file, in its section.
    pub fn held(&self, id: u32) -> PathBuf {
        self.0.join("holds").join(format!("w{id:03}.held"))
    }
    pub fn faults(&self) -> PathBuf {
        self.0.join("faults.jsonl")
    }
    pub fn exits(&self) -> PathBuf {
        self.0.join("exits.jsonl")
    }

    pub fn read_config(&self) -> Result<RunConfig> {
        let text = std::fs::read_to_string(self.config())
            .with_context(|| format!("reading {}", self.config().display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.config().display()))
    }

    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        std::fs::write(self.config(), serde_json::to_string_pretty(config)?)
            .with_context(|| format!("writing {}", self.config().display()))
    }
}

/// An append-only JSON-lines file. Each record is one `write` of a whole line, so a process
/// killed at any moment leaves whole lines (at most the last one missing).
#[derive(Debug)]
pub struct Jsonl(File);

impl Jsonl {
    pub fn append(path: &Path) -> Result<Jsonl> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Jsonl(file))
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.0.write_all(line.as_bytes())?;
        Ok(())
    }
}

/// Reads every whole line of a JSON-lines file; a torn last line (a killed writer) is skipped.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    for (n, line) in complete.lines().enumerate() {
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: {line}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// The last whole record of a worker's log, read from its tail: tells whether the worker is
/// inside a critical section (`Begin`) right now.
pub fn last_record(path: &Path) -> Option<Rec> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let from = len.saturating_sub(4096);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let tail = String::from_utf8_lossy(&bytes);
    let complete = &tail[..tail.rfind('\n')?];
    let last = complete.rsplit('\n').next()?;
    serde_json::from_str(last).ok()
}
