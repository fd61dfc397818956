//! The checker finds what it is there to find: runs written by hand, with and without the
//! faults that explain them.

use super::*;
use crate::counter::Counter;
use crate::record::{Jsonl, RunConfig};

pub(super) struct Run {
    _temp: tempfile::TempDir,
    pub(super) dir: RunDir,
    logs: HashMap<u32, Jsonl>,
}

/// One section as a worker would log it: acquired at `acq`, released at `rel` (ms).
pub(super) struct S {
    pub(super) worker: u32,
    pub(super) seq: u64,
    pub(super) owner: &'static str,
    pub(super) fence: u64,
    /// When it started acquiring, in ns (default: half a millisecond before `acq`).
    pub(super) start: u64,
    pub(super) acq: u64,
    pub(super) rel: u64,
    pub(super) outcome: Outcome,
    pub(super) release: Release,
    /// Whether the guard said lost at commit.
    pub(super) lost: bool,
    /// A reader (rwlock runs).
    pub(super) shared: bool,
}

pub(super) fn accepted(
    worker: u32,
    seq: u64,
    owner: &'static str,
    fence: u64,
    acq: u64,
    rel: u64,
) -> S {
    S {
        worker,
        seq,
        owner,
        fence,
        start: acq * MS - MS / 2,
        acq,
        rel,
        outcome: Outcome::Accepted,
        release: Release::Ok,
        lost: false,
        shared: false,
    }
}

pub(super) const MS: u64 = 1_000_000;

impl Run {
    pub(super) fn new(faults: &[&str]) -> Run {
        Self::on(StoreKind::Sqlite, faults)
    }

    fn on(store: StoreKind, faults: &[&str]) -> Run {
        let temp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(temp.path()).unwrap();
        dir.write_config(&RunConfig {
            store,
            describe: "sqlite://test".into(),
            keys: vec!["k".into()],
            ttl_ms: 1000,
            work_ms: (1, 2),
            deadline_ns: None,
            iterations: Some(1),
            seed: 0,
            procs: 2,
            faults: faults.iter().map(|f| f.to_string()).collect(),
            mode: Mode::Mutex,
            permits: 0,
            readers_pct: 0,
        })
        .unwrap();
        Run {
            _temp: temp,
            dir,
            logs: HashMap::new(),
        }
    }

    fn log(&mut self, worker: u32) -> &mut Jsonl {
        let dir = self.dir.clone();
        self.logs.entry(worker).or_insert_with(|| {
            let mut log = Jsonl::append(&dir.worker_log(worker)).unwrap();
            log.write(&Rec::Start {
                worker,
                pid: worker,
                t: 0,
            })
            .unwrap();
            log
        })
    }

    pub(super) fn section(&mut self, s: S) {
        let log = self.log(s.worker);
        log.write(&Rec::Begin {
            seq: s.seq,
            key: "k".into(),
            owner: s.owner.into(),
            fence: Some(s.fence),
            shared: s.shared,
            t_start: s.start,
            t_acq: s.acq * MS,
            skew_ms: None,
        })
        .unwrap();
        log.write(&Rec::End {
            seq: s.seq,
            outcome: s.outcome,
            lost_at_commit: s.lost,
            expired_at_commit: false,
            t_rel: s.rel * MS,
            release: s.release,
        })
        .unwrap();
    }

    /// Register and commit through the real counter, in this order.
    pub(super) fn count(&self, steps: &[(&str, Option<u64>, bool)]) {
        let mut c = Counter::open(&self.dir.counter("k"), 1).unwrap();
        let mut read = HashMap::new();
        for (owner, fence, commit) in steps {
            if *commit {
                c.commit(owner, *fence, read[owner]).unwrap();
            } else if let crate::counter::Register::Ok(v) = c.register(owner, *fence).unwrap() {
                read.insert(*owner, v);
            }
        }
    }

    pub(super) fn finish(&mut self, workers: &[(u32, ExitHow)]) {
        let mut exits = Jsonl::append(&self.dir.exits()).unwrap();
        for (w, how) in workers {
            if *how == ExitHow::Finished {
                self.log(*w)
                    .write(&Rec::Finish { t: 0, sections: 1 })
                    .unwrap();
            }
            exits
                .write(&Exit {
                    worker: *w,
                    pid: *w,
                    how: how.clone(),
                })
                .unwrap();
        }
    }

    fn fault(&self, kind: &str, from: u64, to: u64) {
        self.fault_on(kind, None, from, to);
    }

    fn fault_on(&self, kind: &str, worker: Option<u32>, from: u64, to: u64) {
        Jsonl::append(&self.dir.faults())
            .unwrap()
            .write(&Fault {
                kind: kind.into(),
                worker,
                t_start: from * MS,
                t_end: to * MS,
                detail: String::new(),
            })
            .unwrap();
    }

    pub(super) fn check(&self) -> Summary {
        check(&self.dir).unwrap()
    }
}

pub(super) fn has(s: &Summary, text: &str) -> bool {
    s.violation_list.iter().any(|v| v.contains(text))
}

#[test]
fn a_clean_run_passes() {
    let mut run = Run::new(&[]);
    run.section(accepted(1, 1, "a", 10, 1, 2));
    run.section(accepted(2, 1, "b", 11, 3, 4));
    run.count(&[("a", Some(10), false), ("a", Some(10), true)]);
    run.count(&[("b", Some(11), false), ("b", Some(11), true)]);
    run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
    let s = run.check();
    assert_eq!(s.violations, 0, "{:?}", s.violation_list);
    assert_eq!((s.sections, s.accepted, s.lost_updates), (2, 2, 0));
}

#[test]
fn two_confirmed_holders_at_once_are_caught() {
    let mut run = Run::new(&[]);
    run.section(accepted(1, 1, "a", 10, 1, 5));
    let mut b = accepted(2, 1, "b", 11, 3, 6);
    b.outcome = Outcome::RejectedRegister { highest: 12 };
    run.section(b);
    run.count(&[("a", Some(10), false), ("a", Some(10), true)]);
    run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
    let s = run.check();
    assert!(has(&s, "two holders at once"), "{:?}", s.violation_list);
    assert!(has(&s, "in a run without faults"), "{:?}", s.violation_list);
}

#[test]
fn fences_that_go_back_are_caught_unless_a_restart_explains_them() {
    for restart in [false, true] {
        let mut run = Run::new(&["restart"]);
        run.section(accepted(1, 1, "a", 10, 1, 2));
        let mut b = accepted(2, 1, "b", 3, 4, 5);
        b.outcome = Outcome::RejectedRegister { highest: 10 };
        run.section(b);
        run.count(&[("a", Some(10), false), ("a", Some(10), true)]);
        run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
        if restart {
            run.fault("restart", 2, 3);
        }
        let s = run.check();
        if restart {
            assert_eq!(s.violations, 0, "{:?}", s.violation_list);
            assert_eq!(s.fence_regressions_after_restart, 1);
        } else {
            assert!(has(&s, "fence not above"), "{:?}", s.violation_list);
            assert!(has(&s, "rejected"), "{:?}", s.violation_list);
        }
    }
}

#[test]
fn fences_must_grow_again_after_a_restart() {
    let mut run = Run::new(&["restart"]);
    run.section(accepted(1, 1, "a", 10, 1, 2));
    run.fault("restart", 2, 3);
    // After the restart fences start over (explained), but then must grow: 2 after 3 is not.
    for (w, owner, fence, at) in [(2, "b", 3, 4), (3, "c", 2, 6)] {
        let mut sec = accepted(w, 1, owner, fence, at, at + 1);
        sec.outcome = Outcome::RejectedRegister { highest: 10 };
        run.section(sec);
    }
    run.count(&[("a", Some(10), false), ("a", Some(10), true)]);
    run.finish(&[
        (1, ExitHow::Finished),
        (2, ExitHow::Finished),
        (3, ExitHow::Finished),
    ]);
    let s = run.check();
    assert_eq!(s.fence_regressions_after_restart, 2);
    assert_eq!(s.violations, 1, "{:?}", s.violation_list);
    assert!(has(&s, "owner c fence Some(2)"), "{:?}", s.violation_list);
}

#[test]
fn a_reply_delayed_past_a_restart_is_from_before_it() {
    let mut run = Run::new(&["restart", "delay"]);
    // a asked before the restart and got its (old) fence after it: b's new one is lower.
    let mut a = accepted(1, 1, "a", 200, 6, 7);
    a.start = 3 * MS;
    a.release = Release::NotOwned;
    run.section(a);
    run.fault("restart", 4, 5);
    let mut b = accepted(2, 1, "b", 2, 9, 10);
    b.outcome = Outcome::RejectedRegister { highest: 200 };
    run.section(b);
    run.count(&[("a", Some(200), false), ("a", Some(200), true)]);
    run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
    let s = run.check();
    assert_eq!(s.violations, 0, "{:?}", s.violation_list);
    assert_eq!(s.fence_regressions_after_restart, 1);
}

#[test]
fn a_lost_update_is_caught() {
    let mut run = Run::new(&["kill"]);
    run.section(accepted(1, 1, "a", 10, 1, 3));
    let mut b = accepted(2, 1, "b", 11, 2, 4);
    b.release = Release::NotOwned;
    run.section(b);
    // A resource that does not check fences lets both write what they read: 0 + 1 twice.
    run.count(&[
        ("a", None, false),
        ("b", None, false),
        ("a", None, true),
        ("b", None, true),
    ]);
    run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
    let s = run.check();
    assert_eq!(s.lost_updates, 1);
    assert!(has(&s, "lost update"), "{:?}", s.violation_list);
    assert!(
        has(&s, "accepted sections overlap"),
        "{:?}",
        s.violation_list
    );
}

#[test]
fn rejections_need_a_lost_lease() {
    let mut run = Run::new(&["stop"]);
    let mut a = accepted(1, 1, "a", 10, 1, 2);
    a.outcome = Outcome::RejectedCommit { highest: Some(11) };
    a.release = Release::NotOwned;
    run.section(a);
    let mut b = accepted(2, 1, "b", 12, 3, 4);
    b.outcome = Outcome::RejectedCommit { highest: Some(13) };
    run.section(b);
    run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
    let s = run.check();
    assert_eq!(s.violations, 1, "{:?}", s.violation_list);
    assert!(
        has(&s, "though its release confirmed"),
        "{:?}",
        s.violation_list
    );
}

#[test]
fn workers_must_finish_or_be_killed_by_us() {
    let mut run = Run::new(&["kill"]);
    let log = run.log(1);
    log.write(&Rec::Begin {
        seq: 1,
        key: "k".into(),
        owner: "a".into(),
        fence: Some(1),
        shared: false,
        t_start: 1,
        t_acq: 2,
        skew_ms: None,
    })
    .unwrap();
    run.log(2);
    run.log(3);
    run.finish(&[
        (1, ExitHow::KilledByUs),
        (2, ExitHow::Failed("exit status 1".into())),
    ]);
    Jsonl::append(&run.dir.faults())
        .unwrap()
        .write(&Fault {
            kind: "kill".into(),
            worker: Some(1),
            t_start: 2 * MS,
            t_end: 2 * MS,
            detail: String::new(),
        })
        .unwrap();
    // The run goes on long after the kill, and nobody takes the key again.
    run.section(accepted(4, 1, "d", 2, 1, 10_000));
    run.count(&[("d", Some(2), false), ("d", Some(2), true)]);
    run.finish(&[(4, ExitHow::Finished)]);
    let s = run.check();
    assert!(
        has(&s, "nobody acquired it again"),
        "{:?}",
        s.violation_list
    );
    assert_eq!(s.killed_mid_section, 1);
    assert!(has(&s, "worker 2 failed"), "{:?}", s.violation_list);
    assert!(
        has(&s, "worker 3: no exit recorded"),
        "{:?}",
        s.violation_list
    );
    assert_eq!(s.violations, 3, "{:?}", s.violation_list);
}

#[test]
fn a_holder_killed_just_before_the_deadline_needs_no_successor() {
    // Killed 50 ms before the deadline, after which no worker starts an acquire: nobody
    // takes its key again, though another worker's section ends 9 s after the kill.
    for (deadline, violation) in [(Some(1_000 * MS), false), (None, true)] {
        let mut run = Run::new(&["kill"]);
        let mut config = run.dir.read_config().unwrap();
        config.deadline_ns = deadline;
        run.dir.write_config(&config).unwrap();
        run.log(1)
            .write(&Rec::Begin {
                seq: 1,
                key: "k".into(),
                owner: "a".into(),
                fence: Some(3),
                shared: false,
                t_start: 949 * MS,
                t_acq: 950 * MS,
                skew_ms: None,
            })
            .unwrap();
        run.finish(&[(1, ExitHow::KilledByUs)]);
        run.fault_on("kill", Some(1), 951, 951);
        run.section(accepted(4, 1, "d", 2, 1, 10_000));
        run.count(&[("d", Some(2), false), ("d", Some(2), true)]);
        run.finish(&[(4, ExitHow::Finished)]);
        let s = run.check();
        assert_eq!(
            has(&s, "nobody acquired it again"),
            violation,
            "deadline {deadline:?}: {:?}",
            s.violation_list
        );
    }
}

#[test]
fn a_partitioned_holder_must_learn_lost() {
    for lost in [false, true] {
        let mut run = Run::on(StoreKind::Redis, &["partition"]);
        // Worker 1 holds from 1 ms, cut off from 10 ms to 1710 ms (ttl 1 s), writes late.
        let mut a = accepted(1, 1, "a", 10, 1, 1800);
        a.outcome = Outcome::RejectedCommit { highest: Some(11) };
        a.release = Release::NotOwned;
        a.lost = lost;
        run.section(a);
        run.section(accepted(2, 1, "b", 11, 1100, 1200));
        run.count(&[
            ("a", Some(10), false),
            ("b", Some(11), false),
            ("b", Some(11), true),
        ]);
        run.fault_on("partition", Some(1), 10, 1710);
        run.finish(&[(1, ExitHow::Finished), (2, ExitHow::Finished)]);
        let s = run.check();
        assert_eq!(s.partitioned_holders, 1);
        assert_eq!(s.partitioned_refused, 1);
        if lost {
            assert_eq!(s.violations, 0, "{:?}", s.violation_list);
        } else {
            assert!(has(&s, "cut off from the store"), "{:?}", s.violation_list);
        }
    }
}

#[test]
fn clocks_alone_must_not_take_a_lease_where_the_server_decides() {
    for store in [StoreKind::Redis, StoreKind::Sqlite] {
        let mut run = Run::on(store, &["clock", "kill"]);
        let mut a = accepted(1, 1, "a", 10, 1, 5);
        a.release = Release::NotOwned;
        a.lost = true;
        run.section(a);
        run.count(&[("a", Some(10), false), ("a", Some(10), true)]);
        run.fault_on("clock", Some(1), 2, 2);
        run.finish(&[(1, ExitHow::Finished)]);
        let s = run.check();
        if store == StoreKind::Redis {
            assert!(
                has(&s, "no fault of this run can take one"),
                "{:?}",
                s.violation_list
            );
        } else {
            // SQLite's clock is the clients': a stepped clock can expire a lease early.
            assert_eq!(s.violations, 0, "{:?}", s.violation_list);
        }
    }
}
