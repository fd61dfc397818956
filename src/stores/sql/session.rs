//! Session mode (`?mode=session`), written once for PostgreSQL and MySQL: a holding is the
//! server's own lock (a session advisory lock, `GET_LOCK`) on a connection this store keeps
//! open, and lives as long as that connection. Each dialect's `session.rs` writes the
//! statements ([`Dialect`]); this file keeps the connections, the holdings and the waits.
//!
//! - **Connections.** Up to `pool_size` connections hold locks; many locks share one
//!   (both servers allow any number of locks per session). A statement takes a free
//!   connection, opens a new one below the limit, or waits for a busy one up to
//!   `acquire_timeout` and then fails `Transient` with a message saying so: the limit is never
//!   exhausted silently. Waits (below) take connections of their own, at most `pool_size` more.
//! - **Holdings.** What the server cannot keep (owner, fence, metadata, the ttl) is kept here,
//!   per key. The servers' locks are re-entrant per session, so before a lock statement is
//!   sent on a connection this store checks, under that connection's mutex, that it does not
//!   hold the key already; a holding is recorded before that mutex is let go and forgotten
//!   only after its unlock, so no statement can re-enter a lock this store holds.
//! - **Ttl.** The server never expires a session lock. Here a ttl bounds how long a holding
//!   may go without a successful liveness check (an extend pings its connection): when it
//!   runs out the store unlocks it, and the holder's extend or release finds it gone. Any
//!   failed statement closes its connection, so a connection in doubt never keeps a lock; its
//!   holdings are lost, and their holders are told at their next extend or release.
//! - **Waits.** A waiter's [`Subscription`] shares one waiting connection per key with the
//!   process's other waiters of the key; it blocks in the server's own wait (`Dialect::wait`),
//!   which holds the lock for no longer than the statement, and wakes one waiter, which then
//!   tries. The waiters queue in the order they subscribed, and only the first polls when
//!   its pause runs out (`wait.rs`). A waiting statement lasts at most a second, so a wait
//!   nobody wants any more ends by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use sqlx::Connection as _;

mod wait;
use wait::{wait_for, KeyWait, WaitShared, Waiter};

use crate::store::{
    Acquire, AcquireRequest, Holder, Lease, LockInfo, StoreError, StoreErrorKind, Subscription,
};

/// What a server does for session mode: its statements on one connection.
#[async_trait]
pub(crate) trait Dialect: Send + Sync + std::fmt::Debug + 'static {
    /// The driver's connection.
    type Conn: sqlx::Connection + Send + 'static;
    /// What the server calls a session, for messages (`backend`, `connection`).
    const SESSION: &'static str;

    /// Opens a connection; answers it with the server's id of the session.
    async fn connect(&self) -> Result<(Self::Conn, u64), sqlx::Error>;
    /// Takes `key` without waiting: `Some(fence)` taken (`None` fence without fencing),
    /// `None` held by another session.
    async fn try_lock(
        &self,
        conn: &mut Self::Conn,
        key: &str,
    ) -> Result<Option<Option<u64>>, sqlx::Error>;
    /// Gives `key` back.
    async fn unlock(&self, conn: &mut Self::Conn, key: &str) -> Result<(), sqlx::Error>;
    /// Waits (at most about a second) until `key` is free, holding nothing afterwards:
    /// `true` when it was free.
    async fn wait(&self, conn: &mut Self::Conn, key: &str) -> Result<bool, sqlx::Error>;
    /// The session holding `key`, whoever it is.
    async fn holder(&self, conn: &mut Self::Conn, key: &str) -> Result<Option<u64>, sqlx::Error>;
    /// How to end session `id` by hand, for the message of a refused force release.
    fn end_session(&self, id: u64) -> String;
    /// A driver error while `what`, as a [`StoreError`].
    fn error(&self, e: sqlx::Error, what: &str) -> StoreError;
}

/// How long a statement waits for a connection when all are busy, and how many there are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections holding locks (`pool_size`); as many again may wait.
    pub connections: usize,
    /// `acquire_timeout`.
    pub busy_wait: Duration,
}

/// One connection of the store, holding any number of locks.
#[derive(Debug)]
struct Session<C> {
    id: u64,
    conn: Arc<Mutex<Option<C>>>,
    _slot: OwnedSemaphorePermit,
}

/// A lock this store holds.
#[derive(Debug)]
struct Holding<C> {
    id: u64,
    owner: String,
    fence: Option<u64>,
    metadata: Option<String>,
    deadline: Option<Instant>,
    session: Arc<Session<C>>,
    timer: Option<AbortHandle>,
}

/// The session-mode locks of one store.
#[derive(Debug)]
pub(crate) struct SessionLocks<D: Dialect> {
    dialect: Arc<D>,
    describe: String,
    runtime: Handle,
    limits: Limits,
    slots: Arc<Semaphore>,
    wait_slots: Arc<Semaphore>,
    /// Waiting connections that no wait uses now, with their slots, kept for the next wait:
    /// opening one costs a round trip or more (PostgreSQL starts a backend process for it),
    /// which a waiter would otherwise pay at each wait.
    idle_waits: StdMutex<Vec<(D::Conn, OwnedSemaphorePermit)>>,
    /// A waiting connection was kept: a wait queued for a slot takes it instead.
    idle_ready: Notify,
    sessions: StdMutex<Vec<Arc<Session<D::Conn>>>>,
    next: AtomicUsize,
    opened: Notify,
    ids: AtomicU64,
    held: StdMutex<HashMap<String, Holding<D::Conn>>>,
    waits: StdMutex<HashMap<String, Weak<KeyWait>>>,
    closed: AtomicBool,
    me: Weak<SessionLocks<D>>,
}

type Guard<C> = OwnedMutexGuard<Option<C>>;

impl<D: Dialect> SessionLocks<D> {
    /// The locks of store `describe` through `dialect`; spawns its tasks on the current runtime.
    pub(crate) fn new(dialect: D, describe: String, limits: Limits) -> Arc<Self> {
        Arc::new_cyclic(|me| SessionLocks {
            dialect: Arc::new(dialect),
            describe,
            runtime: Handle::current(),
            limits,
            slots: Arc::new(Semaphore::new(limits.connections)),
            wait_slots: Arc::new(Semaphore::new(limits.connections)),
            idle_waits: StdMutex::new(Vec::new()),
            idle_ready: Notify::new(),
            sessions: StdMutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            opened: Notify::new(),
            ids: AtomicU64::new(1),
            held: StdMutex::new(HashMap::new()),
            waits: StdMutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn this(&self) -> Arc<Self> {
        self.me.upgrade().expect("the store is alive while called")
    }

    fn err(&self, e: sqlx::Error, what: &str, key: &str) -> StoreError {
        self.dialect
            .error(e, &format!("{what} '{key}' on {}", self.describe))
    }

    /// Opens a connection on the store's runtime (its I/O then never depends on a caller's).
    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<Arc<Session<D::Conn>>, StoreError> {
        let dialect = self.dialect.clone();
        let opened = self
            .runtime
            .spawn(async move { dialect.connect().await })
            .await
            .map_err(|_| {
                StoreError::new(StoreErrorKind::Transient, "the runtime is shutting down")
            })?
            .map_err(|e| {
                self.dialect.error(
                    e,
                    &format!("opening a session connection to {}", self.describe),
                )
            })?;
        let session = Arc::new(Session {
            id: opened.1,
            conn: Arc::new(Mutex::new(Some(opened.0))),
            _slot: slot,
        });
        self.sessions.lock().unwrap().push(session.clone());
        self.opened.notify_waiters();
        Ok(session)
    }

    /// A connection for one statement: a free one, a new one, or a busy one waited for.
    async fn session(&self) -> Result<(Arc<Session<D::Conn>>, Guard<D::Conn>), StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!("{} is closed", self.describe),
            ));
        }
        let list = self.sessions.lock().unwrap().clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..list.len() {
            let s = &list[(start + i) % list.len()];
            if let Ok(g) = s.conn.clone().try_lock_owned() {
                if g.is_some() {
                    return Ok((s.clone(), g));
                }
            }
        }
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            let s = self.open(slot).await?;
            let g = s.conn.clone().lock_owned().await;
            return Ok((s, g));
        }
        let busy = || {
            StoreError::new(
                StoreErrorKind::Transient,
                format!(
                    "all {} session connections of {} stayed busy for {:?} (raise pool_size or acquire_timeout)",
                    self.limits.connections, self.describe, self.limits.busy_wait
                ),
            )
        };
        let deadline = Instant::now() + self.limits.busy_wait;
        loop {
            // Registered before looking, so a connection opened meanwhile is not missed.
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            let list = self.sessions.lock().unwrap().clone();
            let wait = async {
                match list.get(start % list.len().max(1)) {
                    Some(s) => Ok(Some((s.clone(), s.conn.clone().lock_owned().await))),
                    // The first connections are being opened, or every one was closed: wait
                    // for one to open, or open one when a slot frees up.
                    None => tokio::select! {
                        _ = opened => Ok(None),
                        slot = self.slots.clone().acquire_owned() => {
                            let slot = slot.map_err(|_| busy())?;
                            let s = self.open(slot).await?;
                            let g = s.conn.clone().lock_owned().await;
                            Ok(Some((s, g)))
                        }
                    },
                }
            };
            match tokio::time::timeout_at(deadline, wait).await {
                Err(_) => return Err(busy()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some((s, g)))) if g.is_some() => return Ok((s, g)),
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Closes a connection whose statement failed: whatever it held is given up with it, and
    /// its holdings are forgotten (their holders find out at their next check).
    fn close_session(&self, session: &Arc<Session<D::Conn>>, guard: &mut Guard<D::Conn>) {
        guard.take();
        self.sessions
            .lock()
            .unwrap()
            .retain(|s| !Arc::ptr_eq(s, session));
        let mut held = self.held.lock().unwrap();
        held.retain(|_, h| {
            let lost = Arc::ptr_eq(&h.session, session);
            if lost {
                if let Some(t) = &h.timer {
                    t.abort();
                }
            }
            !lost
        });
        tracing::warn!(store = %self.describe, session = session.id,
            "cadenas: a session connection failed and was closed; the locks it held are lost");
    }

    /// The local holder of `key`, if this store holds it.
    fn local(&self, key: &str) -> Option<Holder> {
        self.held.lock().unwrap().get(key).map(|h| Holder {
            owner: Some(h.owner.clone()),
            remaining: h
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now())),
        })
    }

    /// Takes `key` without waiting, cancel safe: a request its caller dropped is run to
    /// completion in a task of its own (`stores::detach`).
    pub(crate) async fn try_acquire(
        &self,
        request: &AcquireRequest<'_>,
    ) -> Result<Acquire, StoreError> {
        let (me, gone) = (self.this(), self.this());
        let (key, owner) = (request.key.to_owned(), request.owner.to_owned());
        let (k, o) = (key.clone(), owner.clone());
        let (ttl, metadata) = (request.ttl, request.metadata.map(str::to_owned));
        let statement = async move { me.take(key, owner, ttl, metadata).await };
        let release = move || {
            let (gone, k, o) = (gone.clone(), k.clone(), o.clone());
            async move { gone.release(&k, &o).await }
        };
        crate::stores::detach::acquire(request.key, &self.describe, statement, release).await
    }

    async fn take(
        &self,
        key: String,
        owner: String,
        ttl: Option<Duration>,
        metadata: Option<String>,
    ) -> Result<Acquire, StoreError> {
        if let Some(h) = self.local(&key) {
            return Ok(Acquire::Held(h));
        }
        let (session, mut guard) = self.session().await?;
        // Under the connection's mutex: a holding on it is recorded before its mutex is let go.
        if let Some(h) = self.local(&key) {
            return Ok(Acquire::Held(h));
        }
        let conn = guard.as_mut().expect("a live session");
        match self.dialect.try_lock(conn, &key).await {
            Ok(Some(fence)) => {
                let id = self.ids.fetch_add(1, Ordering::Relaxed);
                let deadline = ttl.map(|t| Instant::now() + t);
                let timer = deadline.map(|d| self.expire_at(&key, id, d));
                self.held.lock().unwrap().insert(
                    key,
                    Holding {
                        id,
                        owner,
                        fence,
                        metadata,
                        deadline,
                        session,
                        timer,
                    },
                );
                Ok(Acquire::Acquired(Lease { fence, ttl }))
            }
            Ok(None) => Ok(Acquire::Held(Holder::default())),
            Err(e) => {
                self.close_session(&session, &mut guard);
                Err(self.err(e, "acquiring", &key))
            }
        }
    }

    /// A task on the store's runtime that gives holding `id` of `key` up once its deadline
    /// (moved by extends) has passed.
    fn expire_at(&self, key: &str, id: u64, mut deadline: Instant) -> AbortHandle {
        let (me, key) = (self.me.clone(), key.to_owned());
        self.runtime
            .spawn(async move {
                loop {
                    tokio::time::sleep_until(deadline).await;
                    let Some(me) = me.upgrade() else { return };
                    let now = match me.held.lock().unwrap().get(&key) {
                        Some(h) if h.id == id => h.deadline,
                        _ => return,
                    };
                    match now {
                        Some(d) if d > Instant::now() => deadline = d,
                        None => return,
                        Some(_) => {
                            tracing::debug!(store = %me.describe, key = %key, "cadenas: session lock expired; unlocking");
                            let _ = me.give_up(&key, move |h| h.id == id).await;
                            return;
                        }
                    }
                }
            })
            .abort_handle()
    }

    /// Unlocks the holding of `key` that `which` accepts; `Ok(false)` when there is none. Runs
    /// in a task of its own: a holding is forgotten only once its unlock is done, whether the
    /// caller waits for it or not.
    async fn give_up(
        &self,
        key: &str,
        which: impl Fn(&Holding<D::Conn>) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        let (me, key) = (self.this(), key.to_owned());
        self.runtime
            .spawn(async move { me.unlock(&key, which).await })
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Transient, "the runtime is shutting down"))
    }

    async fn unlock(&self, key: &str, which: impl Fn(&Holding<D::Conn>) -> bool) -> bool {
        let session = match self.held.lock().unwrap().get(key) {
            Some(h) if which(h) => h.session.clone(),
            _ => return false,
        };
        let mut guard = session.conn.clone().lock_owned().await;
        let holding = {
            let mut held = self.held.lock().unwrap();
            match held.get(key) {
                Some(h) if which(h) && Arc::ptr_eq(&h.session, &session) => held.remove(key),
                _ => None,
            }
        };
        let Some(holding) = holding else {
            return false;
        };
        if let Some(t) = holding.timer {
            // The timer's own give-up runs in a task of its own, so this never stops it.
            t.abort();
        }
        let Some(conn) = guard.as_mut() else {
            // Its connection failed meanwhile: the lock went with it.
            return true;
        };
        if let Err(e) = self.dialect.unlock(conn, key).await {
            // Closing the connection gives the lock up for sure.
            tracing::debug!(store = %self.describe, key = %key, error = %e, "cadenas: unlock failed; closing its connection");
            self.close_session(&session, &mut guard);
        }
        true
    }

    /// Releases `key` if `owner` holds it here.
    pub(crate) async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.give_up(key, move |h| h.owner == owner).await
    }

    /// The liveness check: pings the holding's connection and moves its deadline.
    pub(crate) async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let (id, session) = match self.held.lock().unwrap().get(key) {
            Some(h) if h.owner == owner => (h.id, h.session.clone()),
            _ => return Ok(None),
        };
        let mut guard = session.conn.clone().lock_owned().await;
        let Some(conn) = guard.as_mut() else {
            return Ok(None);
        };
        if let Err(e) = conn.ping().await {
            tracing::debug!(store = %self.describe, key = %key, error = %e, "cadenas: liveness check failed");
            self.close_session(&session, &mut guard);
            return Ok(None);
        }
        let deadline = ttl.map(|t| Instant::now() + t);
        let mut held = self.held.lock().unwrap();
        let Some(h) = held.get_mut(key).filter(|h| h.id == id) else {
            return Ok(None);
        };
        h.deadline = deadline;
        if let (Some(d), None) = (deadline, &h.timer) {
            h.timer = Some(self.expire_at(key, id, d));
        }
        Ok(Some(Lease {
            fence: h.fence,
            ttl,
        }))
    }

    /// Replaces the metadata of a holding of `owner`.
    pub(crate) fn set_metadata(&self, key: &str, owner: &str, metadata: Option<&str>) -> bool {
        match self.held.lock().unwrap().get_mut(key) {
            Some(h) if h.owner == owner => {
                h.metadata = metadata.map(str::to_owned);
                true
            }
            _ => false,
        }
    }

    /// Which session holds `key`, asked of the server.
    async fn server_holder(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let (session, mut guard) = self.session().await?;
        let conn = guard.as_mut().expect("a live session");
        match self.dialect.holder(conn, key).await {
            Ok(h) => Ok(h),
            Err(e) => {
                self.close_session(&session, &mut guard);
                Err(self.err(e, "inspecting", key))
            }
        }
    }

    /// Releases a holding of this store whoever owns it; a holding of another client is
    /// refused (only its own connection can unlock it).
    pub(crate) async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        if self.give_up(key, |_| true).await? {
            return Ok(true);
        }
        match self.server_holder(key).await? {
            None => Ok(false),
            Some(id) => Err(StoreError::new(
                StoreErrorKind::Unsupported,
                format!(
                    "'{key}' on {} is a session lock held by {} {id} of another client; only that connection can release it: {}",
                    self.describe,
                    D::SESSION,
                    self.dialect.end_session(id)
                ),
            )),
        }
    }

    /// This store's holding of `key` in full; another client's as the server session
    /// holding it (owner `backend 4242`), without remaining time, fence or metadata.
    pub(crate) async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        if let Some(info) = self.held.lock().unwrap().get(key).map(|h| {
            LockInfo::new(
                key,
                h.owner.clone(),
                h.deadline
                    .map(|d| d.saturating_duration_since(Instant::now())),
                h.fence,
                h.metadata.clone(),
            )
        }) {
            return Ok(Some(info));
        }
        Ok(self
            .server_holder(key)
            .await?
            .map(|id| LockInfo::new(key, format!("{} {id}", D::SESSION), None, None, None)))
    }

    /// `list`: the servers cannot name the keys of session locks.
    pub(crate) fn list(&self) -> Result<Vec<LockInfo>, StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            format!(
                "{} holds session locks, whose keys the server cannot list (inspect a key instead, or use lease mode)",
                self.describe
            ),
        ))
    }

    /// A subscription to releases of `key`, sharing the process's wait for it.
    pub(crate) fn subscribe(&self, key: &str) -> Subscription {
        let mut waits = self.waits.lock().unwrap();
        waits.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = waits.get(key).and_then(Weak::upgrade) {
            return Subscription::new(Waiter::new(w));
        }
        let shared = Arc::new(WaitShared::default());
        let w = Arc::new(KeyWait {
            shared: shared.clone(),
        });
        waits.insert(key.to_owned(), Arc::downgrade(&w));
        let (me, key) = (self.me.clone(), key.to_owned());
        self.runtime.spawn(wait_for(me, key, shared));
        Subscription::new(Waiter::new(w))
    }

    /// Closes every connection: every lock held here is released by the server.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let sessions: Vec<_> = std::mem::take(&mut *self.sessions.lock().unwrap());
        for h in self.held.lock().unwrap().drain() {
            if let Some(t) = h.1.timer {
                t.abort();
            }
        }
        for s in sessions {
            let conn = s.conn.lock().await.take();
            if let Some(c) = conn {
                let _ = sqlx::Connection::close(c).await;
            }
        }
        let idle: Vec<_> = std::mem::take(&mut *self.idle_waits.lock().unwrap());
        for (c, _) in idle {
            let _ = sqlx::Connection::close(c).await;
        }
    }

    /// A waiting connection no wait uses now, if one is kept.
    fn idle_wait(&self) -> Option<(D::Conn, OwnedSemaphorePermit)> {
        self.idle_waits.lock().unwrap().pop()
    }

    /// Keeps a waiting connection for the next wait (closes it once the store is closed).
    async fn keep_wait(&self, wait: (D::Conn, OwnedSemaphorePermit)) {
        if self.closed.load(Ordering::Relaxed) {
            let _ = sqlx::Connection::close(wait.0).await;
            return;
        }
        self.idle_waits.lock().unwrap().push(wait);
        self.idle_ready.notify_one();
    }
}
