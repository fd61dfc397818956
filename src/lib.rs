//! cadenas: distributed locks.
#![forbid(unsafe_code)]

pub mod duration;
mod error;
mod key;
pub mod notify;
pub mod store;
pub mod stores;
pub mod url;

pub use duration::{format_duration, parse_duration, parse_ttl};
pub use error::{Error, Result};
pub use key::{new_owner, MAX_KEY_BYTES, MAX_METADATA_BYTES};
pub use store::{
    Acquire, AcquireRequest, Capabilities, Holder, Lease, LockInfo, ReleaseWait, Store,
    StoreError, StoreErrorKind, Subscription,
};
