//! `long`: the long run. Tortures each store in rounds of `run` (all of the store's faults
//! on, holding what `--mode` says) until it has done `--target` accepted sections (sections,
//! for a semaphore or a read-write lock), and writes what the rounds add up to:
//! `DIR/report.md` (one table row per store), `DIR/report.json`, and `DIR/STORE.json` as each
//! store finishes. A round's logs are deleted when it found nothing, kept otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checker::Summary;
use crate::cli::{RunArgs, EXIT_VIOLATION};
use crate::record::Mode;

/// Every store the tool runs itself or finds locally.
const STORES: [&str; 10] = [
    "memory", "sqlite", "redis", "cluster", "sentinel", "redlock", "postgres", "mysql", "etcd",
    "dynamodb",
];

#[derive(clap::Args)]
pub struct LongArgs {
    /// The stores (default: memory sqlite redis cluster sentinel redlock postgres mysql etcd
    /// dynamodb); names
    /// or URLs as for `run --store`.
    stores: Vec<String>,
    /// Sections to reach per store: accepted critical sections (the counter's writes) of a
    /// mutex; with --mode semaphore or rwlock, every section (a permit's, a reader's or a
    /// writer's: each is checked against the others by the logs).
    #[arg(long, default_value_t = 100_000)]
    target: u64,
    /// Length of one round (one `run`, checked on its own).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    round: Duration,
    /// Give up on a store after this long (its row then says so).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    max_duration: Duration,
    /// Worker processes per round.
    #[arg(long, default_value_t = 16)]
    procs: usize,
    /// Keys the workers share: about twice the workers keeps them busy and contending.
    #[arg(long, default_value_t = 32)]
    keys: usize,
    /// Lease length.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Work time inside a section, MIN..MAX milliseconds.
    #[arg(long, default_value = "0..2")]
    work_ms: String,
    /// What the workers hold, as for `run --mode`: mutex, semaphore or rwlock. Semaphore and
    /// rwlock rounds need stores that declare the primitive.
    #[arg(long, value_enum, default_value_t = Mode::Mutex)]
    mode: Mode,
    /// The semaphore's permit count (--mode semaphore): below --procs, so workers contend.
    #[arg(long, default_value_t = 3)]
    permits: u32,
    /// The share of sections that read, in percent (--mode rwlock).
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u32).range(1..100))]
    readers_pct: u32,
    /// Where the report goes.
    #[arg(long, default_value = "torture-report")]
    out: PathBuf,
}

impl LongArgs {
    /// How far a store's rounds got toward `target`.
    fn progress(&self, r: &StoreReport) -> u64 {
        match self.mode {
            Mode::Mutex => r.accepted,
            Mode::Semaphore | Mode::Rwlock => r.sections,
        }
    }

    /// What the workers hold, for the report.
    fn holding(&self) -> String {
        match self.mode {
            Mode::Mutex => "a mutex".to_owned(),
            Mode::Semaphore => format!("one of {} permits of a semaphore", self.permits),
            Mode::Rwlock => format!(
                "a read-write lock, {}% of sections reading",
                self.readers_pct
            ),
        }
    }
}

/// What one store's rounds add up to.
#[derive(Debug, Default, Serialize)]
pub struct StoreReport {
    pub store: String,
    pub rounds: u64,
    pub sections: u64,
    pub accepted: u64,
    /// Late writes the counter refused by fence (at registration or commit).
    pub refused_by_fence: u64,
    /// Sections that found their lease gone right before writing, and did not write.
    pub not_holder: u64,
    pub killed_mid_section: u64,
    pub faults: BTreeMap<String, u64>,
    pub partitioned_holders: u64,
    pub partitioned_lost: u64,
    pub max_clock_skew_ms: u64,
    pub violations: u64,
    pub lost_updates: u64,
    pub seconds: f64,
    /// What counts toward the target (accepted sections of a mutex, sections otherwise)
    /// per second.
    pub per_second: f64,
    /// Whether `target` accepted sections were reached.
    pub complete: bool,
    /// Round directories kept because they found a violation.
    pub kept: Vec<PathBuf>,
}

impl StoreReport {
    fn add(&mut self, s: &Summary) {
        self.rounds += 1;
        self.sections += s.sections;
        self.accepted += s.accepted;
        self.refused_by_fence += s.rejected();
        self.not_holder += s.not_holder;
        self.killed_mid_section += s.killed_mid_section;
        for (k, n) in &s.faults {
            *self.faults.entry(k.clone()).or_default() += n;
        }
        self.partitioned_holders += s.partitioned_holders;
        self.partitioned_lost += s.partitioned_lost;
        self.max_clock_skew_ms = self.max_clock_skew_ms.max(s.max_clock_skew_ms);
        self.violations += s.violations;
        self.lost_updates += s.lost_updates;
    }
}

pub async fn long(args: LongArgs) -> Result<u8> {
    let stores: Vec<String> = if args.stores.is_empty() {
        STORES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.stores.clone()
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut reports = Vec::new();
    for store in &stores {
        let report = one_store(&args, store).await?;
        std::fs::write(
            args.out.join(format!("{}.json", file_name(store))),
            serde_json::to_string_pretty(&report)?,
        )?;
        reports.push(report);
        write_reports(&args, &reports)?;
    }
    eprintln!(
        "cadenas-torture: report in {}",
        args.out.join("report.md").display()
    );
    let bad = reports
        .iter()
        .any(|r| r.violations > 0 || r.lost_updates > 0 || !r.complete);
    Ok(if bad { EXIT_VIOLATION } else { 0 })
}

async fn one_store(args: &LongArgs, store: &str) -> Result<StoreReport> {
    let mut report = StoreReport {
        store: store.to_owned(),
        ..StoreReport::default()
    };
    let started = Instant::now();
    while args.progress(&report) < args.target && started.elapsed() < args.max_duration {
        let dir = args
            .out
            .join(file_name(store))
            .join(format!("round-{:04}", report.rounds + 1));
        let run = RunArgs {
            store: store.to_owned(),
            procs: args.procs,
            iterations: None,
            duration: args.round,
            keys: args.keys,
            ttl: args.ttl,
            faults: "all".into(),
            fault_every: None,
            work_ms: args.work_ms.clone(),
            seed: None,
            dir: Some(dir.clone()),
            json: false,
            mode: args.mode,
            permits: args.permits,
            readers_pct: args.readers_pct,
        };
        let (summary, _) = crate::cli::run_once(run).await?;
        report.add(&summary);
        eprintln!(
            "cadenas-torture: {store} round {}: sections {}, accepted {} (toward the target: {} of {}), violations {}, lost updates {}",
            report.rounds, summary.sections, summary.accepted, args.progress(&report), args.target,
            summary.violations, summary.lost_updates
        );
        if summary.violations > 0 || summary.lost_updates > 0 {
            summary.print();
            report.kept.push(dir);
        } else {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let _ = std::fs::remove_dir(args.out.join(file_name(store)));
    report.seconds = started.elapsed().as_secs_f64();
    report.per_second = args.progress(&report) as f64 / report.seconds.max(1e-9);
    report.complete = args.progress(&report) >= args.target;
    Ok(report)
}

/// A store name or URL as a file name.
fn file_name(store: &str) -> String {
    let url =
        cadenas::url::StoreUrl::parse(store).map_or_else(|_| store.to_owned(), |u| u.redacted);
    url.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn write_reports(args: &LongArgs, reports: &[StoreReport]) -> Result<()> {
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(reports)?,
    )?;
    std::fs::write(args.out.join("report.md"), markdown(args, reports))?;
    Ok(())
}

fn markdown(args: &LongArgs, reports: &[StoreReport]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# cadenas-torture long run\n\n{} worker processes holding {}, {} keys, ttl {}, work {} ms, rounds of {}, all of each store's faults; target {} {} per store.\n",
        args.procs,
        args.holding(),
        args.keys,
        humantime::format_duration(args.ttl),
        args.work_ms,
        humantime::format_duration(args.round),
        args.target,
        match args.mode {
            Mode::Mutex => "accepted sections",
            Mode::Semaphore | Mode::Rwlock => "sections",
        }
    );
    let rate = match args.mode {
        Mode::Mutex => "accepted/s",
        Mode::Semaphore | Mode::Rwlock => "sections/s",
    };
    let _ = writeln!(md, "| store | sections | accepted | refused by fence | not holder | faults injected | partitioned holders (learnt Lost) | largest clock skew | violations | lost updates | duration | {rate} |");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in reports {
        let faults: Vec<String> = r.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {:.0} |",
            r.store,
            if r.complete { "" } else { " (incomplete)" },
            r.sections,
            r.accepted,
            r.refused_by_fence,
            r.not_holder,
            faults.join(", "),
            r.partitioned_holders,
            r.partitioned_lost,
            if r.faults.contains_key("clock") {
                format!("{:.1} s", r.max_clock_skew_ms as f64 / 1000.0)
            } else {
                "–".into()
            },
            r.violations,
            r.lost_updates,
            humantime::format_duration(Duration::from_secs(r.seconds as u64)),
            r.per_second
        );
    }
    for r in reports.iter().filter(|r| !r.kept.is_empty()) {
        let kept: Vec<String> = r.kept.iter().map(|p| display(p)).collect();
        let _ = writeln!(
            md,
            "\n{}: logs of the rounds with findings kept in {}",
            r.store,
            kept.join(", ")
        );
    }
    md
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
