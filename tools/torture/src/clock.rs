//! The `clock` fault: worker processes run under libfaketime (Debian's `faketime` package),
//! each with a file that says how its wall clock differs from the host's.
//!
//! What libfaketime does, and what we make it do:
//! - It intercepts `clock_gettime`, `gettimeofday`, `time` and the timed waits (`poll`,
//!   `epoll_wait`, `select`, `nanosleep`, …) of the process it is preloaded into.
//! - By default it fakes `CLOCK_MONOTONIC` (and `CLOCK_BOOTTIME`) too. We set
//!   `FAKETIME_DONT_FAKE_MONOTONIC=1`: a monotonic clock that jumps or runs at half speed is
//!   outside what any lease can survive (cadenas measures a holder's remaining time on it), and
//!   no real host does that; an NTP step or a drifting wall clock is what happens. Tokio's
//!   timers and `std::time::Instant` (both `CLOCK_MONOTONIC`) therefore read the true time.
//! - A rate (`x1.5`, `x0.5`) still scales the timeouts of the intercepted waits even with
//!   the monotonic clock left alone: tokio's timers of such a worker fire early or late in
//!   real time (its watchdog extends at ttl/3 × 2 at worst, still inside the lease).
//! - The file (`FAKETIME_TIMESTAMP_FILE`) is read again every second
//!   (`FAKETIME_CACHE_DURATION=1`): writing a new offset there steps the clock while the
//!   worker runs.
//! - A worker started in place of a killed one keeps that one's clock, as a process
//!   restarted on a host keeps the host's clock.
//!
//! Stores whose expiry is decided by the server's clock (Redis, Redlock, PostgreSQL, MySQL,
//! etcd) must not notice any of it. SQLite's "now" is the clock of the process running the
//! statement (the host's clock: every process on one host shares it), and DynamoDB compares
//! times its clients send: for those the fault steps every worker's clock at once (a host's
//! clock stepping), and a forward step expires every lease early by design — what keeps the
//! resource safe there is the fence.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::record::StoreKind;

/// Where Debian (and a `make install`) put the preload library; `CADENAS_TORTURE_LIBFAKETIME`
/// overrides.
const LIBRARY: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// How far one `clock` fault steps a clock.
pub const STEP_S: i64 = 10;

/// The preload library, checked to fake a clock (`date` under it must be 100 days ahead),
/// or a message saying how to get it.
pub fn library() -> Result<PathBuf> {
    let path = find_library()?;
    let out = std::process::Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", &path)
        .env("FAKETIME", "+100d")
        .output();
    let faked: Option<i64> = out
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    let ahead = faked.map(|t| t - wall_ms() / 1000);
    if !ahead.is_some_and(|d| (99 * 86_400..=101 * 86_400).contains(&d)) {
        bail!(
            "fault `clock`: libfaketime at {} does not fake the clock (`date` under it said {} \
             instead of 100 days ahead); install Debian's faketime or set \
             CADENAS_TORTURE_LIBFAKETIME to a working libfaketimeMT.so.1",
            path.display(),
            ahead.map_or("nothing".into(), |d| format!("{d} s from now"))
        );
    }
    Ok(path)
}

fn find_library() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CADENAS_TORTURE_LIBFAKETIME") {
        return Ok(PathBuf::from(path));
    }
    match LIBRARY.iter().map(Path::new).find(|p| p.exists()) {
        Some(p) => Ok(p.to_owned()),
        None => bail!(
            "fault `clock` needs libfaketime: install it (Debian/Ubuntu: apt-get install faketime) \
             or set CADENAS_TORTURE_LIBFAKETIME to the path of libfaketimeMT.so.1"
        ),
    }
}

/// Whether the store's expiry is decided by its clients' clocks (the host's, for SQLite).
pub fn host_clock(store: StoreKind) -> bool {
    matches!(store, StoreKind::Sqlite | StoreKind::Dynamodb)
}

/// One worker's fake wall clock: an offset from the host's and a rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub offset_s: i64,
    /// 1.0, 1.5 or 0.5.
    pub rate: f64,
}

impl Spec {
    /// The clock a new worker starts with: on server-clock stores one worker in three runs
    /// fast, one slow; on host-clock stores every worker shares the host's (no rate: two
    /// processes started at different times would disagree).
    pub fn initial(store: StoreKind, worker: u32) -> Spec {
        let rate = if host_clock(store) {
            1.0
        } else {
            [1.0, 1.5, 0.5][worker as usize % 3]
        };
        Spec { offset_s: 0, rate }
    }

    /// The clock after one step: away from zero up to ±2 steps, then back, and never back
    /// to the host's time (a step over zero goes on to the other side): libfaketime reads
    /// the file once a second, so a step undone within that second would show in no log.
    pub fn stepped(self, forward: bool) -> Spec {
        let step = if forward { STEP_S } else { -STEP_S };
        let mut offset_s = self.offset_s + step;
        if offset_s == 0 {
            offset_s += step;
        }
        if offset_s.abs() > 2 * STEP_S {
            offset_s = self.offset_s - step;
        }
        Spec { offset_s, ..self }
    }

    /// libfaketime's notation: `+10 x1.5`.
    pub fn text(self) -> String {
        format!("{:+} x{}", self.offset_s, self.rate)
    }

    pub fn write(self, path: &Path) -> Result<()> {
        // Written whole then renamed: the library never reads half a line.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", self.text()))?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn read(path: &Path) -> Option<Spec> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace();
        let offset_s = parts.next()?.parse().ok()?;
        let rate = parts.next()?.strip_prefix('x')?.parse().ok()?;
        Some(Spec { offset_s, rate })
    }
}

/// The environment that runs a worker under libfaketime with its clock in `file`.
pub fn env(library: &Path, file: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("LD_PRELOAD", library.as_os_str().to_owned()),
        ("FAKETIME_TIMESTAMP_FILE", file.as_os_str().to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ("FAKETIME_CACHE_DURATION", "1".into()),
    ]
}

/// The host's wall clock minus `now_ns` (CLOCK_MONOTONIC, which libfaketime leaves alone
/// here), in milliseconds: measured by the orchestrator (not under libfaketime) and handed to
/// its workers in `CADENAS_TORTURE_WALL_OFFSET`.
pub fn wall_offset_ms() -> i64 {
    wall_ms() - (crate::record::now_ns() / 1_000_000) as i64
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How far this process's wall clock (as libfaketime shows it) is from the host's, in
/// milliseconds, given the orchestrator's `wall_offset_ms`.
pub fn wall_skew_ms(host_offset_ms: i64) -> i64 {
    wall_offset_ms() - host_offset_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_stay_within_two() {
        let mut s = Spec::initial(StoreKind::Redis, 1);
        assert_eq!(s.text(), "+0 x1.5");
        for forward in [
            true, true, true, false, false, false, true, false, false, true,
        ] {
            s = s.stepped(forward);
            assert!(s.offset_s.abs() <= 2 * STEP_S, "{s:?}");
            assert!(s.offset_s.abs() >= STEP_S, "back to the host's time: {s:?}");
        }
        assert_eq!(Spec::initial(StoreKind::Sqlite, 1).rate, 1.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w1.faketime");
        Spec {
            offset_s: -10,
            rate: 0.5,
        }
        .write(&path)
        .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "-10 x0.5\n");
        assert_eq!(Spec::read(&path).unwrap().offset_s, -10);
    }

    #[test]
    fn no_skew_without_the_library() {
        assert!(wall_skew_ms(wall_offset_ms()).abs() < 1000);
    }
}
