//! The waits of session mode: one task per key waited for in this process, blocked in the
//! server's own wait on a connection of its own, waking the key's waiters one at a time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::{Dialect, SessionLocks};
use crate::store::ReleaseWait;

/// What the waiters of one key share with the task waiting on the server for them.
#[derive(Debug, Default)]
pub(super) struct WaitShared {
    /// The task to one waiter: the key was free.
    wake: Notify,
    /// A waiter to the task: I am waiting (again), or gone.
    want: Notify,
    /// Waiters inside `released`.
    wanting: AtomicUsize,
    /// Every subscription is gone.
    stopped: AtomicBool,
    /// The ticket the next subscription gets.
    next_ticket: AtomicU64,
    /// The tickets of the live subscriptions, in the order they came.
    tickets: Mutex<BTreeSet<u64>>,
}

impl WaitShared {
    fn tickets(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // Every change under the mutex is one insert or removal: safe after a panic.
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waiters of one key in this process; the waiting task stops when the last goes.
#[derive(Debug)]
pub(super) struct KeyWait {
    pub(super) shared: Arc<WaitShared>,
}

impl Drop for KeyWait {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.want.notify_one();
    }
}

/// One waiter's subscription, with its place among the key's waiters in this process.
pub(super) struct Waiter {
    wait: Arc<KeyWait>,
    ticket: u64,
}

impl Waiter {
    /// A new subscription to `wait`, behind those before it.
    pub(super) fn new(wait: Arc<KeyWait>) -> Waiter {
        let shared = &wait.shared;
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        shared.tickets().insert(ticket);
        Waiter { wait, ticket }
    }
}

/// Counts a waiter inside `released` while it is there.
struct Wanting<'a>(&'a AtomicUsize);

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ReleaseWait for Waiter {
    async fn released(&mut self) {
        let s = &self.wait.shared;
        s.wanting.fetch_add(1, Ordering::SeqCst);
        let _wanting = Wanting(&s.wanting);
        s.want.notify_one();
        s.wake.notified().await;
    }

    fn pass_on(&mut self) {
        self.wait.shared.wake.notify_one();
    }

    /// The waiters of this process that subscribed before this one and still wait: only
    /// the first of a key's waiters polls, so many waiters do not flood the connections.
    fn ahead(&self) -> usize {
        self.wait.shared.tickets().range(..self.ticket).count()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let shared = &self.wait.shared;
        shared.tickets().remove(&self.ticket);
        // Whoever was woken is done: the task may wait again for the others.
        shared.want.notify_one();
    }
}

/// The task waiting on the server for the waiters of `key`: while one wants, it blocks in
/// the server's wait on a connection of its own (one the store kept from an earlier wait, or
/// a new one), then wakes one waiter and gives it a moment to try before waiting again. Its
/// connection is kept for the next wait when the key's last waiter goes.
pub(super) async fn wait_for<D: Dialect>(
    me: Weak<SessionLocks<D>>,
    key: String,
    shared: Arc<WaitShared>,
) {
    let mut conn: Option<(D::Conn, OwnedSemaphorePermit)> = None;
    let mut backoff = Duration::from_millis(20);
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        if shared.wanting.load(Ordering::SeqCst) == 0 {
            shared.want.notified().await;
            continue;
        }
        let Some(store) = me.upgrade() else { break };
        if conn.is_none() {
            conn = store.idle_wait();
        }
        if conn.is_none() {
            // Without a connection (none free, or the server is down) waiters poll.
            let slot = tokio::select! {
                slot = store.wait_slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                // A wait that ended kept its connection (and slot): take that one.
                () = store.idle_ready.notified() => continue,
            };
            match store.dialect.connect().await {
                Ok((c, _)) => conn = Some((c, slot)),
                Err(e) => {
                    tracing::debug!(store = %store.describe, error = %e, "cadenas: no waiting connection; waiters poll");
                    drop(store);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = &mut conn.as_mut().expect("connected").0;
        let dialect = store.dialect.clone();
        drop(store);
        match dialect.wait(c, &key).await {
            Ok(true) => {
                backoff = Duration::from_millis(20);
                shared.wake.notify_one();
                // The woken waiter tries, then waits again or goes: either says so.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), shared.want.notified()).await;
            }
            Ok(false) => {}
            Err(_) => {
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    if let Some(wait) = conn {
        match me.upgrade() {
            Some(store) => store.keep_wait(wait).await,
            None => {
                let _ = sqlx::Connection::close(wait.0).await;
            }
        }
    }
}
