//! The database restarted while a lock is held, on private PostgreSQL and MariaDB servers
//! started by the tests (the machine's shared servers are never restarted).
//!
//! What users rely on: a lease whose row survives the restart stands, and the holder's
//! watchdog, extend and release work again once the pool has reconnected; a lease whose row
//! did not survive (PostgreSQL `unlogged=true` after a crash) is reported lost instead of
//! silently kept; fences keep growing across the restart. (A killed connection, rather than
//! a restart, is covered by `killed_connections_leave_the_lease_standing` in the
//! `postgres_store` and `mysql_store` tests.)
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::time::Duration;

use cadenas::{Error, EventKind, Guard, Locks};
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;

use cadenas_test_support::sql_server::{self, Stop};

/// The leases' ttl: the watchdog extends every ttl/3 and gives up ttl/10 before the end, so a
/// restart must take well under ttl/2 (a private server restarts in well under a second).
const TTL: Duration = Duration::from_secs(6);

/// Waits for an event of `kind` about `key`, at most `limit`.
async fn until_event(
    rx: &mut Receiver<cadenas::Event>,
    key: &str,
    kind: EventKind,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(e)) if e.key == key && e.kind == kind => return,
            Ok(Ok(e)) if e.key == key && e.kind == EventKind::Lost => {
                panic!("lease on {key} lost while waiting for {kind:?}: {e:?}")
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream closed: {e}"),
            Err(_) => panic!("no {kind:?} event for {key} within {limit:?}"),
        }
    }
}

async fn hold(locks: &Locks, key: &str) -> Guard {
    let guard = locks
        .lock(key)
        .with_ttl(Some(TTL))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquiring {key} on {}: {e}", locks.describe()));
    assert!(guard.fence().is_some(), "SQL stores hand out fences");
    guard
}

/// After a restart, someone else cannot take `key` while `guard` holds it; the holder
/// extends and releases it; the next acquisition gets a higher fence.
async fn lease_stands(locks: &Locks, other: &Locks, guard: Guard) {
    let key = guard.key().to_owned();
    guard
        .extend(None)
        .await
        .unwrap_or_else(|e| panic!("extend after the restart on {}: {e}", locks.describe()));
    assert_eq!(guard.lost_signal().reason(), None, "{}", locks.describe());
    match other.lock(&key).try_acquire().await {
        Err(Error::AlreadyLocked { .. }) => {}
        other => panic!("{key} must still be held after the restart: {other:?}"),
    }
    let fence = guard.fence().unwrap();
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("release after the restart on {}: {e}", locks.describe()));
    let next = other.lock(&key).try_acquire().await.unwrap();
    assert!(
        next.fence().unwrap() > fence,
        "fences keep growing across the restart: {:?} after {fence}",
        next.fence()
    );
    next.release().await.unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_hold() {
    let mut server = sql_server::PgServer::start();
    let durable_url = format!("{}?table=durable_locks", server.url());
    let unlogged_url = format!("{}?table=unlogged_locks&unlogged=true", server.url());
    let durable = Locks::connect(&durable_url).await.unwrap();
    let unlogged = Locks::connect(&unlogged_url).await.unwrap();
    let (mut d_events, mut u_events) = (durable.events(), unlogged.events());
    let d = hold(&durable, "job").await;
    let u = hold(&unlogged, "job").await;

    // A clean restart keeps the rows of both tables: both watchdogs go on extending over
    // new connections.
    server.restart(Stop::Clean);
    until_event(&mut d_events, "job", EventKind::Extended, TTL).await;
    until_event(&mut u_events, "job", EventKind::Extended, TTL).await;
    assert!(!d.lost_signal().is_lost() && !u.lost_signal().is_lost());

    // A crash: PostgreSQL replays the WAL, so the durable row is back; the UNLOGGED table is
    // emptied, and its holder must be told.
    server.restart(Stop::Crash);
    let u_fence = u.fence().unwrap();
    let lost = tokio::time::timeout(TTL, u.lost())
        .await
        .expect("the unlogged lease is reported lost after the crash, before its ttl");
    assert!(matches!(lost, Error::Lost { .. }), "{lost:?}");
    assert!(u.release().await.is_err(), "the unlogged lease is gone");
    let other = Locks::connect(&unlogged_url).await.unwrap();
    let taken = other.lock("job").try_acquire().await.unwrap();
    assert!(
        taken.fence().unwrap() > u_fence,
        "the fence sequence stays logged: {:?} after {u_fence}",
        taken.fence()
    );
    taken.release().await.unwrap();

    let other = Locks::connect(&durable_url).await.unwrap();
    lease_stands(&durable, &other, d).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restarted_mid_hold() {
    let mut server = sql_server::MariaDbServer::start().await;
    let url = format!("{}?table=locks", server.url());
    let locks = Locks::connect(&url).await.unwrap();
    let mut events = locks.events();
    let g = hold(&locks, "job").await;

    server.restart(Stop::Clean);
    until_event(&mut events, "job", EventKind::Extended, TTL).await;

    // Killed: InnoDB recovers every committed transaction from its redo log.
    server.restart(Stop::Crash);
    let other = Locks::connect(&url).await.unwrap();
    lease_stands(&locks, &other, g).await;
}
