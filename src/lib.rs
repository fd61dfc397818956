//! Distributed locks: one API over memory, SQLite, Redis, Redis Cluster, Redlock, PostgreSQL
//! and MySQL, with fencing tokens, a lost-lock signal and hand-off by notification.
//!
//! - [`Locks`] makes locks over one store ([`Locks::connect`] takes a URL such as `memory:`,
//!   `sqlite://locks.db`, `redis://host:6379`, `postgres://host/db`);
//!   [`Manager`] holds several named stores.
//! - [`Lock`] is one named lock; [`Lock::acquire`] waits per its [`Retry`] policy and returns a
//!   [`Guard`] that holds the lease, knows its [`fence`](Guard::fence), tells when it is
//!   [`lost`](Guard::lost), and [`release`](Guard::release)s it.
//! - [`Locks::election`] runs a leader election over a lock: [`Election::campaign`] waits
//!   until this candidate leads and returns a [`Leadership`] whose [`term`](Leadership::term)
//!   is a fence; [`Election::observe`] follows the changes (see [`election`]).
//! - [`Locks::semaphore`] makes a semaphore (up to N holders of one key, each with its own
//!   lease and fence), [`Locks::read`] and [`Locks::write`] the two sides of a read-write
//!   lock; both are [`Lock`]s of another [`LockKind`], with the same guards.
//! - [`Store`] is the contract a backend implements; [`stores`] has the built-in ones, and
//!   the `conformance` module (feature `conformance`) is what each must pass.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
//! let locks = cadenas::Locks::memory();
//! let guard = locks.lock("migration").try_acquire().await?;
//! assert!(locks.lock("migration").try_acquire().await.is_err());
//! guard.release().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod duration;
pub mod election;
mod error;
mod events;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod key;
mod kind;
mod lock;
mod locks;
mod manager;
pub mod notify;
pub mod observe;
mod retry;
mod scheme;
pub mod store;
pub mod stores;
mod token;
pub mod url;
mod watch;

pub use duration::{format_duration, parse_duration, parse_ttl};
pub use election::{Election, Leader, LeaderChange, Leadership, Observer, DEFAULT_POLL_INTERVAL};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use guard::{Guard, LostSignal};
pub use key::{new_owner, MAX_KEY_BYTES, MAX_METADATA_BYTES};
pub use lock::Lock;
pub use lock::TakenOver;
pub use locks::{Locks, LocksBuilder, DEFAULT_TTL};
pub use manager::{Manager, ManagerBuilder};
pub use retry::Retry;
pub use store::{
    Acquire, AcquireRequest, Capabilities, Holder, HolderInfo, Lease, LockInfo, LockKind,
    ReleaseWait, Store, StoreError, StoreErrorKind, Subscription, MAX_PERMITS,
};
pub use store::{Displaced, TakeOver};
pub use watch::{ExpiryWatcher, DEFAULT_WATCH_INTERVAL};
