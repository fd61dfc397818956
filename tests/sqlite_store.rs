//! The SQLite store against real database files, through the `Store` trait: what is
//! specific to SQLite (files, tables, restarts, Verrou's rows). The behaviour every store
//! shares is checked by the conformance suite (`tests/conformance.rs`).
#![cfg(feature = "sqlite")]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use cadenas::stores::sqlite::SqliteStore;
use cadenas::{Acquire, AcquireRequest, Error, Holder, Lease, LockKind, Store, StoreErrorKind};
use futures_util::FutureExt;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(60);

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("locks.db").display())
}

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::connect(&url(dir)).await.expect("connect")
}

async fn take(store: &SqliteStore, key: &str, owner: &str, ttl: Option<Duration>) -> Lease {
    match store
        .try_acquire(AcquireRequest::new(key, owner, ttl))
        .await
        .unwrap()
    {
        Acquire::Acquired(lease) => lease,
        Acquire::Held(h) => panic!("{key} is held by {h:?}"),
    }
}

async fn held(store: &SqliteStore, key: &str, owner: &str) -> Holder {
    match store
        .try_acquire(AcquireRequest::new(key, owner, Some(LONG)))
        .await
        .unwrap()
    {
        Acquire::Held(h) => h,
        Acquire::Acquired(l) => panic!("{owner} got {key}: {l:?}"),
    }
}

/// Retries `f` until it yields something, failing after a generous deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `owner` takes `key` (after someone else's lease expired).
async fn take_over(store: &SqliteStore, key: &str, owner: &str) -> Lease {
    eventually("the lease expires and is taken over", || async {
        match store
            .try_acquire(AcquireRequest::new(key, owner, Some(LONG)))
            .await
            .unwrap()
        {
            Acquire::Acquired(lease) => Some(lease),
            Acquire::Held(_) => None,
        }
    })
    .await
}

fn store_kind(e: &Error) -> StoreErrorKind {
    match e {
        Error::Store { source, .. } => source.kind,
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[tokio::test]
async fn fences_strictly_increase_across_release_expiry_takeover_restart_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut fences = Vec::new();
    fences.push(take(&store, "k", "a", Some(LONG)).await.fence);
    store.release("k", "a").await.unwrap();
    fences.push(take(&store, "k", "b", Some(SHORT)).await.fence);
    fences.push(take_over(&store, "k", "c").await.fence);
    store.force_release("k").await.unwrap();
    fences.push(take(&store, "k", "d", Some(LONG)).await.fence);
    // Other keys move the sequence too, never backwards for "k".
    take(&store, "other", "x", Some(LONG)).await;
    store.release("k", "d").await.unwrap();
    store.close().await.unwrap();

    let store = open(dir.path()).await;
    fences.push(take(&store, "k", "e", Some(LONG)).await.fence);
    // Even with the lock table emptied behind our back.
    sqlx::query("DELETE FROM cadenas_locks")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = open(dir.path()).await;
    fences.push(take(&store, "k", "f", Some(LONG)).await.fence);
    store.close().await.unwrap();
    // Even with the database deleted: fences follow the clock.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let store = open(dir.path()).await;
    fences.push(take(&store, "k", "g", Some(LONG)).await.fence);

    let fences: Vec<u64> = fences.into_iter().map(|f| f.expect("a fence")).collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_create_the_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = url(dir.path());
            tokio::spawn(async move { SqliteStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("every connect succeeds"));
    }
    let mut winners = 0;
    for (i, store) in stores.iter().enumerate() {
        if let Acquire::Acquired(_) = store
            .try_acquire(AcquireRequest::new("k", &i.to_string(), Some(LONG)))
            .await
            .unwrap()
        {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn in_memory_store_is_one_database() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.describe(), "sqlite::memory:");
    take(&store, "k", "a", Some(LONG)).await;
    held(&store, "k", "b").await;
    assert_eq!(store.list("").await.unwrap().len(), 1);
    // Another in-memory store is another database.
    let other = SqliteStore::connect("sqlite::memory:").await.unwrap();
    take(&other, "k", "b", Some(LONG)).await;
}

#[tokio::test]
async fn cancelled_acquire_leaves_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for i in 0..20 {
        // Dropped after its first poll, whatever the statement did.
        let owner = format!("gone{i}");
        let answer = store
            .try_acquire(AcquireRequest::new("k", &owner, Some(LONG)))
            .now_or_never();
        assert!(answer.is_none(), "the statement cannot finish in one poll");
    }
    // Every acquisition a cancelled call made is given back, so "b" gets the lock.
    let lease = take_over(&store, "k", "b").await;
    assert!(lease.fence.is_some());
    assert_eq!(store.inspect("k").await.unwrap().unwrap().owner, "b");
}

#[tokio::test]
async fn options_and_table_names() {
    let dir = tempfile::tempdir().unwrap();
    let base = url(dir.path());
    // Lock-layer options are ignored by the store; a custom table is separate.
    let custom = SqliteStore::connect(&format!("{base}?table=verrou&namespace=x&ttl=5s"))
        .await
        .unwrap();
    let default = open(dir.path()).await;
    assert_eq!(default.describe(), base);
    assert!(default.capabilities().fencing && default.capabilities().shared);
    take(&custom, "k", "a", Some(LONG)).await;
    take(&default, "k", "b", Some(LONG)).await;

    for bad in ["a-b", "1x", "x;drop", ""] {
        let e = SqliteStore::connect(&format!("{base}?table={bad}"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{bad}: {e}");
    }
    let e = SqliteStore::connect(&format!("{base}?tabel=x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown option 'tabel'"), "{e}");
    let e = SqliteStore::connect("redis://localhost").await.unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let e = SqliteStore::connect("sqlite://").await.unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
}

#[tokio::test]
async fn missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").join("deeper");
    let e = SqliteStore::connect(&url(&missing)).await.unwrap_err();
    assert_eq!(store_kind(&e), StoreErrorKind::Unavailable);
    let text = e.to_string();
    assert!(text.contains("does not exist"), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
}

#[tokio::test]
async fn path_under_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "not a directory").unwrap();
    let e = SqliteStore::connect(&url(&file)).await.unwrap_err();
    assert_eq!(store_kind(&e), StoreErrorKind::Unavailable);
    let text = e.to_string();
    assert!(text.contains("not a directory"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
}

#[tokio::test]
async fn a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locks.db");
    std::fs::write(&path, "this is a text file, not a database ".repeat(200)).unwrap();
    let e = SqliteStore::connect(&url(dir.path())).await.unwrap_err();
    assert_eq!(store_kind(&e), StoreErrorKind::Rejected);
    let text = e.to_string();
    assert!(text.contains("not a SQLite database"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

async fn raw_pool(dir: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("locks.db"))
        .create_if_missing(true);
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}

#[tokio::test]
async fn a_table_with_the_wrong_columns() {
    let dir = tempfile::tempdir().unwrap();
    let pool = raw_pool(dir.path()).await;
    sqlx::query("CREATE TABLE cadenas_locks (key TEXT PRIMARY KEY, holder TEXT, expiration INT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE nokey (id INTEGER PRIMARY KEY, key TEXT, owner TEXT, expiration INT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let e = SqliteStore::connect(&url(dir.path())).await.unwrap_err();
    assert_eq!(store_kind(&e), StoreErrorKind::Rejected);
    let text = e.to_string();
    assert!(text.contains("no column 'owner'"), "{text}");
    assert!(text.contains("table=NAME"), "{text}");
    let e = SqliteStore::connect(&format!("{}?table=nokey", url(dir.path())))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("primary key"), "{e}");
}

#[tokio::test]
async fn verrou_rows_and_tables_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    // A table Verrou created: only its three columns.
    let pool = raw_pool(dir.path()).await;
    sqlx::query(
        "CREATE TABLE verrou (key varchar(255) primary key, owner varchar(255) not null, \
         expiration bigint null)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = SqliteStore::connect(&format!("{}?table=verrou", url(dir.path())))
        .await
        .unwrap();
    let before = take(&store, "mine", "a", Some(LONG)).await;

    // A Verrou process writes only its columns, with its own clock in epoch ms.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query("INSERT INTO verrou (key, owner, expiration) VALUES (?, ?, ?)")
        .bind("job")
        .bind("verrou-owner")
        .bind(now_ms + 300)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO verrou (key, owner, expiration) VALUES ('forever', 'v', NULL)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        held(&store, "job", "b").await.owner.as_deref(),
        Some("verrou-owner")
    );
    let info = store.inspect("job").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("verrou-owner", None));
    held(&store, "forever", "b").await;
    assert_eq!(store.list("").await.unwrap().len(), 3);

    let lease = take_over(&store, "job", "b").await;
    assert!(lease.fence > before.fence);
    assert_eq!(store.inspect("job").await.unwrap().unwrap().owner, "b");

    // Verrou taking over a row of ours leaves no stale fence or metadata behind.
    sqlx::query("UPDATE verrou SET owner = 'v2', expiration = NULL WHERE key = 'job'")
        .execute(&pool)
        .await
        .unwrap();
    let info = store.inspect("job").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("v2", None));
}

#[tokio::test]
async fn bring_your_own_pool() {
    let dir = tempfile::tempdir().unwrap();
    let mine = SqliteStore::from_pool(raw_pool(dir.path()).await, "cadenas_locks")
        .await
        .unwrap();
    assert_eq!(mine.describe(), url(dir.path()));
    let theirs = open(dir.path()).await;
    take(&mine, "k", "a", Some(LONG)).await;
    held(&theirs, "k", "b").await;
    // Same file and table in one process: releases wake the other store's waiters.
    let mut sub = theirs.subscribe("k").await.unwrap().unwrap();
    assert!(mine.release("k", "a").await.unwrap());
    timeout(WAIT, sub.released()).await.expect("woken");
    assert!(
        SqliteStore::from_pool(raw_pool(dir.path()).await, "no-good")
            .await
            .is_err()
    );
}

/// An in-memory store keeps its locks when the pool replaces its one connection (sqlx closes
/// a connection whose ping fails on release, for instance after a cancelled statement): the
/// database lives as long as the store, not as long as one pooled connection.
#[tokio::test]
async fn an_in_memory_store_outlives_its_pooled_connection() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let request = AcquireRequest::new("k", "a", Some(Duration::from_secs(60)));
    assert!(matches!(
        store.try_acquire(request).await.unwrap(),
        Acquire::Acquired(_)
    ));
    let mut conn = store.pool().acquire().await.unwrap();
    conn.close_on_drop();
    drop(conn);
    let info = store
        .inspect("k")
        .await
        .expect("the table is still there after the pool reconnected")
        .expect("the lock is still held");
    assert_eq!(info.owner, "a");
    assert!(store.release("k", "a").await.unwrap());
}

/// A shared or permit request on the bare store.
fn group_request<'a>(
    key: &'a str,
    owner: &'a str,
    kind: LockKind,
    ttl: Duration,
) -> AcquireRequest<'a> {
    AcquireRequest::new(key, owner, Some(ttl)).with_kind(kind)
}

async fn joined(
    store: &SqliteStore,
    key: &str,
    owner: &str,
    kind: LockKind,
    ttl: Duration,
) -> Lease {
    match store
        .try_acquire(group_request(key, owner, kind, ttl))
        .await
        .unwrap()
    {
        Acquire::Acquired(lease) => lease,
        Acquire::Held(h) => panic!("{owner} could not join {key}: held by {h:?}"),
    }
}

/// The key's row as the table stores it: owner, kind, permits, whether it is live.
async fn group_row(
    pool: &sqlx::SqlitePool,
    table: &str,
    key: &str,
) -> Option<(String, Option<String>, Option<i64>, bool)> {
    let now = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
    sqlx::query_as(&format!(
        "SELECT owner, kind, permits, expiration IS NULL OR expiration > {now} FROM {table} WHERE key = ?"
    ))
    .bind(key)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// A table made by an earlier cadenas (its five columns) gets the group columns; a group's
/// row marks the key held for a Verrou-style upsert exactly while a holder lives; the expiry
/// watcher reports an expired holder once; the last release removes the row and the holders.
#[tokio::test]
async fn groups_live_in_the_lock_table_and_its_holders_table() {
    let dir = tempfile::tempdir().unwrap();
    let pool = raw_pool(dir.path()).await;
    sqlx::query(
        "CREATE TABLE older (key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL, \
         expiration INTEGER NULL, fence INTEGER NULL, metadata TEXT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = SqliteStore::connect(&format!("{}?table=older", url(dir.path())))
        .await
        .unwrap();
    let sem = LockKind::Permits(2);
    let a = joined(&store, "api", "a", sem, LONG).await;
    let b = joined(&store, "api", "b", sem, Duration::from_millis(200)).await;
    assert!(a.fence < b.fence, "{a:?} {b:?}");
    assert_eq!(
        group_row(&pool, "older", "api").await,
        Some((String::new(), Some("permits".into()), Some(2), true))
    );
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM older_holders WHERE key = 'api'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(members, 2);
    // Verrou's acquire: an upsert that takes only an expired row.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let verrou = sqlx::query(
        "INSERT INTO older (key, owner, expiration) VALUES ('api', 'v', ?1) \
         ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, expiration = excluded.expiration \
         WHERE older.expiration IS NOT NULL AND older.expiration <= ?2",
    )
    .bind(now_ms + 60_000)
    .bind(now_ms)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        verrou.rows_affected(),
        0,
        "a Verrou process took a key held by permits"
    );
    // A mutex of the key is told who holds it, by name.
    let h = held(&store, "api", "m").await;
    assert!(matches!(h.owner.as_deref(), Some("a" | "b")), "{h:?}");
    // b's lease ends: the watcher reports it once; a keeps its permit.
    let reaped = eventually("b's permit expires and is reaped", || async {
        let r = store.reap_expired("").await.unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!((reaped[0].owner.as_str(), reaped[0].fence), ("b", b.fence));
    assert!(store.reap_expired("").await.unwrap().is_empty());
    let info = store.inspect("api").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.owner, "a");
    assert!(store.release("api", "a").await.unwrap());
    assert_eq!(
        group_row(&pool, "older", "api").await,
        None,
        "the last release removes the row"
    );
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM older_holders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(members, 0);
    // The key is a plain mutex again, with a fence above the permits'.
    assert!(take(&store, "api", "m", Some(LONG)).await.fence > b.fence);
}

/// A waiting writer's marker holds other owners' readers back, outlives the last reader (the
/// row stays, expired, for the writer's plain acquire) and is cleared by the writer's take:
/// once that holding ends, readers get in at once.
#[tokio::test]
async fn a_waiting_writers_marker_lives_until_its_take() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let pool = raw_pool(dir.path()).await;
    let read = LockKind::Shared;
    joined(&store, "cfg", "r1", read, LONG).await;
    let writer = AcquireRequest::new("cfg", "w", Some(Duration::from_millis(300)))
        .with_writer_waiting(Some(LONG));
    assert!(matches!(
        store.try_acquire(writer).await.unwrap(),
        Acquire::Held(_)
    ));
    // Another reader waits for the writer; the writer's own reads do not.
    match store
        .try_acquire(group_request("cfg", "r2", read, LONG))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("w")),
        Acquire::Acquired(l) => panic!("a reader got in past a waiting writer: {l:?}"),
    }
    assert!(store.release("cfg", "r1").await.unwrap());
    assert_eq!(
        group_row(&pool, "cadenas_locks", "cfg").await,
        Some((String::new(), Some("shared".into()), None, false)),
        "the row stays, expired, with the marker"
    );
    assert!(
        matches!(
            store
                .try_acquire(group_request("cfg", "r2", read, LONG))
                .await
                .unwrap(),
            Acquire::Held(_)
        ),
        "readers still wait for the writer"
    );
    let w = take(&store, "cfg", "w", Some(Duration::from_millis(100))).await;
    // The writer's lease ends without a release: its marker went with its take.
    let r = eventually("the writer's lease ends and a reader gets in", || async {
        match store
            .try_acquire(group_request("cfg", "r2", read, LONG))
            .await
            .unwrap()
        {
            Acquire::Acquired(l) => Some(l),
            Acquire::Held(_) => None,
        }
    })
    .await;
    assert!(r.fence > w.fence);
}
