//! [`LockKind`]: how a holding shares its key (a mutex, a reader, a semaphore's permit).

#[cfg(doc)]
use crate::store::{AcquireRequest, StoreErrorKind};

/// How a holding shares its key.
///
/// A key is held one way at a time: by one exclusive holder, by a group of shared holders
/// (readers), or by up to N permit holders of a semaphore. A request of another kind finds
/// the key held. The permit count N lives with the key while anyone holds a permit; a
/// request with another N while it is held is refused ([`StoreErrorKind::InvalidInput`]),
/// and once the last permit is gone the key forgets its N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// One holder: a mutex, or the write side of a read-write lock.
    #[default]
    Exclusive,
    /// Any number of holders at once: the read side of a read-write lock. Excluded by an
    /// exclusive holder, and held back while a writer waits
    /// ([`AcquireRequest::writer_waiting`]).
    Shared,
    /// One of this many permits of a semaphore: up to N holders at once (1 ..=
    /// [`MAX_PERMITS`]).
    Permits(u32),
}

/// The most permits a semaphore may have.
pub const MAX_PERMITS: u32 = 10_000;

impl LockKind {
    /// The kind's name in messages and output: `exclusive`, `shared` or `permits`.
    pub fn name(&self) -> &'static str {
        match self {
            LockKind::Exclusive => "exclusive",
            LockKind::Shared => "shared",
            LockKind::Permits(_) => "permits",
        }
    }
}
