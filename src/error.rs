//! The one error type of cadenas.

use std::time::Duration;

use crate::store::{StoreError, StoreErrorKind};

/// Everything that can go wrong, for every store. Messages name the key and the store (never a
/// password) and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `acquire` gave up: the retry policy's timeout or attempts ran out.
    #[error("lock '{key}' on {store} is still held{} after waiting {}: {attempts} attempt(s) made; raise the timeout or find the holder with `cadenas status`", holder_text(.holder), humantime::format_duration(*.waited))]
    Timeout {
        /// The key (without namespace).
        key: String,
        /// The store, without password.
        store: String,
        /// How many tries were made.
        attempts: u32,
        /// How long we waited.
        waited: Duration,
        /// The holder when last seen, if the store told us.
        holder: Option<String>,
    },

    /// `try_acquire` found the lock held.
    #[error("lock '{key}' on {store} is already held{}{}", holder_text(.holder), remaining_text(.remaining))]
    AlreadyLocked {
        /// The key (without namespace).
        key: String,
        /// The store, without password.
        store: String,
        /// The holder, if the store told us.
        holder: Option<String>,
        /// Time left on the holder's lease, if known.
        remaining: Option<Duration>,
    },

    /// Release, extend or metadata update by someone who does not hold the lock.
    #[error("lock '{key}' on {store} is not held by owner '{owner}' (it expired, was released, or someone else holds it)")]
    NotOwned {
        /// The key (without namespace).
        key: String,
        /// The store, without password.
        store: String,
        /// The owner that tried.
        owner: String,
    },

    /// Our lease is gone: it expired, was force-released or taken over, or could not be
    /// confirmed before it would expire. Whatever the lock protected may have run twice.
    #[error("lock '{key}' on {store} was lost: {reason}")]
    Lost {
        /// The key (without namespace).
        key: String,
        /// The store, without password.
        store: String,
        /// Why we think so.
        reason: String,
    },

    /// A bad key, duration, owner, metadata or token.
    #[error("invalid {what}: {message}")]
    InvalidInput {
        /// What was bad: "key", "ttl", "token", ...
        what: &'static str,
        /// What is wrong with it and what is accepted.
        message: String,
    },

    /// A bad store URL or setting.
    #[error("configuration error: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The store cannot do this (a missing cargo feature, or a capability it lacks).
    #[error("{store} does not support {what}")]
    Unsupported {
        /// The store (or URL scheme).
        store: String,
        /// What was asked.
        what: String,
    },

    /// The store failed.
    #[error("{store}: {operation}{} failed: {source}", key_text(.key))]
    Store {
        /// The store, without password.
        store: String,
        /// The operation that failed.
        operation: &'static str,
        /// The key involved, if any (without namespace).
        key: Option<String>,
        /// The driver's error and its kind.
        #[source]
        source: StoreError,
    },
}

fn holder_text(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(" by '{h}'"))
        .unwrap_or_default()
}

fn remaining_text(remaining: &Option<Duration>) -> String {
    remaining
        .map(|r| {
            let ms = Duration::from_millis(r.as_millis() as u64);
            format!(" for {} more", humantime::format_duration(ms))
        })
        .unwrap_or_default()
}

fn key_text(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" of lock '{k}'"))
        .unwrap_or_default()
}

impl Error {
    /// Whether retrying the same call later may succeed (store outages, contention).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::AlreadyLocked { .. } => true,
            Error::Store { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// Whether the store could not be reached at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Store { source, .. } if source.kind == StoreErrorKind::Unavailable)
    }

    /// Whether the lock was held by someone else (`Timeout` or `AlreadyLocked`).
    pub fn is_contended(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::AlreadyLocked { .. })
    }

    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            message: message.into(),
        }
    }

    /// A failed store operation: `store` as it describes itself, the `operation`, the key
    /// (without namespace) if one was involved, and the store's error.
    pub(crate) fn store(
        store: &str,
        operation: &'static str,
        key: Option<&str>,
        source: StoreError,
    ) -> Self {
        Error::Store {
            store: store.to_owned(),
            operation,
            key: key.map(str::to_owned),
            source,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
