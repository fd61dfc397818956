//! cadenas: distributed locks.
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod duration;
mod error;
mod events;
mod guard;
mod key;
mod lock;
mod locks;
mod manager;
pub mod notify;
mod retry;
pub mod store;
pub mod stores;
mod token;
pub mod url;

pub use duration::{format_duration, parse_duration, parse_ttl};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use guard::{Guard, LostSignal};
pub use key::{new_owner, MAX_KEY_BYTES, MAX_METADATA_BYTES};
pub use lock::Lock;
pub use locks::{Locks, LocksBuilder, DEFAULT_TTL};
pub use manager::{Manager, ManagerBuilder};
pub use retry::Retry;
pub use store::{
    Acquire, AcquireRequest, Capabilities, Holder, Lease, LockInfo, ReleaseWait, Store, StoreError,
    StoreErrorKind, Subscription,
};
