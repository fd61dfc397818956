//! The checks of semaphore and read-write runs find what they are there to find: runs
//! written by hand (the harness of `tests.rs`).

use super::tests::{accepted, has, Run, S};
use super::*;

/// A run of `mode` (a semaphore of `permits`) on one key, without faults.
fn run_of(mode: Mode, permits: u32) -> Run {
    run_with(mode, permits, &[])
}

fn run_with(mode: Mode, permits: u32, faults: &[&str]) -> Run {
    let run = Run::new(faults);
    let mut config = run.dir.read_config().unwrap();
    config.mode = mode;
    config.permits = permits;
    config.readers_pct = if mode == Mode::Rwlock { 75 } else { 0 };
    run.dir.write_config(&config).unwrap();
    run
}

/// A section that writes nothing (a permit holder, or a reader when `shared`).
fn holding(worker: u32, fence: u64, acq: u64, rel: u64, shared: bool) -> S {
    let owner: &'static str = format!("o{fence}").leak();
    S {
        outcome: Outcome::NoWrite,
        shared,
        ..accepted(worker, fence, owner, fence, acq, rel)
    }
}

fn finished(run: &mut Run, workers: u32) {
    let all: Vec<(u32, ExitHow)> = (1..=workers).map(|w| (w, ExitHow::Finished)).collect();
    run.finish(&all);
}

#[test]
fn a_semaphore_of_two_with_two_at_once_passes() {
    let mut run = run_of(Mode::Semaphore, 2);
    run.section(holding(1, 1, 1, 10, false));
    run.section(holding(2, 2, 2, 5, false));
    // Begins when 2 ends (at the same instant): not three at once.
    run.section(holding(3, 3, 5, 12, false));
    finished(&mut run, 3);
    let s = run.check();
    assert_eq!(s.violations, 0, "{:?}", s.violation_list);
    assert_eq!((s.max_holders, s.no_write_sections), (2, 3));
}

#[test]
fn three_holders_of_two_permits_are_caught() {
    let mut run = run_of(Mode::Semaphore, 2);
    run.section(holding(1, 1, 1, 10, false));
    run.section(holding(2, 2, 2, 9, false));
    run.section(holding(3, 3, 3, 4, false));
    finished(&mut run, 3);
    let s = run.check();
    assert!(has(&s, "3 holders at once"), "{:?}", s.violation_list);
    assert_eq!(s.max_holders, 3);
}

#[test]
fn a_holder_whose_release_was_refused_is_not_counted() {
    // Stopped past its lease, it came back after its permit had gone to another.
    let mut run = run_with(Mode::Semaphore, 2, &["stop"]);
    run.section(holding(1, 1, 1, 10, false));
    run.section(holding(2, 2, 2, 9, false));
    run.section(S {
        release: Release::NotOwned,
        ..holding(3, 3, 3, 4, false)
    });
    finished(&mut run, 3);
    let s = run.check();
    assert_eq!(s.violations, 0, "{:?}", s.violation_list);
}

#[test]
fn a_semaphore_that_never_fills_is_caught() {
    let mut run = run_of(Mode::Semaphore, 3);
    run.section(holding(1, 1, 1, 10, false));
    run.section(holding(2, 2, 2, 9, false));
    run.section(holding(3, 3, 10, 11, false));
    finished(&mut run, 3);
    let s = run.check();
    assert!(has(&s, "never had 3 holders"), "{:?}", s.violation_list);
}

#[test]
fn overlapping_readers_then_a_writer_pass() {
    let mut run = run_of(Mode::Rwlock, 0);
    run.section(holding(1, 1, 1, 10, true));
    run.section(holding(2, 2, 2, 8, true));
    run.section(accepted(3, 3, "w", 3, 11, 12));
    run.count(&[("w", Some(3), false), ("w", Some(3), true)]);
    finished(&mut run, 3);
    let s = run.check();
    assert_eq!(s.violations, 0, "{:?}", s.violation_list);
    assert_eq!((s.max_holders, s.accepted), (2, 1));
}

#[test]
fn a_writer_beside_a_reader_is_caught() {
    let mut run = run_of(Mode::Rwlock, 0);
    run.section(holding(1, 1, 1, 10, true));
    run.section(holding(2, 2, 2, 8, true));
    run.section(accepted(3, 3, "w", 3, 9, 12));
    run.count(&[("w", Some(3), false), ("w", Some(3), true)]);
    finished(&mut run, 3);
    let s = run.check();
    assert!(has(&s, "a writer holds alone"), "{:?}", s.violation_list);
}

#[test]
fn readers_that_never_overlap_are_caught() {
    let mut run = run_of(Mode::Rwlock, 0);
    run.section(holding(1, 1, 1, 2, true));
    run.section(holding(2, 2, 3, 4, true));
    finished(&mut run, 2);
    let s = run.check();
    assert!(
        has(&s, "readers never overlapped"),
        "{:?}",
        s.violation_list
    );
}
