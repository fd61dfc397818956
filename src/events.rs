//! Lock events, broadcast per [`Locks`](crate::Locks): locky's lock/unlock/expire and
//! exclusive-lock's acquired/refreshed/released/error, for the leases this process holds —
//! plus, with the expiry watcher, expiries of anyone's locks.
//!
//! For one lease, events arrive in the order they happened and each once: `Acquired`, then
//! any number of `Extended`, then one of `Released`, `Expired` or `Lost` (nothing after it).
//! A receiver that falls more than 1024 events behind loses the oldest ones
//! (`RecvError::Lagged`).

use std::time::Duration;

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// We took the lock.
    Acquired,
    /// We extended our lease (by hand or by the watchdog).
    Extended,
    /// We released it.
    Released,
    /// Our lease ran out without being extended or released.
    Expired,
    /// The watchdog or an extend found the lease gone or could not confirm it in time.
    Lost,
    /// The expiry watcher ([`Locks::watch_expiries`](crate::Locks::watch_expiries)) found this
    /// lock expired without release and removed it. About anyone's lock, not only ours; when
    /// several processes watch, exactly one reports each expiry. `owner` and `fence` are the
    /// last holder's.
    Reaped,
}

/// One event. `key` is the key as the user named it (without namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The lock's key.
    pub key: String,
    /// Our owner id (for [`EventKind::Reaped`]: the last holder's).
    pub owner: String,
    /// The fence of the lease, when the store has fencing.
    pub fence: Option<u64>,
    /// The lease length after the event (acquired/extended), `None` for no expiry or n/a.
    pub ttl: Option<Duration>,
}
