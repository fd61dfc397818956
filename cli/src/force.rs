//! `--force` of `acquire` and `exec`: take KEY whoever holds it, in one atomic step; and
//! the errors of a kind of holding the store does not hold.

use cadenas::{Error, Guard, Lock, LockKind, Retry};

/// Takes the lock: by force with `force` (one atomic take-over, naming whom it displaced on
/// stderr), else waiting as `retry` says.
pub(super) async fn take(lock: &Lock, retry: &Retry, force: bool) -> Result<Guard, Error> {
    if !force {
        let (flag, what) = match lock.kind() {
            LockKind::Exclusive => return super::output::acquire_showing_holder(lock, retry).await,
            LockKind::Shared => ("--shared", "read-write locks"),
            LockKind::Permits(_) => ("--permits", "semaphores"),
        };
        return super::output::acquire_showing_holder(lock, retry)
            .await
            .map_err(|e| match e {
                Error::Unsupported { store, what: gap } if gap.starts_with(what) => {
                    Error::Unsupported {
                        store,
                        what: format!(
                            "{gap}; {flag} needs a store that holds {what} (README, \"Semaphores \
                         and read-write locks\"); the plain, exclusive form works on every store"
                        ),
                    }
                }
                e => e,
            });
    }
    let taken = lock.take_over().await.map_err(|e| match e {
        Error::Unsupported { store, what } if what.contains("atomic step") => Error::Unsupported {
            store,
            what: format!(
                "{what}, so --force cannot be used with it; `cadenas release --force {}` then \
                 `cadenas acquire {}` is the two-step substitute (another process may take the \
                 lock in between)",
                lock.key(),
                lock.key()
            ),
        },
        e => e,
    })?;
    if let Some(d) = &taken.displaced {
        let fence = d.fence.map(|f| format!(" (fence {f})")).unwrap_or_default();
        let new = match taken.guard.fence() {
            Some(f) => format!("; the new fence is {f}"),
            None => String::new(),
        };
        eprintln!(
            "cadenas: took lock '{}' over from owner '{}'{fence}{new}",
            lock.key(),
            d.owner
        );
    }
    Ok(taken.guard)
}
