//! Lock events, broadcast per [`Locks`](crate::Locks): locky's lock/unlock/expire and
//! exclusive-lock's acquired/refreshed/released/error, for the leases this process holds —
//! plus, with the expiry watcher, expiries of anyone's locks.
//!
//! For one lease, events arrive in the order they happened and each once: `Acquired`, then
//! any number of `Extended`, then one of `Released`, `Expired` or `Lost` (nothing after it).
//! A receiver that falls more than 1024 events behind loses the oldest ones
//! (`RecvError::Lagged`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

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

/// The event stream of one [`Locks`](crate::Locks) and its clones.
///
/// Until someone subscribes, telling whether anyone listens is one relaxed load: a
/// broadcast channel's receiver count takes its lock, which every acquire and release would
/// otherwise pay twice.
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
    /// Whether [`subscribe`](Events::subscribe) was ever called.
    subscribed: AtomicBool,
}

impl Events {
    /// A stream whose receivers keep the last 1024 events.
    pub(crate) fn new() -> Events {
        Events {
            tx: broadcast::channel(1024).0,
            subscribed: AtomicBool::new(false),
        }
    }

    /// A receiver of the events sent from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        // Set before the receiver exists, so a sender that sees the receiver sees the flag.
        self.subscribed.store(true, Ordering::Release);
        self.tx.subscribe()
    }

    /// Whether a receiver exists now: building an event is worth it.
    pub(crate) fn listened(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.tx.receiver_count() > 0
    }

    /// Sends `event` to the receivers there are (none: dropped).
    pub(crate) fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}
