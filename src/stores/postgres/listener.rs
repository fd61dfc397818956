//! The one `LISTEN` connection of a PostgreSQL store.
//!
//! Started on the first [`subscribe`](crate::Store::subscribe), it runs in a spawned task on
//! a connection of its own (a private pool of size 1 built from the store's connect
//! options), never one of the store's pool — so a store whose pool has one connection cannot
//! deadlock between waiting for a notification and taking the lock. Each `NOTIFY` payload
//! (a released key) is dispatched into the store's [`ReleaseNotifier`]. After the connection
//! is lost and re-established every waiter is woken, since releases may have been missed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::notify::ReleaseNotifier;

/// Where the listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// The first connection is being made.
    Starting,
    /// `LISTEN` is active.
    Listening,
    /// Disconnected; retrying in the background (waiters fall back to polling).
    Down,
}

/// A running listener task; aborted when dropped.
#[derive(Debug)]
pub(super) struct Listener {
    task: JoinHandle<()>,
    state: watch::Receiver<State>,
    pool: PgPool,
}

impl Listener {
    /// Starts listening on `channel` over a connection from `pool` (which must be the
    /// listener's own pool).
    pub(super) fn start(pool: PgPool, channel: String, notifier: Arc<ReleaseNotifier>) -> Self {
        let (tx, state) = watch::channel(State::Starting);
        let task = tokio::spawn(run(pool.clone(), channel, notifier, tx));
        Listener { task, state, pool }
    }

    /// Waits until the first connection attempt has succeeded or failed, at most `limit`.
    pub(super) async fn started(&self, limit: Duration) -> State {
        let mut rx = self.state.clone();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s != State::Starting)).await;
        let state = *rx.borrow();
        state
    }

    /// Stops the task and closes its connection.
    pub(super) async fn stop(&self) {
        self.task.abort();
        self.pool.close().await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

async fn run(
    pool: PgPool,
    channel: String,
    notifier: Arc<ReleaseNotifier>,
    state: watch::Sender<State>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&pool, &channel).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cadenas: postgres LISTEN connection failed; waiters poll until it is back");
                state.send_replace(State::Down);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let was = state.send_replace(State::Listening);
        if was != State::Starting {
            // Releases while we were away went unheard.
            notifier.notify_all();
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => notifier.notify(n.payload()),
                // The connection dropped and was re-established (with LISTEN) already.
                Ok(None) => notifier.notify_all(),
                Err(e) => {
                    tracing::warn!(error = %e, "cadenas: postgres LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
        drop(listener);
        state.send_replace(State::Down);
        notifier.notify_all();
        tokio::time::sleep(backoff).await;
    }
}
