//! How `exec` and `acquire` take the lock: their shared flags (`--permits`, `--shared`,
//! `--force`, `--wait`, …) and the lock and retry policy made of them.

use std::time::Duration;

use clap::Args;

use cadenas::{Error, LockKind, Locks, Retry};

use super::{open, StoreArg, EXIT_CONFLICT};

/// How `exec` and `acquire` take the lock.
#[derive(Debug, Args)]
pub(crate) struct HoldArgs {
    #[command(flatten)]
    pub(crate) store: StoreArg,
    /// Lease length (or `none`); `exec` renews it every third of it while CMD runs
    #[arg(
        long,
        default_value = "30s",
        value_name = "DUR|none",
        allow_hyphen_values = true
    )]
    pub(crate) ttl: String,
    /// How long to wait for the lock: `0` tries once; default: forever
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    pub(crate) wait: Option<String>,
    /// Owner id to hold the lock as (default: a random id)
    #[arg(long, value_name = "S")]
    pub(crate) owner: Option<String>,
    /// Metadata stored with the lock, shown by `status`
    #[arg(long, value_name = "S")]
    pub(crate) metadata: Option<String>,
    /// Exit code when the lock is not acquired in time
    #[arg(long, default_value_t = EXIT_CONFLICT, value_name = "N")]
    pub(crate) conflict_exit_code: u8,
    /// Hold one of N permits of the semaphore KEY: at most N holders at once, each with its
    /// own lease and fence. Every holder of KEY must give the same N (1 to 10000)
    #[arg(long, value_name = "N", value_parser = parse_permits, conflicts_with = "shared")]
    pub(crate) permits: Option<u32>,
    /// Hold KEY as a reader: readers share it; the plain form (no --shared) is its writer,
    /// which excludes readers and is preferred over new readers once it waits
    #[arg(long)]
    pub(crate) shared: bool,
    /// Take KEY even if it is held, in one atomic step: the holder loses it at its next
    /// check (its `exec` exits 76) and the new holding has a higher fence; whom it displaced
    /// goes to stderr. Exclusive holdings only (not with --shared or --permits). Exit 2 on a
    /// store that cannot do it in one step (redlock://)
    #[arg(long, conflicts_with_all = ["wait", "shared", "permits"])]
    pub(crate) force: bool,
}

/// How a holding shares its key, from `--permits N` and `--shared` (else exclusive).
pub(crate) fn kind_of(permits: Option<u32>, shared: bool) -> LockKind {
    match (permits, shared) {
        (Some(n), _) => LockKind::Permits(n),
        (None, true) => LockKind::Shared,
        (None, false) => LockKind::Exclusive,
    }
}

/// `--permits`: a count of 1 to [`MAX_PERMITS`](cadenas::MAX_PERMITS).
pub(crate) fn parse_permits(text: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "'{text}' is not a permit count: a semaphore has 1 to {} permits",
            cadenas::MAX_PERMITS
        )
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=cadenas::MAX_PERMITS).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// `--wait`: absent = forever, `0` = once, else a duration.
fn retry_for(wait: Option<&str>) -> Result<Retry, Error> {
    let retry = Retry::default().delay(Duration::from_millis(100));
    match wait.map(str::trim) {
        None | Some("forever") => Ok(retry),
        Some("0") | Some("0s") | Some("0ms") => Ok(Retry::once()),
        Some(d) => Ok(retry.timeout(cadenas::parse_duration("wait", d)?)),
    }
}

/// The lock of KEY of `kind`: a mutex, a reader, or a permit of a semaphore.
pub(crate) fn lock_of(locks: &Locks, key: &str, kind: LockKind) -> cadenas::Lock {
    match kind {
        LockKind::Exclusive => locks.lock(key),
        LockKind::Shared => locks.read(key),
        LockKind::Permits(n) => locks.semaphore(key, n),
    }
}

fn build_lock(
    locks: &Locks,
    key: &str,
    kind: LockKind,
    ttl: &str,
    owner: Option<String>,
    metadata: Option<String>,
) -> Result<cadenas::Lock, Error> {
    let mut lock = lock_of(locks, key, kind).with_ttl(cadenas::parse_ttl(ttl)?);
    if let Some(o) = owner {
        lock = lock.with_owner(o);
    }
    if let Some(m) = metadata {
        lock = lock.with_metadata(m);
    }
    Ok(lock)
}

/// Opens the store and makes the lock and retry policy that `exec` and `acquire` share.
pub(crate) async fn prepare(hold: HoldArgs, key: &str) -> Result<(cadenas::Lock, Retry), Error> {
    let retry = retry_for(hold.wait.as_deref())?;
    let kind = kind_of(hold.permits, hold.shared);
    let locks = open(hold.store).await?;
    let lock = build_lock(&locks, key, kind, &hold.ttl, hold.owner, hold.metadata)?;
    Ok((lock, retry))
}
