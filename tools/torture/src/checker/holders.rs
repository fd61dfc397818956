//! The checks on holders one fault aims at: killed holders' keys taken again, rejections
//! explained by a fault, partitioned holders told `Lost`, leases no clock may take.

use super::{describe, Sec, Summary};
use crate::record::{Fault, Release, RunConfig};

/// A key whose holder was killed is taken again once its lease expires: checked for kills
/// at least three ttls before `end` (the run's last section ended, or its deadline passed
/// if that came first: no worker starts an acquire after it), counted from the end of the
/// store-wide faults in between (see `liveness_deadline`).
pub(super) fn check_takeovers(
    config: &RunConfig,
    secs: &[Sec],
    faults: &[Fault],
    end: u64,
    s: &mut Summary,
) {
    let mut wait = config.ttl_ms * 3 * 1_000_000;
    if crate::clock::host_clock(config.store) && config.faults.iter().any(|f| f == "clock") {
        // A host clock stepped back lengthens the leases by the step (the clients' clocks
        // decide there): twice, at most.
        wait += 2 * crate::clock::STEP_S as u64 * 1_000_000_000;
    }
    for sec in secs.iter().filter(|sec| sec.end.is_none()) {
        let Some(kill) = faults
            .iter()
            .find(|f| f.kind == "kill" && f.worker == Some(sec.worker))
        else {
            continue;
        };
        let first = secs
            .iter()
            .filter(|other| other.key == sec.key && other.t_acq > kill.t_start)
            .map(|other| other.t_acq)
            .min();
        let lease_end = kill.t_start + config.ttl_ms * 1_000_000;
        let waiting = secs
            .iter()
            .any(|o| o.key == sec.key && o.t_start < lease_end && o.t_acq > kill.t_start);
        // In a run where no fault can delay a waiter, the lease ends within its ttl: a slow
        // or stepped holder's clock must not have lengthened it (allowing a ttl of slack).
        if let Some(first) = first.filter(|_| !lease_faults(config) && waiting) {
            if first > lease_end + config.ttl_ms * 1_000_000 {
                s.violation(format!(
                    "key {}: a killed holder's lease outlived its ttl: taken again {:.0} ms after the kill (ttl {} ms): {}",
                    sec.key,
                    (first - kill.t_start) as f64 / 1e6,
                    config.ttl_ms,
                    describe(sec)
                ));
            }
        }
        if first.is_none() && liveness_deadline(kill.t_start, wait, faults) < end {
            s.violation(format!(
                "key {}: nobody acquired it again after its holder was killed: {}",
                sec.key,
                describe(sec)
            ));
        }
    }
}

/// When a key whose holder was killed at `kill` must have been taken again: `wait` after
/// the kill, or after the end of the last store-wide fault that began before that (a restart,
/// dropped or delayed connections: while one lasts nobody can take the key, and a new etcd
/// leader renews every lease by its full ttl), whichever is later.
fn liveness_deadline(kill: u64, wait: u64, faults: &[Fault]) -> u64 {
    let mut store_wide: Vec<&Fault> = faults
        .iter()
        .filter(|f| matches!(f.kind.as_str(), "restart" | "drop" | "delay"))
        .filter(|f| f.t_end >= kill)
        .collect();
    store_wide.sort_by_key(|f| f.t_start);
    let mut deadline = kill + wait;
    for f in store_wide {
        if f.t_start < deadline {
            deadline = deadline.max(f.t_end + wait);
        }
    }
    deadline
}

/// Whether the run has a fault that can take a live holder's lease: not `kill` (its victim is
/// gone), not `clock` on stores whose server's clock decides expiry (that is the point).
pub(super) fn lease_faults(config: &RunConfig) -> bool {
    config.faults.iter().any(|f| match f.as_str() {
        "kill" => false,
        "clock" => crate::clock::host_clock(config.store),
        _ => true,
    })
}

/// In a run whose faults cannot take a live lease (none, `kill`, and `clock` on server-clock
/// stores), no holder loses one: its lease was not cut short by anybody's clock.
pub(super) fn check_leases_kept(config: &RunConfig, secs: &[Sec], s: &mut Summary) {
    if lease_faults(config) {
        return;
    }
    for sec in secs {
        let Some(end) = &sec.end else { continue };
        if end.lost || end.release == Release::NotOwned {
            s.violation(format!(
                "key {}: a lease was lost (lost at commit {}, release {:?}) though no fault of this run can take one: {}",
                sec.key,
                end.lost,
                end.release,
                describe(sec)
            ));
        }
    }
}

/// A holder cut off from the store for longer than its ttl, kept in its section until
/// healed, must have learnt `Lost` by the time it writes; its late write stands only if no
/// newer holder registered (the counter's checks catch any overlap).
pub(super) fn check_partitions(
    config: &RunConfig,
    secs: &[Sec],
    faults: &[Fault],
    s: &mut Summary,
) {
    let ttl = config.ttl_ms * 1_000_000;
    for f in faults.iter().filter(|f| f.kind == "partition") {
        if f.t_end.saturating_sub(f.t_start) <= ttl {
            continue;
        }
        let Some(sec) = secs.iter().find(|sec| {
            Some(sec.worker) == f.worker
                && sec.t_acq < f.t_start
                && sec.end.as_ref().is_some_and(|e| e.t_rel > f.t_end)
        }) else {
            // It left its section before the cut took hold (or was killed): nothing held.
            continue;
        };
        let end = sec.end.as_ref().expect("found with an end");
        s.partitioned_holders += 1;
        s.partitioned_lost += u64::from(end.lost);
        s.partitioned_refused += u64::from(end.outcome.rejected());
        if !end.lost {
            s.violation(format!(
                "key {}: cut off from the store for {:.0} ms (ttl {} ms), yet is_lost() said no when it wrote: {}",
                sec.key,
                (f.t_end - f.t_start) as f64 / 1e6,
                config.ttl_ms,
                describe(sec)
            ));
        }
    }
}

/// Rejections need a fault to explain them: a lease lost (or unknown) or a store restart.
pub(super) fn check_rejections(
    config: &RunConfig,
    secs: &[Sec],
    restarts: &[&Fault],
    s: &mut Summary,
) {
    for sec in secs {
        let Some(end) = &sec.end else { continue };
        if !end.outcome.rejected() {
            continue;
        }
        if !lease_faults(config) {
            s.violation(format!(
                "key {}: rejected ({:?}) in a run without faults that can take a lease: {}",
                sec.key,
                end.outcome,
                describe(sec)
            ));
        } else if end.release == Release::Ok && !restarts.iter().any(|r| r.t_start < end.t_rel) {
            s.violation(format!(
                "key {}: rejected ({:?}) though its release confirmed it held the lease: {}",
                sec.key,
                end.outcome,
                describe(sec)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn fault(kind: &str, worker: Option<u32>, t_start: u64, t_end: u64) -> Fault {
        Fault {
            kind: kind.into(),
            worker,
            t_start,
            t_end,
            detail: String::new(),
        }
    }

    #[test]
    fn store_wide_faults_move_the_liveness_deadline() {
        let kill = 10 * S;
        // Faults aimed at one worker leave it where it is.
        let stop = fault("stop", Some(2), 11 * S, 13 * S);
        assert_eq!(
            liveness_deadline(kill, 3 * S, std::slice::from_ref(&stop)),
            13 * S
        );
        // A restart within the wait counts from its end, and one after it from its end too.
        let restart = fault("restart", None, 12 * S, 14 * S);
        let delay = fault("delay", None, 16 * S, 17 * S);
        assert_eq!(
            liveness_deadline(kill, 3 * S, &[delay, stop, restart]),
            20 * S
        );
        // Faults over before the kill, or begun after the deadline, do not count.
        let before = fault("drop", None, 5 * S, 9 * S);
        let after = fault("drop", None, 18 * S, 19 * S);
        assert_eq!(liveness_deadline(kill, 3 * S, &[before, after]), 13 * S);
    }
}
