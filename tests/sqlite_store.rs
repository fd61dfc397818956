//! The SQLite store against real database files, through the `Store` trait.
#![cfg(feature = "sqlite")]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use cadenas::stores::sqlite::SqliteStore;
use cadenas::{Acquire, AcquireRequest, Error, Holder, Lease, Store, StoreErrorKind};
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

fn req<'a>(key: &'a str, owner: &'a str, ttl: Option<Duration>) -> AcquireRequest<'a> {
    AcquireRequest {
        key,
        owner,
        ttl,
        metadata: None,
    }
}

async fn take(store: &SqliteStore, key: &str, owner: &str, ttl: Option<Duration>) -> Lease {
    match store.try_acquire(req(key, owner, ttl)).await.unwrap() {
        Acquire::Acquired(lease) => lease,
        Acquire::Held(h) => panic!("{key} is held by {h:?}"),
    }
}

async fn held(store: &SqliteStore, key: &str, owner: &str) -> Holder {
    match store
        .try_acquire(req(key, owner, Some(LONG)))
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
            .try_acquire(req(key, owner, Some(LONG)))
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
async fn exclusion_and_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let lease = take(&store, "k", "a", Some(LONG)).await;
    assert_eq!(lease.ttl, Some(LONG));
    assert!(lease.fence.is_some());
    let holder = held(&store, "k", "b").await;
    assert_eq!(holder.owner.as_deref(), Some("a"));
    let remaining = holder.remaining.expect("a ttl");
    assert!(remaining <= LONG && remaining > LONG - Duration::from_secs(30));
    // Not re-entrant.
    held(&store, "k", "a").await;
    // Other keys are independent.
    take(&store, "k2", "b", Some(LONG)).await;
    assert_eq!(store.describe(), url(dir.path()));
    assert!(store.capabilities().fencing && store.capabilities().shared);
}

#[tokio::test]
async fn owner_checked_release_extend_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let lease = take(&store, "k", "a", Some(LONG)).await;
    assert!(!store.release("k", "b").await.unwrap());
    assert_eq!(store.extend("k", "b", Some(LONG)).await.unwrap(), None);
    assert!(!store.set_metadata("k", "b", Some("x")).await.unwrap());
    assert_eq!(store.inspect("k").await.unwrap().unwrap().owner, "a");

    let extended = store
        .extend("k", "a", Some(LONG * 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(extended.fence, lease.fence);
    assert_eq!(extended.ttl, Some(LONG * 2));
    assert!(
        store
            .inspect("k")
            .await
            .unwrap()
            .unwrap()
            .remaining
            .unwrap()
            > LONG
    );

    assert!(store.release("k", "a").await.unwrap());
    assert!(!store.release("k", "a").await.unwrap());
    assert_eq!(store.inspect("k").await.unwrap(), None);
    assert_eq!(store.extend("k", "a", Some(LONG)).await.unwrap(), None);
    assert!(!store.force_release("k").await.unwrap());
}

#[tokio::test]
async fn expiry_and_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let first = take(&store, "k", "a", Some(SHORT)).await;
    let second = take_over(&store, "k", "b").await;
    assert!(second.fence > first.fence);
    assert!(!store.release("k", "a").await.unwrap(), "a's lease is gone");
    assert_eq!(store.extend("k", "a", Some(LONG)).await.unwrap(), None);
    let info = store.inspect("k").await.unwrap().unwrap();
    assert_eq!(info.owner, "b");
    assert_eq!(info.fence, second.fence);

    // An expired lease nobody took is not reported, listed, or extendable.
    take(&store, "gone", "a", Some(SHORT)).await;
    eventually("the lease expires", || async {
        store.inspect("gone").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(store.list("gone").await.unwrap().is_empty());
    assert_eq!(store.extend("gone", "a", Some(LONG)).await.unwrap(), None);
    assert!(!store.force_release("gone").await.unwrap());
}

#[tokio::test]
async fn ttl_none_never_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let lease = take(&store, "k", "a", None).await;
    assert_eq!(lease.ttl, None);
    let info = store.inspect("k").await.unwrap().unwrap();
    assert_eq!(info.remaining, None);
    assert_eq!(held(&store, "k", "b").await.remaining, None);
    // Extend to a ttl and back to none.
    assert!(store.extend("k", "a", Some(LONG)).await.unwrap().is_some());
    assert!(store
        .inspect("k")
        .await
        .unwrap()
        .unwrap()
        .remaining
        .is_some());
    assert!(store.extend("k", "a", None).await.unwrap().is_some());
    assert_eq!(store.inspect("k").await.unwrap().unwrap().remaining, None);
    assert!(store.force_release("k").await.unwrap());
    take(&store, "k", "b", None).await;
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

#[tokio::test]
async fn metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let meta = "{\"job\": 42, \"host\": \"ñ\"}".repeat(100);
    let request = AcquireRequest {
        metadata: Some(&meta),
        ..req("k", "a", Some(LONG))
    };
    assert!(matches!(
        store.try_acquire(request).await.unwrap(),
        Acquire::Acquired(_)
    ));
    let info = store.inspect("k").await.unwrap().unwrap();
    assert_eq!(info.metadata.as_deref(), Some(meta.as_str()));
    assert!(store.set_metadata("k", "a", Some("v2")).await.unwrap());
    let info = store.inspect("k").await.unwrap().unwrap();
    assert_eq!(info.metadata.as_deref(), Some("v2"));
    assert!(store.set_metadata("k", "a", None).await.unwrap());
    assert_eq!(store.inspect("k").await.unwrap().unwrap().metadata, None);
    // A new holder does not inherit metadata.
    store.release("k", "a").await.unwrap();
    take(&store, "k", "b", Some(LONG)).await;
    assert_eq!(store.inspect("k").await.unwrap().unwrap().metadata, None);
}

#[tokio::test]
async fn list_by_prefix_is_literal_sorted_and_live_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for key in ["a%b_2", "a%b_1", "aXbX3", "a%bc", "A%b_4", "a%b\\5", "b"] {
        take(&store, key, "o", Some(LONG)).await;
    }
    take(&store, "a%b_expired", "o", Some(Duration::from_millis(1))).await;
    eventually("the short lease expires", || async {
        store
            .inspect("a%b_expired")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let keys = |v: Vec<cadenas::LockInfo>| v.into_iter().map(|i| i.key).collect::<Vec<_>>();
    assert_eq!(keys(store.list("a%b_").await.unwrap()), ["a%b_1", "a%b_2"]);
    assert_eq!(keys(store.list("a%b\\").await.unwrap()), ["a%b\\5"]);
    assert_eq!(
        keys(store.list("").await.unwrap()),
        ["A%b_4", "a%b\\5", "a%b_1", "a%b_2", "a%bc", "aXbX3", "b"]
    );
    let first = &store.list("a%b_1").await.unwrap()[0];
    assert_eq!(first.owner, "o");
    assert!(first.fence.is_some() && first.remaining.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_exclude_each_other_and_hand_off() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (open(dir.path()).await, open(dir.path()).await);
    let first = take(&one, "k", "a", Some(LONG)).await;
    assert_eq!(held(&two, "k", "b").await.owner.as_deref(), Some("a"));
    // A waiter on the other store of this process wakes on release.
    let mut sub = two.subscribe("k").await.unwrap().expect("notifies");
    assert!(one.release("k", "a").await.unwrap());
    timeout(WAIT, sub.released()).await.expect("woken");
    let second = take(&two, "k", "b", Some(LONG)).await;
    assert!(second.fence > first.fence);
    assert!(matches!(
        one.try_acquire(req("k", "a", Some(LONG))).await.unwrap(),
        Acquire::Held(_)
    ));
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
            .try_acquire(req("k", &i.to_string(), Some(LONG)))
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
            .try_acquire(req("k", &owner, Some(LONG)))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_tasks_on_two_stores_never_overlap() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let stores = [
        Arc::new(open(dir.path()).await),
        Arc::new(open(dir.path()).await),
    ];
    let inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (inside, done) = (inside.clone(), done.clone());
            tokio::spawn(async move {
                let owner = format!("task{i}");
                for _ in 0..5 {
                    let mut sub = store.subscribe("k").await.unwrap().unwrap();
                    loop {
                        let request = req("k", &owner, Some(LONG));
                        if let Acquire::Acquired(_) = store.try_acquire(request).await.unwrap() {
                            break;
                        }
                        let _ = timeout(Duration::from_millis(20), sub.released()).await;
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert!(store.release("k", &owner).await.unwrap());
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for task in tasks {
        timeout(Duration::from_secs(60), task)
            .await
            .expect("no deadlock")
            .unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 80);
}
