//! The checks of semaphore and read-write runs, from the logs: how many held a key at once.
//!
//! A section whose release the store confirmed held its holding from before its `t_acq`
//! (logged after `acquire` returned) to after its `t_rel` (logged before `release` was
//! sent), so `[t_acq, t_rel]` lies inside the holding: two such intervals that overlap are
//! two holdings at once, whatever the timing of the replies. Per key, a sweep over those
//! intervals counts the holders at every moment:
//!
//! - **semaphore of N**: never more than N at once, and N at once somewhere in the run (the
//!   store hands out every permit, not only one);
//! - **read-write**: a writer overlaps nobody (no reader, no writer), and two readers do
//!   overlap somewhere in the run (readers share).
//!
//! Sections whose release was refused or failed held their lease for an unknown part of
//! their interval and are left out, as the mutex check leaves them out.

use super::{describe, Sec, Summary};
use crate::record::{Mode, Release, RunConfig};

/// The holders of `key` at every moment: at most `permits` (semaphore), a writer alone
/// (read-write). Records the most holders seen at once in `s.max_holders`.
pub(super) fn check_holders(config: &RunConfig, key: &str, list: &[&Sec], s: &mut Summary) {
    // (time, 0 = ends / 1 = begins, section): at equal times an end comes first (a
    // holding that ends when another begins does not overlap it).
    let mut events: Vec<(u64, u8, &Sec)> = Vec::new();
    for sec in list {
        if let Some(e) = sec.end.as_ref().filter(|e| e.release == Release::Ok) {
            events.push((sec.t_acq, 1, sec));
            events.push((e.t_rel, 0, sec));
        }
    }
    events.sort_by_key(|&(t, edge, sec)| (t, edge, sec.worker));
    let mut inside: Vec<&Sec> = Vec::new();
    let mut flagged = 0;
    for (_, edge, sec) in events {
        if edge == 0 {
            inside.retain(|other| !std::ptr::eq(*other, sec));
            continue;
        }
        let broken = match config.mode {
            Mode::Semaphore => inside.len() >= config.permits as usize,
            // A writer among those inside, or a writer coming in while anyone is.
            _ => !inside.is_empty() && (!sec.shared || inside.iter().any(|o| !o.shared)),
        };
        inside.push(sec);
        if broken && flagged < 3 {
            // A few examples are enough: every later overlap of the same holders repeats them.
            flagged += 1;
            let all: Vec<String> = inside.iter().map(|o| role(config, o)).collect();
            s.violation(format!(
                "key {key}: {} holders at once, all confirmed by their release ({}): {}",
                inside.len(),
                match config.mode {
                    Mode::Semaphore => format!("at most {} permits", config.permits),
                    _ => "a writer holds alone".to_owned(),
                },
                all.join(", ")
            ));
        } else if broken {
            s.violations += 1;
        }
        let holders = match config.mode {
            Mode::Semaphore => inside.len(),
            _ => inside.iter().filter(|o| o.shared).count(),
        };
        s.max_holders = s.max_holders.max(holders as u64);
    }
}

fn role(config: &RunConfig, sec: &Sec) -> String {
    let role = match (config.mode, sec.shared) {
        (Mode::Semaphore, _) => "permit",
        (_, true) => "reader",
        (_, false) => "writer",
    };
    format!("{role} {}", describe(sec))
}

/// The primitive did its job at all: a semaphore had all N permits held at once, readers
/// overlapped. (A store that handed out one permit at a time, or let one reader in at a
/// time, would pass the other checks.)
pub(super) fn check_reached(config: &RunConfig, s: &mut Summary) {
    match config.mode {
        Mode::Mutex => {}
        Mode::Semaphore if s.max_holders < u64::from(config.permits) => s.violation(format!(
            "the semaphore of {} permits never had {} holders at once (at most {}): permits \
             are not all handed out (a run too short or with too few workers per key shows \
             this too: try --keys 1)",
            config.permits, config.permits, s.max_holders
        )),
        Mode::Rwlock if s.max_holders < 2 => s.violation(format!(
            "readers never overlapped (at most {} at once): readers do not share the key (a \
             run too short or with too few workers per key shows this too: try --keys 1)",
            s.max_holders
        )),
        _ => {}
    }
}
