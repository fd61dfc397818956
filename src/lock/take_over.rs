//! [`Lock::take_over`]: taking a held lock by force, in one atomic step of the store.

use tokio::time::Instant;

use super::Lock;
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::observe::{self, op_span};
use crate::store::{AcquireRequest, Displaced, StoreError, StoreErrorKind, TakeOver};

/// What [`Lock::take_over`] took: the guard of our new holding, and whose live lease it
/// replaced.
#[derive(Debug)]
pub struct TakenOver {
    /// Our holding, with a fence greater than the displaced holder's.
    pub guard: Guard,
    /// The holder whose live lease we replaced; `None` when the key was free or expired.
    pub displaced: Option<Displaced>,
}

impl Lock {
    /// Takes the lock whoever holds it, in one atomic step of the store (locky's
    /// `lock({ force: true })`): unlike [`force_release`](Lock::force_release) then
    /// [`acquire`](Lock::acquire), nobody can take the key in between. The new holding has a
    /// fence greater than every earlier one of the key, this lock's ttl and metadata. The
    /// displaced holder finds out at its next check: its next extend, release or metadata
    /// update answers [`Error::NotOwned`], its watchdog fires its lost signal, and its
    /// [`run`](Lock::run) returns [`Error::Lost`]. A fence-checking resource rejects its
    /// writes from now on. Waiters for the key keep waiting.
    ///
    /// Fails with [`Error::Unsupported`] on a store that cannot do it in one step
    /// ([`Capabilities::take_over`](crate::Capabilities::take_over) is `false`: Redlock),
    /// [`Error::InvalidInput`] for a bad key or ttl, and [`Error::Store`] when the store fails.
    /// Never waits for the holder and never retries.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// let locks = cadenas::Locks::memory();
    /// let stuck = locks.lock("nightly").with_owner("crashed-worker").acquire().await?;
    /// let taken = locks.lock("nightly").with_owner("rescuer").take_over().await?;
    /// let displaced = taken.displaced.expect("someone held it");
    /// assert_eq!(displaced.owner, "crashed-worker");
    /// assert!(taken.guard.fence() > stuck.fence());
    /// // The old holder learns it at its next check.
    /// assert!(matches!(stuck.extend(None).await, Err(cadenas::Error::NotOwned { .. })));
    /// taken.guard.release().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future never leaves the lock held by us unseen. On stores shared across
    /// processes the request runs to completion in a task of its own, and a holding it took
    /// after the caller was dropped is released. The take-over itself may still have
    /// happened: the displaced holder has lost its lease either way, and the key is free
    /// once the clean-up release has run.
    pub async fn take_over(&self) -> Result<TakenOver> {
        let span = op_span!("cadenas.take_over", self);
        observe::traced!(span, self.take_over_inner(), |result| match result {
            Ok(TakenOver {
                displaced: Some(_), ..
            }) => "taken_over",
            Ok(_) => "acquired",
            Err(e) => observe::error_outcome(e),
        })
    }

    async fn take_over_inner(&self) -> Result<TakenOver> {
        self.check()?;
        let store = self.store();
        let caps = store.capabilities();
        if !caps.take_over {
            return Err(self.take_over_unsupported());
        }
        if self.kind != crate::LockKind::Exclusive {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: format!(
                    "taking over a {} holding of key '{}' (only exclusive locks are taken over)",
                    self.kind.name(),
                    self.key
                ),
            });
        }
        if self.ttl.is_none() && !caps.ttl_none {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: "locks without ttl".into(),
            });
        }
        // Measured before the request is sent, so our view of the lease never outlives the
        // store's.
        let sent = Instant::now();
        let answer = if caps.shared {
            self.take_over_detached().await
        } else {
            // An in-process store answers without suspending: nothing to cancel mid-way.
            store
                .take_over(
                    AcquireRequest::new(&self.stored, &self.owner, self.ttl)
                        .with_recorded(self.recorded)
                        .with_metadata(self.metadata.as_deref()),
                )
                .await
        };
        match answer {
            Ok(t) => Ok(TakenOver {
                guard: Guard::new(self.clone(), t.lease, sent),
                displaced: t.displaced,
            }),
            Err(e) if e.kind == StoreErrorKind::Unsupported => Err(self.take_over_unsupported()),
            Err(e) => Err(self.store_error("take over", e)),
        }
    }

    fn take_over_unsupported(&self) -> Error {
        Error::Unsupported {
            store: self.store().describe().to_owned(),
            what: "taking a held lock over in one atomic step".into(),
        }
    }

    /// Runs the request in its own task (`stores::detach`), so that it
    /// completes even if our caller is cancelled; a holding it took for a caller that is
    /// gone is released.
    async fn take_over_detached(&self) -> std::result::Result<TakeOver, StoreError> {
        let (store, gone) = (self.store().clone(), self.store().clone());
        let (key, owner) = (self.stored.clone(), self.owner.clone());
        let (k, o) = (key.clone(), owner.clone());
        let (ttl, metadata) = (self.ttl, self.metadata.clone());
        let request = async move {
            let request = AcquireRequest::new(&key, &owner, ttl).with_metadata(metadata.as_deref());
            store.take_over(request).await
        };
        let release = move || {
            let (gone, k, o) = (gone.clone(), k.clone(), o.clone());
            async move { gone.release(&k, &o).await }
        };
        let describe = self.store().describe();
        crate::stores::detach::run(&self.stored, describe, request, |_| true, release).await
    }
}
