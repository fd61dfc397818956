//! The command line: `run`, `check`, and the hidden `worker`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::checker::{self, Summary};
use crate::env::StoreEnv;
use crate::orchestrator::Orchestrator;
use crate::record::{now_ns, Mode, RunConfig, RunDir};
use crate::worker::{self, Worker};

/// Exit code when the checker found a violation.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code for bad usage or a run that could not be set up.
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "cadenas-torture",
    about = "Runs cadenas locks under fault injection in many processes and proves that two holders never overlapped"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Torture one store, then check the run.
    Run(RunArgs),
    /// Check a finished run's directory again.
    Check {
        dir: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Torture stores until each has done a number of accepted sections with all its faults
    /// on; writes a report (Markdown and JSON).
    Long(crate::long::LongArgs),
    /// One worker process (started by `run`).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        iterations: Option<u64>,
    },
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// memory, sqlite, redis (own server), cluster (own 3-master Redis Cluster), sentinel
    /// (own primary, 2 replicas and 3 sentinels), redlock (5 own nodes), etcd (3 own
    /// members), postgres, mysql (the local servers), dynamodb (own dynalite), dynamodb-moto
    /// (own moto server), or a store URL.
    #[arg(long)]
    pub store: String,
    /// Worker processes (threads for memory).
    #[arg(long, default_value_t = 8)]
    pub procs: usize,
    /// Sections per worker (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    pub iterations: Option<u64>,
    /// How long workers start new sections.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How many keys the workers share.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Lease length.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// kill, stop, restart, connkill, drop, delay, clock (libfaketime), partition (network
    /// namespaces: root) as a comma list, all (every one the store takes) or none.
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Mean time between faults (default: half the ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fault_every: Option<Duration>,
    /// Work time inside a section, drawn from MIN..=MAX milliseconds.
    #[arg(long, default_value = "2..20")]
    pub work_ms: String,
    /// Seed of the fault schedule and of the workers' choices (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the logs go (default: a temporary directory, kept when a violation is found).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// What the workers hold: mutex (every section writes the counter), semaphore (one of
    /// --permits permits: at most that many in the section at once, and that many reached)
    /// or rwlock (readers, which overlap, and writers, which overlap nobody and write the
    /// counter). Semaphore and rwlock runs need a store that declares the primitive.
    #[arg(long, value_enum, default_value_t = Mode::Mutex)]
    pub mode: Mode,
    /// The semaphore's permit count (--mode semaphore): below --procs, so workers contend.
    #[arg(long, default_value_t = 3)]
    pub permits: u32,
    /// The share of sections that read, in percent (--mode rwlock).
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u32).range(1..100))]
    pub readers_pct: u32,
}

pub fn main() -> u8 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => runtime(true).and_then(|rt| rt.block_on(run(args))),
        Command::Long(args) => runtime(true).and_then(|rt| rt.block_on(crate::long::long(args))),
        Command::Check { dir, json } => checker::check(&RunDir(dir)).map(|s| report(&s, json)),
        Command::Worker {
            dir,
            id,
            seed,
            iterations,
        } => runtime(false).and_then(|rt| rt.block_on(run_worker(dir, id, seed, iterations))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cadenas-torture: {e:#}");
            EXIT_ERROR
        }
    }
}

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    Ok(b.enable_all().build()?)
}

fn report(summary: &Summary, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("a summary serializes")
        );
    } else {
        summary.print();
    }
    if summary.violations > 0 {
        EXIT_VIOLATION
    } else {
        0
    }
}

fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text
        .split_once("..")
        .with_context(|| format!("--work-ms {text}: write MIN..MAX, e.g. 2..20"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a > b {
        bail!("--work-ms {text}: MIN is above MAX");
    }
    Ok((a, b))
}

async fn run(args: RunArgs) -> Result<u8> {
    let json = args.json;
    let (summary, kept) = run_once(args).await?;
    let code = report(&summary, json);
    if let Some(dir) = kept {
        eprintln!("cadenas-torture: logs kept in {}", dir.display());
    }
    Ok(code)
}

/// One run, checked: its summary, and the temporary directory kept when it found a
/// violation.
pub async fn run_once(args: RunArgs) -> Result<(Summary, Option<PathBuf>)> {
    if args.procs == 0 || args.keys == 0 {
        bail!("--procs and --keys must be at least 1");
    }
    if args.mode == Mode::Semaphore && (args.permits == 0 || args.permits as usize >= args.procs) {
        bail!(
            "--permits {} with --procs {}: a semaphore run needs 1 <= permits < procs, so that \
             its workers contend for the permits",
            args.permits,
            args.procs
        );
    }
    if args.mode == Mode::Rwlock && args.procs < 2 {
        bail!("--mode rwlock needs --procs 2 or more: readers must be able to overlap");
    }
    if args.ttl < Duration::from_millis(100) {
        bail!("--ttl must be at least 100ms: shorter leases expire under normal scheduling delays");
    }
    let own_servers = matches!(
        args.store.as_str(),
        "redis" | "cluster" | "sentinel" | "redlock" | "etcd"
    );
    let kind_probe = StoreEnv::kind_of(&args.store)?;
    let faults = crate::faults::parse(&args.faults, kind_probe, own_servers)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let (dir, temp) = match &args.dir {
        Some(d) => (RunDir::create(d)?, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cadenas-torture-")
                .tempdir()?;
            (RunDir::create(t.path())?, Some(t))
        }
    };
    let tag = format!("{:08x}", rand::random::<u32>());
    let env = StoreEnv::setup(&args.store, &dir.0, &faults, &tag).await?;
    let config = RunConfig {
        store: env.kind,
        describe: env.describe.clone(),
        keys: (0..args.keys).map(|i| format!("k{i}")).collect(),
        ttl_ms: args.ttl.as_millis() as u64,
        work_ms: parse_range(&args.work_ms)?,
        deadline_ns: args
            .iterations
            .is_none()
            .then(|| now_ns() + args.duration.as_nanos() as u64),
        iterations: args.iterations,
        seed,
        procs: args.procs,
        faults: faults.iter().map(|f| f.name().to_owned()).collect(),
        mode: args.mode,
        permits: if args.mode == Mode::Semaphore {
            args.permits
        } else {
            0
        },
        readers_pct: if args.mode == Mode::Rwlock {
            args.readers_pct
        } else {
            0
        },
    };
    let fault_every = args.fault_every.unwrap_or(args.ttl / 2);
    let mode = match args.mode {
        Mode::Mutex => "mutex".to_owned(),
        Mode::Semaphore => format!("semaphore of {} permits", args.permits),
        Mode::Rwlock => format!("rwlock, {}% readers", args.readers_pct),
    };
    eprintln!(
        "cadenas-torture: {} ({mode}) with {} workers, faults [{}], seed {seed}, logs in {}",
        env.describe,
        args.procs,
        config.faults.join(","),
        dir.0.display()
    );
    Orchestrator::new(env, config, dir.clone(), faults, fault_every)?
        .run()
        .await?;
    let summary = checker::check(&dir)?;
    std::fs::write(
        dir.0.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let kept = temp
        .filter(|_| summary.violations > 0)
        .map(tempfile::TempDir::keep);
    Ok((summary, kept))
}

async fn run_worker(dir: PathBuf, id: u32, seed: u64, iterations: Option<u64>) -> Result<u8> {
    let dir = RunDir(dir);
    let config = dir.read_config()?;
    let url = std::env::var("CADENAS_TORTURE_URL")
        .context("CADENAS_TORTURE_URL is not set (workers are started by `run`)")?;
    let locks = worker::connect(&config, &url).await?;
    Worker {
        id,
        seed,
        iterations,
        config: &config,
        dir: &dir,
        kill: None,
        wall_offset_ms: std::env::var("CADENAS_TORTURE_WALL_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok()),
        partitionable: config.faults.iter().any(|f| f == "partition"),
    }
    .run(&locks)
    .await?;
    Ok(0)
}
