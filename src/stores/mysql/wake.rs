//! Waking the waiters of other processes in lease mode, on a server that has no notification
//! channel.
//!
//! A store whose tasks wait keeps one connection of its own, outside the pool, that holds
//! the user lock `cadenas-waiter:<token>` (`GET_LOCK`; the token is random per store) and
//! otherwise sleeps in `SELECT SLEEP(60)`, over and over. A try that finds a key held by
//! another process, while a task of this store waits for it, writes the token into the
//! row's `waiters` column, in the acquiring transaction. A release or force release of a row
//! whose `waiters` is set reads it and deletes the row in one transaction, then, for each
//! token, asks the server which connection holds its user lock (`IS_USED_LOCK`) and ends
//! that connection's sleep (`KILL QUERY`). The woken store wakes the first waiter of each key
//! it waits for (it is not told which key was released), and those try again.
//!
//! `KILL QUERY` only ever reaches a sleeping connection of a store: a token whose store is
//! gone holds no user lock and is skipped, and the server does not reuse a connection id
//! while it runs. Waking is best effort. A release by a Verrou process, one by a user without
//! the right to end another user's query (`CONNECTION_ADMIN` or `SUPER`; the same user
//! always may), or one that comes while the sleeper is between two sleeps wakes nobody, and
//! the waiter polls at the lock layer's delay as it would without this.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool};
use sqlx::ConnectOptions;
use tokio::task::AbortHandle;

use super::errors::error_number;
use crate::notify::ReleaseNotifier;

/// The prefix of a sleeper's user lock; the token follows.
const WAITER_LOCK: &str = "cadenas-waiter:";

/// Seconds of each sleep: a sleep that runs out is simply begun again.
const SLEEP: &str = "SELECT SLEEP(60)";

/// MySQL's "query execution was interrupted", what MariaDB answers for a killed `SLEEP`.
const INTERRUPTED: u16 = 1317;

/// How long starting the sleeper may take before waiters go on without it (and poll).
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The most sleepers one release wakes: the tokens of a row beyond them wait for their poll.
const MOST_WOKEN: usize = 32;

/// This store's side of cross-process wake-ups: its sleeper, and the keys it holds (a
/// waiter behind a holder of this store needs no wake-up from the server).
pub(super) struct Wakeups {
    token: String,
    options: MySqlConnectOptions,
    notifier: Arc<ReleaseNotifier>,
    /// Keys this store holds (taken and not yet released through it).
    held: Mutex<HashSet<String>>,
    /// The sleeper is connected, holds its user lock and sleeps.
    up: Arc<AtomicBool>,
    sleeper: tokio::sync::Mutex<Option<AbortHandle>>,
}

/// Without the connect options, which hold the password.
impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("token", &self.token)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Wakeups {
    /// Wake-ups for a store connecting with `options`, whose waiters are `notifier`'s.
    pub(super) fn new(options: MySqlConnectOptions, notifier: Arc<ReleaseNotifier>) -> Wakeups {
        Wakeups {
            token: format!("{:016x}", rand::random::<u64>()),
            options,
            notifier,
            held: Mutex::new(HashSet::new()),
            up: Arc::new(AtomicBool::new(false)),
            sleeper: tokio::sync::Mutex::new(None),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Every change under the mutex is a single insert or removal: safe after a panic.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` was taken through this store.
    pub(super) fn taken(&self, key: &str) {
        self.held().insert(key.to_owned());
    }

    /// `key` is no longer held through this store (or never was).
    pub(super) fn given_up(&self, key: &str) {
        self.held().remove(key);
    }

    /// The token to write into a held `key`'s row, if a task of this store waits for it,
    /// the holder is another process's and the sleeper is up to be woken.
    pub(super) fn token_for(&self, key: &str) -> Option<&str> {
        let wanted = self.up.load(Ordering::Acquire)
            && self.notifier.has_subscribers(key)
            && !self.held().contains(key);
        wanted.then_some(self.token.as_str())
    }

    /// Starts the sleeper unless it is up. Waiters go on without it (and poll) if it
    /// cannot be started.
    pub(super) async fn listen(&self) {
        if self.up.load(Ordering::Acquire) {
            return;
        }
        let mut sleeper = self.sleeper.lock().await;
        if self.up.load(Ordering::Acquire) {
            return;
        }
        if let Some(old) = sleeper.take() {
            old.abort();
        }
        match tokio::time::timeout(START_TIMEOUT, self.connect()).await {
            Ok(Ok(conn)) => {
                self.up.store(true, Ordering::Release);
                let task = tokio::spawn(sleep_loop(conn, self.notifier.clone(), self.up.clone()));
                *sleeper = Some(task.abort_handle());
            }
            Ok(Err(e)) => tracing::debug!(
                error = %e,
                "cadenas: MySQL waiters poll: their store could not open its wake-up connection"
            ),
            Err(_) => tracing::debug!(
                "cadenas: MySQL waiters poll: their store's wake-up connection took over {START_TIMEOUT:?}"
            ),
        }
    }

    /// The sleeper's connection, holding its user lock.
    async fn connect(&self) -> Result<MySqlConnection, sqlx::Error> {
        // Its sleeps are meant to be long: no slow-statement warnings for them.
        let options = self.options.clone().disable_statement_logging();
        let mut conn = options.connect().await?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(format!("{WAITER_LOCK}{}", self.token))
            .fetch_one(&mut conn)
            .await?;
        if got != Some(1) {
            return Err(sqlx::Error::Protocol(
                "the wake-up lock of this store is held by another connection".into(),
            ));
        }
        Ok(conn)
    }

    /// Ends the sleep of each store named in `waiters` (a released row's comma-separated
    /// tokens), but this one's, whose waiters the release woke already.
    pub(super) async fn wake(&self, pool: &MySqlPool, waiters: &str) {
        let tokens = waiters
            .split(',')
            .filter(|t| !t.is_empty() && *t != self.token)
            .take(MOST_WOKEN);
        for token in tokens {
            if let Err(e) = wake_one(pool, token).await {
                tracing::debug!(error = %e, "cadenas: a MySQL waiter of another process was not woken (it polls)");
            }
        }
    }

    /// Stops the sleeper (its connection closes with it).
    pub(super) fn stop(&self) {
        if let Ok(mut sleeper) = self.sleeper.try_lock() {
            if let Some(task) = sleeper.take() {
                task.abort();
            }
        }
        self.up.store(false, Ordering::Release);
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(task) = self.sleeper.get_mut().take() {
            task.abort();
        }
    }
}

/// Ends the sleep of the connection holding `token`'s user lock, if any does.
async fn wake_one(pool: &MySqlPool, token: &str) -> Result<(), sqlx::Error> {
    let id: Option<u64> = sqlx::query_scalar("SELECT CAST(IS_USED_LOCK(CONCAT(?, ?)) AS UNSIGNED)")
        .bind(WAITER_LOCK)
        .bind(token)
        .fetch_one(pool)
        .await?;
    if let Some(id) = id {
        // A number the server gave: nothing of the row's text reaches the statement.
        sqlx::raw_sql(&format!("KILL QUERY {id}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Sleeps on `conn` until it breaks; each interrupted sleep wakes the first waiter of every
/// key. When the connection breaks every waiter is woken (wake-ups may have been missed)
/// and the next waiter starts a new sleeper.
async fn sleep_loop(
    mut conn: MySqlConnection,
    notifier: Arc<ReleaseNotifier>,
    up: Arc<AtomicBool>,
) {
    loop {
        let slept: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar(SLEEP).fetch_one(&mut conn).await;
        match slept {
            Ok(Some(0)) => {}
            Ok(_) => notifier.notify_every_key(),
            Err(e) if error_number(&e) == Some(INTERRUPTED) => notifier.notify_every_key(),
            Err(e) => {
                tracing::debug!(error = %e, "cadenas: the MySQL wake-up connection broke");
                break;
            }
        }
    }
    up.store(false, Ordering::Release);
    notifier.notify_all();
}
