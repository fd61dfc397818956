//! The `cadenas` command line: a distributed `flock(1)` over the stores of the
//! [`cadenas`] library. Install it with `cargo install cadenas-cli`; see `cadenas --help`.
//!
//! `main.rs` only calls [`main`]; everything is here so it can be tested. The crate's
//! features choose the stores the binary opens (all by default).
//!
//! Exit codes: `0` success (`status`: locked; `leader`: someone leads), `1` failure (`status`:
//! free; `leader`: no one leads; `release`/`extend`
//! of a lock no longer held), `2` usage or configuration error, `69` store unreachable,
//! `75` not acquired in time (`--conflict-exit-code`), `76` lock lost while the command ran
//! (it expired, was force-released, or another `--force` took it over); `2` too for
//! `--force` on a store that cannot take a lock over in one atomic step (Redlock);
//! otherwise `exec` exits with the command's status (128 + signal if it was killed). `2`
//! also for `--permits` or `--shared` on a store that holds no semaphores or read-write locks.

#![forbid(unsafe_code)]

pub mod bench;
mod exec;
mod force;
mod hold;
mod leader;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use hold::{prepare, HoldArgs};

use cadenas::{Error, Locks};

/// Exit code: not acquired in time.
pub const EXIT_CONFLICT: u8 = 75;
/// Exit code: the lock was lost while the command ran.
pub const EXIT_LOST: u8 = 76;
/// Exit code: the store could not be reached.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "cadenas",
    version,
    about = "Distributed locks from the shell: a flock(1) for many hosts",
    long_about = "Distributed locks from the shell: a flock(1) for many hosts.\n\n\
        The store is --store, else $CADENAS_STORE, else a SQLite file under \
        $XDG_STATE_HOME/cadenas (~/.local/state/cadenas).",
    after_help = "Exit codes: 0 ok, 1 failed / free / no leader, 2 usage (also --force on a store \
        that cannot take a lock over in one step, --permits or --shared on a store without \
        them), 69 store unreachable, \
        75 not acquired in time, 76 lock lost while CMD ran (expired, released or taken over)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct StoreArg {
    /// Store URL (memory:, sqlite://PATH, redis://…, postgres://…); options such as
    /// ?namespace=app ride in the query
    #[arg(
        long,
        env = "CADENAS_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    store: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold KEY while CMD runs; extend it automatically; release when CMD ends (--permits N:
    /// one of N permits; --shared: as a reader; --force: take KEY over even if held)
    Exec {
        #[command(flatten)]
        hold: HoldArgs,
        /// After the lock is lost, how long CMD gets between SIGTERM and SIGKILL
        #[arg(long, default_value = "10s", value_name = "DUR")]
        kill_after: String,
        /// How often to renew the lease while CMD runs (shorter than the ttl); default: every
        /// third of the ttl
        #[arg(long, value_name = "DUR")]
        extend_every: Option<String>,
        /// The lock's name
        key: String,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Take KEY and print a token for `release` and `extend` (--permits N: one of N permits;
    /// --shared: as a reader; --force: even if held)
    Acquire {
        #[command(flatten)]
        hold: HoldArgs,
        /// The lock's name
        key: String,
    },
    /// Release the holding a token holds (or, with --force, KEY whoever holds it: every
    /// reader and every permit too)
    Release {
        #[command(flatten)]
        store: StoreArg,
        /// Remove the lock whoever holds it (all its holders); the argument is then a KEY
        #[arg(long)]
        force: bool,
        /// The token printed by `acquire` (or the KEY with --force)
        token: String,
    },
    /// Renew the lease of the holding a token holds (a permit or reader: that holder's own)
    Extend {
        #[command(flatten)]
        store: StoreArg,
        /// The new lease length, from now (default: the ttl it was acquired with)
        #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
        ttl: Option<String>,
        /// The token printed by `acquire`
        token: String,
    },
    /// Show who holds KEY (every reader or permit holder); exit 0 if locked, 1 if free
    Status {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// The lock's name
        key: String,
    },
    /// Show who leads election NAME (the holder of lock NAME: candidate, term, value, lease);
    /// exit 0 if someone leads, 1 if no one. --watch: a line per change until interrupted
    Leader {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (with --watch: one object per line)
        #[arg(long)]
        json: bool,
        /// Print the leader, then a line per change (elected, proclaimed, vacant) until
        /// SIGINT or SIGTERM
        #[arg(long)]
        watch: bool,
        /// With --watch, the longest between two looks at the store when it sends no
        /// notification
        #[arg(long, default_value = "1s", value_name = "DUR")]
        poll_interval: String,
        /// The election's name
        name: String,
    },
    /// Measure the store: cycles/s uncontended and contended, hand-off latency
    Bench {
        #[command(flatten)]
        store: StoreArg,
        /// Concurrent tasks
        #[arg(long, default_value_t = 1)]
        tasks: usize,
        /// Distinct keys in the uncontended phase
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Total run time, split over the three phases
        #[arg(long, default_value = "3s", value_name = "DUR")]
        duration: String,
        /// Other locks to take first and hold during the run (how the store copes with many
        /// live locks)
        #[arg(long, default_value_t = 0, value_name = "N")]
        held: usize,
        /// The hand-off waiter uses a store connection of its own, as a waiter in another
        /// process would (stores shared between processes only; SQLite and DynamoDB share
        /// notification among a process's stores)
        #[arg(long)]
        handoff_across: bool,
        /// Measure permits of a semaphore of N instead of exclusive locks
        #[arg(long, value_name = "N", value_parser = hold::parse_permits, conflicts_with = "shared")]
        permits: Option<u32>,
        /// Measure readers of a read-write lock instead of exclusive locks (in the hand-off,
        /// a writer holds the key and the waiter is a reader)
        #[arg(long)]
        shared: bool,
        /// Worker threads of the async runtime (default: one per CPU; 1 = single-threaded)
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// List held locks whose key starts with PREFIX, with every holder
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Key prefix (default: all)
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CADENAS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // The benchmark runs like a service would, on every CPU; the other commands need one thread.
    let threads = match &cli.command {
        Command::Bench { threads, .. } => threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        _ => 1,
    };
    let mut builder = if threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cadenas: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> u8 {
    let (result, conflict) = dispatch(cli).await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cadenas: {e}");
            exit_code(&e, conflict)
        }
    }
}

/// Runs the command; returns its result and the exit code it uses for "not acquired in time".
async fn dispatch(cli: Cli) -> (Result<u8, Error>, u8) {
    let mut conflict = EXIT_CONFLICT;
    let result = match cli.command {
        Command::Exec {
            hold,
            kill_after,
            extend_every,
            key,
            command,
        } => {
            conflict = hold.conflict_exit_code;
            let every = extend_every.as_deref();
            exec::run(hold, &kill_after, every, &key, &command).await
        }
        Command::Acquire { hold, key } => {
            conflict = hold.conflict_exit_code;
            acquire(hold, &key).await
        }
        Command::Release {
            store,
            force,
            token,
        } => release(store, force, token).await,
        Command::Extend { store, ttl, token } => extend(store, ttl, token).await,
        Command::Status { store, json, key } => output::status(open(store).await, json, &key).await,
        Command::List {
            store,
            json,
            prefix,
        } => output::list(open(store).await, json, &prefix).await,
        Command::Leader {
            store,
            json,
            watch,
            poll_interval,
            name,
        } => leader::run(open(store).await, json, watch, &poll_interval, &name).await,
        Command::Bench {
            store,
            tasks,
            keys,
            duration,
            held,
            handoff_across,
            permits,
            shared,
            threads: _,
            json,
        } => {
            let opts = || -> Result<bench::BenchOptions, Error> {
                Ok(bench::BenchOptions {
                    store: store_url(store)?,
                    tasks,
                    keys,
                    duration: cadenas::parse_duration("duration", &duration)?,
                    held,
                    handoff_across,
                    kind: hold::kind_of(permits, shared),
                })
            };
            match opts() {
                Ok(opts) => bench_command(&opts, json).await,
                Err(e) => Err(e),
            }
        }
    };
    (result, conflict)
}

/// The fuzz target `cli_args` (built with `--cfg fuzzing`): parses `args` (program name
/// first) as `cadenas` does and runs the command against a fresh memory store, except that
/// `exec` is run as `acquire` once its own flags are checked (no command is started),
/// `bench` only checks its flags and `leader --watch` looks once. Returns the exit code and
/// the error message, if any.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_run<I, T>(args: I) -> (u8, String)
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return (if e.use_stderr() { EXIT_USAGE } else { 0 }, e.to_string()),
    };
    let memory = |s: &mut StoreArg| {
        if s.store.as_deref().is_none_or(|u| u.trim().is_empty()) {
            s.store = Some("memory:".into());
        }
    };
    match &mut cli.command {
        Command::Exec {
            hold, kill_after, ..
        } => {
            if let Err(e) = cadenas::parse_duration("kill-after", kill_after) {
                return (exit_code(&e, hold.conflict_exit_code), e.to_string());
            }
        }
        // Watching never ends: the fuzz target looks once.
        Command::Leader { watch, .. } => *watch = false,
        Command::Bench { duration, .. } => {
            return match cadenas::parse_duration("duration", duration) {
                Ok(_) => (0, String::new()),
                Err(e) => (exit_code(&e, EXIT_CONFLICT), e.to_string()),
            };
        }
        _ => {}
    }
    if let Command::Exec { hold, key, .. } = cli.command {
        cli.command = Command::Acquire { hold, key };
    }
    match &mut cli.command {
        Command::Acquire { hold, .. } => memory(&mut hold.store),
        Command::Release { store, .. }
        | Command::Extend { store, .. }
        | Command::Status { store, .. }
        | Command::Leader { store, .. }
        | Command::List { store, .. } => memory(store),
        Command::Exec { .. } | Command::Bench { .. } => unreachable!("handled above"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let (result, conflict) = runtime.block_on(dispatch(cli));
    match result {
        Ok(code) => (code, String::new()),
        Err(e) => (exit_code(&e, conflict), e.to_string()),
    }
}

/// `Error::InvalidInput` about `what`.
fn invalid(what: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidInput {
        what,
        message: message.into(),
    }
}

/// The exit code for an error.
fn exit_code(e: &Error, conflict: u8) -> u8 {
    match e {
        Error::Timeout { .. } | Error::AlreadyLocked { .. } => conflict,
        Error::Lost { .. } => EXIT_LOST,
        Error::InvalidInput { .. } | Error::Config { .. } | Error::Unsupported { .. } => EXIT_USAGE,
        e if e.is_unavailable() => EXIT_UNAVAILABLE,
        _ => 1,
    }
}

/// The store URL: `--store`, `$CADENAS_STORE` (through clap), else the SQLite file.
fn store_url(arg: StoreArg) -> Result<String, Error> {
    match arg.store {
        Some(url) if !url.trim().is_empty() => Ok(url),
        _ => default_store_url(),
    }
}

/// `sqlite://$XDG_STATE_HOME/cadenas/locks.db`, else under `~/.local/state`.
pub fn default_store_url() -> Result<String, Error> {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .ok_or_else(|| Error::Config {
            message: "neither XDG_STATE_HOME nor HOME is set; pass --store or set CADENAS_STORE"
                .into(),
        })?
        .join("cadenas");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Config {
        message: format!(
            "cannot create the state directory {}: {e}; pass --store or set CADENAS_STORE",
            dir.display()
        ),
    })?;
    Ok(format!("sqlite://{}", dir.join("locks.db").display()))
}

async fn open(store: StoreArg) -> Result<Locks, Error> {
    Locks::connect(&store_url(store)?).await
}

async fn acquire(hold: HoldArgs, key: &str) -> Result<u8, Error> {
    let force = hold.force;
    let (lock, retry) = prepare(hold, key).await?;
    let guard = force::take(&lock, &retry, force).await?;
    println!("{}", guard.serialize());
    Ok(0)
}

async fn release(store: StoreArg, force: bool, arg: String) -> Result<u8, Error> {
    let locks = open(store).await?;
    if force {
        let removed = locks.lock(&arg).force_release().await?;
        if !removed {
            eprintln!("cadenas: lock '{arg}' on {} was not held", locks.describe());
        }
        return Ok(0);
    }
    let guard = locks.restore(&arg).await?;
    guard.release().await?;
    Ok(0)
}

async fn extend(store: StoreArg, ttl: Option<String>, token: String) -> Result<u8, Error> {
    let ttl = ttl
        .map(|t| cadenas::parse_duration("ttl", &t))
        .transpose()?;
    let locks = open(store).await?;
    let guard = locks.restore(&token).await?;
    guard.extend(ttl).await?;
    guard.leak();
    Ok(0)
}

async fn bench_command(opts: &bench::BenchOptions, json: bool) -> Result<u8, Error> {
    let r = bench::run(opts).await?;
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!("store            {}", r.store);
        println!(
            "tasks            {}   keys {}   threads {}",
            r.tasks, r.keys, r.threads
        );
        match r.permits {
            Some(n) => println!("locks            permits of a semaphore of {n}"),
            None => println!("locks            {}", r.kind),
        }
        if r.held > 0 {
            print!(
                "held             {} locks, taken in {:.1} s",
                r.held, r.held_fill_secs
            );
            if let Some(b) = r.held_rss_bytes_per_lock {
                print!(", {b:.0} bytes of this process's memory each");
            }
            println!();
        }
        println!(
            "uncontended      {:.0} cycles/s",
            r.uncontended_cycles_per_sec
        );
        println!(
            "contended        {:.0} cycles/s",
            r.contended_cycles_per_sec
        );
        println!(
            "hand-off{}p50 {:.0} µs  p95 {:.0} µs  p99 {:.0} µs  max {:.0} µs  ({} samples)",
            if r.handoff_across {
                " across  "
            } else {
                "         "
            },
            r.handoff_p50_us,
            r.handoff_p95_us,
            r.handoff_p99_us,
            r.handoff_max_us,
            r.handoff_samples
        );
    }
    Ok(0)
}
