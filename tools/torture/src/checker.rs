//! `check DIR`: reads a run's logs, counter journals, faults and exits, and verifies that
//! two holders never overlapped.
//!
//! What it checks, per key:
//! - **leases**: two sections whose release the store confirmed (so each held its lease
//!   from acquire to release) never overlap in time; in semaphore runs at most N of them
//!   overlap and N do, in read-write runs readers overlap and a writer overlaps nobody
//!   (`groups.rs`);
//! - **fences**: a section that began acquiring after another had acquired got a higher
//!   fence (a store restart without persistence is reported apart: documented);
//! - **resource**: the counter's accepted sections (register → commit) never overlap, their
//!   fences strictly increase in acceptance order, and the counter equals the number of
//!   commits (no lost update); the workers' logs agree with the counter;
//! - **rejections**: without faults none; with faults only for a holder whose lease was
//!   lost (or unknown), or after a store restart;
//! - **takeover**: the key of a killed holder is acquired again;
//! - **workers**: every one finished, or was killed by the orchestrator.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;

use crate::counter::{read_journal, Kind};
use crate::record::{
    read_jsonl, Exit, ExitHow, Fault, Mode, Outcome, Rec, Release, RunDir, StoreKind,
};

/// At most this many violations are listed (all are counted).
const LISTED: usize = 30;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub store: String,
    pub kind: Option<StoreKind>,
    pub workers: usize,
    pub seconds: f64,
    pub sections: u64,
    pub accepted: u64,
    pub rejected_register: u64,
    pub rejected_commit: u64,
    pub not_holder: u64,
    pub holder_unknown: u64,
    pub killed_mid_section: u64,
    pub acquire_errors: u64,
    pub releases_not_owned: u64,
    pub release_errors: u64,
    /// Sections whose guard said lost (`is_lost`) at commit time.
    pub lost_at_commit: u64,
    /// Sections whose lease had run out by the guard's clock (`is_expired`) at commit time
    /// while `is_lost` still said no: a violation (a holder checking `is_lost` would write).
    pub expired_not_lost_at_commit: u64,
    pub faults: BTreeMap<String, u64>,
    pub faults_injected: u64,
    pub fence_regressions_after_restart: u64,
    /// Fault `clock`: the largest distance seen between a worker's wall clock and the host's.
    pub max_clock_skew_ms: u64,
    /// Fault `partition`: holders cut off for longer than the ttl while in their section,
    /// how many of them learnt `Lost` (all must), and how many of their late writes the
    /// fence refused (the rest found no newer holder registered: nothing to refuse).
    pub partitioned_holders: u64,
    pub partitioned_lost: u64,
    pub partitioned_refused: u64,
    pub lost_updates: u64,
    /// What the workers held (`mutex`, `semaphore`, `rwlock`) and the semaphore's count.
    pub mode: Mode,
    pub permits: u32,
    /// Sections that wrote nothing: permit holders and readers.
    pub no_write_sections: u64,
    /// The most holders of one key at once among the sections whose release the store
    /// confirmed: permit holders (semaphore runs, at most `permits`) or readers (rwlock).
    pub max_holders: u64,
    pub violations: u64,
    pub violation_list: Vec<String>,
}

impl Summary {
    fn violation(&mut self, text: String) {
        self.violations += 1;
        if self.violation_list.len() < LISTED {
            self.violation_list.push(text);
        }
    }

    pub fn rejected(&self) -> u64 {
        self.rejected_register + self.rejected_commit
    }

    pub fn print(&self) {
        let s = self;
        println!(
            "cadenas-torture: {} ({:?}), {} workers, {:.1} s",
            s.store,
            s.kind.unwrap_or(StoreKind::Memory),
            s.workers,
            s.seconds
        );
        println!(
            "  sections {}: accepted {}, rejected {} (register {}, commit {}), not holder {}, holder unknown {}, killed mid-section {}",
            s.sections, s.accepted, s.rejected(), s.rejected_register, s.rejected_commit,
            s.not_holder, s.holder_unknown, s.killed_mid_section
        );
        println!(
            "  acquire errors {}, releases not owned {}, release errors {}, lost at commit {}, expired but not lost at commit {}",
            s.acquire_errors, s.releases_not_owned, s.release_errors, s.lost_at_commit,
            s.expired_not_lost_at_commit
        );
        let kinds: Vec<String> = s.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  faults injected {}: {}",
            s.faults_injected,
            kinds.join(", ")
        );
        if s.faults.contains_key("clock") {
            println!(
                "  largest wall-clock skew of a worker {} ms",
                s.max_clock_skew_ms
            );
        }
        if s.faults.contains_key("partition") {
            println!(
                "  holders partitioned past their ttl {}: learnt Lost {}, late write refused by fence {}",
                s.partitioned_holders, s.partitioned_lost, s.partitioned_refused
            );
        }
        match s.mode {
            Mode::Mutex => {}
            Mode::Semaphore => println!(
                "  semaphore of {} permits: most holders of a key at once {} (sections {})",
                s.permits, s.max_holders, s.no_write_sections
            ),
            Mode::Rwlock => println!(
                "  read-write: most readers of a key at once {} (reader sections {})",
                s.max_holders, s.no_write_sections
            ),
        }
        if s.fence_regressions_after_restart > 0 {
            println!(
                "  fences that went back after a store restart (no persistence; documented): {}",
                s.fence_regressions_after_restart
            );
        }
        println!(
            "  violations {}, lost updates {}",
            s.violations, s.lost_updates
        );
        for v in &s.violation_list {
            println!("  VIOLATION: {v}");
        }
    }
}

#[derive(Debug, Clone)]
struct Sec {
    worker: u32,
    key: String,
    owner: String,
    fence: Option<u64>,
    /// A reader (rwlock runs).
    shared: bool,
    t_start: u64,
    t_acq: u64,
    end: Option<EndRec>,
}

#[derive(Debug, Clone)]
struct EndRec {
    lost: bool,
    outcome: Outcome,
    t_rel: u64,
    release: Release,
}

fn ms(t: u64) -> f64 {
    t as f64 / 1e6
}

fn describe(s: &Sec) -> String {
    format!(
        "worker {} owner {} fence {:?} [{:.3} ms, {}]",
        s.worker,
        s.owner,
        s.fence,
        ms(s.t_acq),
        s.end
            .as_ref()
            .map_or("no end".into(), |e| format!("{:.3} ms", ms(e.t_rel)))
    )
}

/// Checks the run in `dir`.
pub fn check(dir: &RunDir) -> Result<Summary> {
    let config = dir.read_config()?;
    let mut s = Summary {
        store: config.describe.clone(),
        kind: Some(config.store),
        mode: config.mode,
        permits: config.permits,
        ..Summary::default()
    };
    let faults: Vec<Fault> = read_jsonl(&dir.faults())?;
    for f in &faults {
        *s.faults.entry(f.kind.clone()).or_default() += 1;
    }
    s.faults_injected = faults.len() as u64;
    let exits: HashMap<u32, Exit> = read_jsonl::<Exit>(&dir.exits())?
        .into_iter()
        .map(|e| (e.worker, e))
        .collect();
    let secs = read_sections(dir, &exits, &mut s)?;
    if secs.is_empty() {
        s.violation(
            "no critical section ran: the workers never held a lock (see workers/*.err)".into(),
        );
    }
    let (mut first, mut last) = (u64::MAX, 0);
    for sec in &secs {
        first = first.min(sec.t_start);
        last = last.max(sec.end.as_ref().map_or(sec.t_acq, |e| e.t_rel));
    }
    s.seconds = if last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let restarts: Vec<&Fault> = faults.iter().filter(|f| f.kind == "restart").collect();
    let mut by_key: BTreeMap<&str, Vec<&Sec>> = BTreeMap::new();
    for sec in &secs {
        by_key.entry(&sec.key).or_default().push(sec);
    }
    for (key, list) in &by_key {
        match config.mode {
            Mode::Mutex => check_leases(key, list, &mut s),
            Mode::Semaphore | Mode::Rwlock => groups::check_holders(&config, key, list, &mut s),
        }
        check_fences(key, list, &restarts, &mut s);
    }
    groups::check_reached(&config, &mut s);
    holders::check_rejections(&config, &secs, &restarts, &mut s);
    // Workers start no acquire after the run's deadline: a key free after it is taken by
    // nobody, however late a straggler's section ends.
    let acquiring_until = config.deadline_ns.map_or(last, |d| last.min(d));
    holders::check_takeovers(&config, &secs, &faults, acquiring_until, &mut s);
    holders::check_partitions(&config, &secs, &faults, &mut s);
    holders::check_leases_kept(&config, &secs, &mut s);
    // A semaphore's holders write nothing: no counter to check.
    for key in config
        .keys
        .iter()
        .filter(|_| config.mode != Mode::Semaphore)
    {
        let list = by_key.get(key.as_str()).cloned().unwrap_or_default();
        check_counter(dir, key, &list, &mut s)?;
    }
    Ok(s)
}

fn read_sections(dir: &RunDir, exits: &HashMap<u32, Exit>, s: &mut Summary) -> Result<Vec<Sec>> {
    let mut secs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir.0.join("workers"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let records: Vec<Rec> = read_jsonl(&path)?;
        let Some(Rec::Start { worker, .. }) = records.first() else {
            s.violation(format!(
                "{} does not start with a Start record",
                path.display()
            ));
            continue;
        };
        let worker = *worker;
        s.workers += 1;
        let how = exits.get(&worker).map(|e| e.how.clone());
        match &how {
            None => s.violation(format!("worker {worker}: no exit recorded")),
            Some(ExitHow::Failed(why)) => s.violation(format!("worker {worker} failed: {why}")),
            Some(ExitHow::Finished) if !matches!(records.last(), Some(Rec::Finish { .. })) => s
                .violation(format!(
                    "worker {worker} exited 0 without finishing its log"
                )),
            _ => {}
        }
        let mut open: HashMap<u64, Sec> = HashMap::new();
        for rec in records {
            match rec {
                Rec::Begin {
                    seq,
                    key,
                    owner,
                    fence,
                    shared,
                    t_start,
                    t_acq,
                    skew_ms,
                } => {
                    s.sections += 1;
                    s.max_clock_skew_ms =
                        s.max_clock_skew_ms.max(skew_ms.unwrap_or(0).unsigned_abs());
                    open.insert(
                        seq,
                        Sec {
                            worker,
                            key,
                            owner,
                            fence,
                            shared,
                            t_start,
                            t_acq,
                            end: None,
                        },
                    );
                }
                Rec::End {
                    seq,
                    outcome,
                    lost_at_commit,
                    expired_at_commit,
                    t_rel,
                    release,
                } => {
                    let Some(mut sec) = open.remove(&seq) else {
                        s.violation(format!(
                            "worker {worker}: End of section {seq} without Begin"
                        ));
                        continue;
                    };
                    s.lost_at_commit += u64::from(lost_at_commit);
                    if expired_at_commit && !lost_at_commit {
                        s.expired_not_lost_at_commit += 1;
                        s.violation(format!(
                            "worker {worker}: section {seq} on key {}: the guard was expired by its own clock but is_lost() said no",
                            sec.key
                        ));
                    }
                    match &outcome {
                        Outcome::Accepted => {}
                        Outcome::RejectedRegister { .. } => s.rejected_register += 1,
                        Outcome::RejectedCommit { .. } => s.rejected_commit += 1,
                        Outcome::NotHolder => s.not_holder += 1,
                        Outcome::HolderUnknown(_) => s.holder_unknown += 1,
                        Outcome::NoWrite => s.no_write_sections += 1,
                    }
                    match &release {
                        Release::Ok => {}
                        Release::NotOwned => s.releases_not_owned += 1,
                        Release::Error(_) => s.release_errors += 1,
                    }
                    sec.end = Some(EndRec {
                        lost: lost_at_commit,
                        outcome,
                        t_rel,
                        release,
                    });
                    secs.push(sec);
                }
                Rec::AcquireError { .. } => s.acquire_errors += 1,
                Rec::Start { .. } | Rec::Finish { .. } => {}
            }
        }
        for (seq, sec) in open {
            if how == Some(ExitHow::KilledByUs) {
                s.killed_mid_section += 1;
            } else {
                s.violation(format!(
                    "worker {worker}: section {seq} never ended, and we did not kill it"
                ));
            }
            secs.push(sec);
        }
    }
    Ok(secs)
}

/// Sections whose release the store confirmed held their lease throughout: never two at once.
fn check_leases(key: &str, list: &[&Sec], s: &mut Summary) {
    let mut held: Vec<(&Sec, u64)> = list
        .iter()
        .filter_map(|sec| match &sec.end {
            Some(e) if e.release == Release::Ok => Some((*sec, e.t_rel)),
            _ => None,
        })
        .collect();
    held.sort_by_key(|(sec, _)| sec.t_acq);
    let mut latest: Option<(&Sec, u64)> = None;
    for (sec, end) in held {
        if let Some((prev, prev_end)) = latest {
            if sec.t_acq < prev_end {
                s.violation(format!(
                    "key {key}: two holders at once, both confirmed by their release: {} and {}",
                    describe(prev),
                    describe(sec)
                ));
            }
        }
        if latest.is_none_or(|(_, e)| end > e) {
            latest = Some((sec, end));
        }
    }
}

/// A section that began acquiring after another one had acquired has a higher fence.
/// Across a store restart (no persistence) fences may go back: counted apart. Between two
/// restarts they must grow again, which is checked within each such epoch.
fn check_fences(key: &str, list: &[&Sec], restarts: &[&Fault], s: &mut Summary) {
    let mut flagged = HashSet::new();
    for b in list.iter().filter(|b| b.fence.is_none()) {
        s.violation(format!(
            "key {key}: no fence on a fenced store: {}",
            describe(b)
        ));
    }
    for (a, b) in regressions(list) {
        // `a`'s acquisition happened in the store somewhere between its t_start and t_acq
        // (a reply can reach the client after a restart, delayed on the way).
        if restarts
            .iter()
            .any(|r| r.t_start < b.t_acq && r.t_end > a.t_start)
        {
            s.fence_regressions_after_restart += 1;
        } else if flagged.insert(&b.owner) {
            s.violation(regression(key, a, b));
        }
    }
    let mut bounds: Vec<(u64, u64)> = restarts.iter().map(|r| (r.t_start, r.t_end)).collect();
    bounds.sort();
    for (i, &(_, from)) in bounds.iter().enumerate() {
        let to = bounds.get(i + 1).map_or(u64::MAX, |next| next.0);
        let epoch: Vec<&Sec> = list
            .iter()
            .copied()
            .filter(|sec| sec.t_start > from && sec.t_acq < to)
            .collect();
        for (a, b) in regressions(&epoch) {
            if flagged.insert(&b.owner) {
                s.violation(regression(key, a, b));
            }
        }
    }
}

fn regression(key: &str, a: &Sec, b: &Sec) -> String {
    format!(
        "key {key}: fence not above an earlier acquisition's: {} acquired before {} started",
        describe(a),
        describe(b)
    )
}

/// Pairs (a, b) where `a` had acquired before `b` started acquiring, yet `b`'s fence is not
/// higher: `a` is the highest fence acquired before `b` started.
fn regressions<'a>(list: &[&'a Sec]) -> Vec<(&'a Sec, &'a Sec)> {
    let mut by_acq: Vec<&Sec> = list.to_vec();
    by_acq.sort_by_key(|sec| sec.t_acq);
    let mut by_start: Vec<&Sec> = list.to_vec();
    by_start.sort_by_key(|sec| sec.t_start);
    let (mut i, mut max, mut out) = (0, None::<&Sec>, Vec::new());
    for b in by_start {
        while i < by_acq.len() && by_acq[i].t_acq < b.t_start {
            if max.is_none_or(|m| by_acq[i].fence > m.fence) {
                max = Some(by_acq[i]);
            }
            i += 1;
        }
        if let (Some(a), Some(fb)) = (max, b.fence) {
            if a.fence.is_some_and(|fa| fb <= fa) {
                out.push((a, b));
            }
        }
    }
    out
}

/// The counter: accepted sections never overlap, fences increase, no update lost, and the
/// workers' logs agree with it.
fn check_counter(dir: &RunDir, key: &str, secs: &[&Sec], s: &mut Summary) -> Result<()> {
    let journal = read_journal(&dir.counter(key))?;
    let mut registered: HashMap<&str, &crate::counter::Entry> = HashMap::new();
    let mut accepted = Vec::new();
    for e in &journal {
        match e.kind {
            Kind::R => {
                registered.insert(&e.owner, e);
            }
            Kind::C => match registered.get(e.owner.as_str()) {
                Some(r) => accepted.push((*r, e)),
                None => s.violation(format!(
                    "key {key}: commit by {} without registration",
                    e.owner
                )),
            },
        }
    }
    accepted.sort_by_key(|(r, _)| r.t);
    let commits = accepted.len() as u64;
    s.accepted += commits;
    let value = journal.last().map_or(0, |e| e.value);
    if value > commits {
        s.violation(format!(
            "key {key}: counter {value} above its {commits} commits"
        ));
    }
    let lost = commits.saturating_sub(value);
    s.lost_updates += lost;

    let mut latest: Option<(u64, &crate::counter::Entry)> = None;
    for (r, c) in &accepted {
        if let Some((prev_end, prev)) = latest {
            if r.t < prev_end {
                s.violation(format!(
                    "key {key}: accepted sections overlap: {} (fence {:?}) and {} (fence {:?})",
                    prev.owner, prev.fence, r.owner, r.fence
                ));
            }
            if r.fence <= prev.fence {
                s.violation(format!(
                    "key {key}: accepted fences not increasing: {:?} after {:?}",
                    r.fence, prev.fence
                ));
            }
        }
        if latest.is_none_or(|(end, _)| c.t > end) {
            latest = Some((c.t, r));
        }
    }
    if lost > 0 {
        s.violation(format!(
            "key {key}: {lost} lost update(s): {commits} commits, counter {value}"
        ));
    }

    // The workers' logs and the counter agree.
    let committed: HashSet<&str> = accepted.iter().map(|(_, c)| c.owner.as_str()).collect();
    let by_owner: HashMap<&str, &Sec> = secs.iter().map(|sec| (sec.owner.as_str(), *sec)).collect();
    for sec in secs {
        if let Some(EndRec {
            outcome: Outcome::Accepted,
            ..
        }) = &sec.end
        {
            if !committed.contains(sec.owner.as_str()) {
                s.violation(format!(
                    "key {key}: logged as accepted, absent from the counter: {}",
                    describe(sec)
                ));
            }
        }
    }
    for owner in committed {
        match by_owner.get(owner).map(|sec| &sec.end) {
            Some(None) => {} // killed between its commit and its log line
            Some(Some(EndRec {
                outcome: Outcome::Accepted,
                ..
            })) => {}
            Some(Some(e)) => s.violation(format!(
                "key {key}: the counter committed {owner}, its worker logged {:?}",
                e.outcome
            )),
            None => s.violation(format!(
                "key {key}: the counter committed {owner}, no worker logged it"
            )),
        }
    }
    Ok(())
}

mod groups;
mod holders;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_groups;
