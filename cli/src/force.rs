//! `--force` of `acquire` and `exec`: take KEY whoever holds it, in one atomic step.

use cadenas::{Error, Guard, Lock, Retry};

/// Takes the lock: by force with `force` (one atomic take-over, naming whom it displaced on
/// stderr), else waiting as `retry` says.
pub(super) async fn take(lock: &Lock, retry: &Retry, force: bool) -> Result<Guard, Error> {
    if !force {
        return super::output::acquire_showing_holder(lock, retry).await;
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
