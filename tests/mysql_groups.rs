//! Semaphores and read-write locks on the MySQL / MariaDB store (lease mode) against a real
//! server: their layout in the lock table and its holders table, what a Verrou process sees,
//! and waiters of other processes woken by the server. What every store shares is checked
//! by the conformance suite (`tests/conformance.rs`).
//!
//! Set `CADENAS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). Every test uses
//! its own random table and drops it at the end; an unreachable server fails the tests.
#![cfg(feature = "mysql")]

use std::time::{Duration, Instant};

use cadenas::store::{Acquire, AcquireRequest, Store, StoreErrorKind};
use cadenas::LockKind;

use cadenas_test_support::mysql::*;

async fn join(s: &dyn Store, key: &str, owner: &str, kind: LockKind, ttl: Duration) -> Acquire {
    s.try_acquire(AcquireRequest::new(key, owner, Some(ttl)).with_kind(kind))
        .await
        .unwrap()
}

/// A table made by an earlier cadenas gets the group columns and the holders table; a
/// group's row marks the key held for Verrou's acquire while a holder lives; a waiting
/// writer's marker holds readers back past the last reader and is cleared by its take; the
/// expiry watcher reports an expired holder once; the last release removes everything.
#[tokio::test]
async fn groups_live_in_the_lock_table_and_its_holders_table() {
    let admin = admin().await;
    let table = random_name("cadenas_g");
    let _c = cleanup_table(&table);
    sqlx::query(&format!(
        "CREATE TABLE `{table}` (`key` varchar(255) not null primary key, `owner` varchar(255) not null, \
         expiration bigint null, fence bigint null, metadata mediumtext null, waiters text null)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let s = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let sem = LockKind::Permits(2);
    let a = fence_of(join(&s, "api", "a", sem, Duration::from_secs(60)).await);
    let b = fence_of(join(&s, "api", "b", sem, Duration::from_millis(300)).await);
    assert!(a < b);
    let row: (String, Option<String>, Option<i32>) = sqlx::query_as(&format!(
        "SELECT CAST(owner AS CHAR), CAST(kind AS CHAR), permits FROM `{table}` WHERE `key` = 'api'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(row, (String::new(), Some("permits".into()), Some(2)));
    // Another count is refused, naming both.
    let e = s
        .try_acquire(AcquireRequest::new("api", "c", LONG).with_kind(LockKind::Permits(3)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains('2') && e.message.contains('3'), "{e}");
    // Full: a third permit waits, naming a holder.
    match join(&s, "api", "c", sem, Duration::from_secs(60)).await {
        Acquire::Held(h) => assert!(matches!(h.owner.as_deref(), Some("a" | "b")), "{h:?}"),
        other => panic!("a third permit of two: {other:?}"),
    }
    // Verrou's acquire takes only an expired row.
    let verrou = sqlx::query(&format!(
        "INSERT INTO `{table}` (`key`, owner, expiration) \
         VALUES ('api', 'v', CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED) + 60000) \
         ON DUPLICATE KEY UPDATE owner = IF(expiration <= CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED), \
           VALUES(owner), owner)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let owner: String = sqlx::query_scalar(&format!(
        "SELECT CAST(owner AS CHAR) FROM `{table}` WHERE `key` = 'api'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(owner, "", "Verrou took a key held by permits ({verrou:?})");
    match s
        .try_acquire(AcquireRequest::new("api", "m", LONG))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert!(matches!(h.owner.as_deref(), Some("a" | "b")), "{h:?}"),
        other => panic!("a mutex got in beside permits: {other:?}"),
    }
    let info = s.inspect("api").await.unwrap().unwrap();
    assert_eq!((info.kind, info.holders.len()), (sem, 2), "{info:?}");
    // b's lease ends: reported once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reaped = loop {
        let r = s.reap_expired("").await.unwrap();
        if !r.is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "b's permit was never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!((reaped[0].owner.as_str(), reaped[0].fence), ("b", Some(b)));
    assert!(s.reap_expired("").await.unwrap().is_empty());
    assert_eq!(s.inspect("api").await.unwrap().unwrap().holders.len(), 1);
    assert!(s.release("api", "a").await.unwrap());
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT (SELECT COUNT(*) FROM `{table}`) + (SELECT COUNT(*) FROM `{table}_holders`)"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(left, 0, "the last release removes the row and the holders");

    // A waiting writer's marker.
    fence_of(join(&s, "cfg", "r1", LockKind::Shared, Duration::from_secs(60)).await);
    let writer = AcquireRequest::new("cfg", "w", LONG).with_writer_waiting(LONG);
    assert!(matches!(
        s.try_acquire(writer).await.unwrap(),
        Acquire::Held(_)
    ));
    match join(&s, "cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("w")),
        other => panic!("a reader got in past a waiting writer: {other:?}"),
    }
    assert!(s.release("cfg", "r1").await.unwrap());
    assert!(matches!(
        join(&s, "cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await,
        Acquire::Held(_)
    ));
    let w = fence_of(
        s.try_acquire(AcquireRequest::new(
            "cfg",
            "w",
            Some(Duration::from_millis(100)),
        ))
        .await
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Acquire::Acquired(l) =
            join(&s, "cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await
        {
            assert!(l.fence.unwrap() > w);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer's take did not clear its marker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A take-over displaces the group's first holder and removes every holder.
    let taken = s
        .take_over(AcquireRequest::new("cfg", "t", LONG))
        .await
        .unwrap();
    let displaced = taken.displaced.expect("a displaced reader");
    assert_eq!(displaced.owner, "r2");
    assert!(taken.lease.fence.unwrap() > displaced.fence.unwrap());
    assert!(!s.release("cfg", "r2").await.unwrap());
    assert!(s.force_release("cfg").await.unwrap());
    assert!(s.inspect("cfg").await.unwrap().is_none());
}

/// A store with its own pool and notifier stands for another process: its task waiting for
/// a permit, polling every 300 s, is woken by the server when a holder of the other store
/// gives one back, and the readers waiting behind a writer are woken by its release.
#[tokio::test]
async fn waiters_of_other_processes_are_woken_by_the_server() {
    let (holder, table, _c) = store_with("").await;
    let other = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let ttl = Some(Duration::from_secs(60));
    let holder = cadenas::Locks::builder().ttl(ttl).build(holder).unwrap();
    let other = cadenas::Locks::builder().ttl(ttl).build(other).unwrap();
    let slow_poll = cadenas::Retry::default()
        .delay(Duration::from_secs(300))
        .timeout(Duration::from_secs(300));
    for round in 0..3 {
        let first = holder.semaphore("k", 2).acquire().await.unwrap();
        let second = holder.semaphore("k", 2).acquire().await.unwrap();
        let lock = other.semaphore("k", 2).with_retry(slow_poll.clone());
        let waiting = tokio::spawn(async move { lock.acquire().await });
        wait_for_waiters(&table, "k").await;
        first.release().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the permit's waiter was not woken"))
            .unwrap()
            .unwrap();
        got.release().await.unwrap();
        second.release().await.unwrap();
    }
    let writer = holder.write("cfg").acquire().await.unwrap();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let lock = other.read("cfg").with_retry(slow_poll.clone());
            tokio::spawn(async move { lock.acquire().await })
        })
        .collect();
    wait_for_waiters(&table, "cfg").await;
    writer.release().await.unwrap();
    let mut held = Vec::new();
    for r in readers {
        let guard = tokio::time::timeout(Duration::from_secs(20), r)
            .await
            .expect("a reader waiting behind the writer was not woken")
            .unwrap()
            .unwrap();
        held.push(guard);
    }
    for g in held {
        g.release().await.unwrap();
    }
}

/// Waits until a store has written itself into the `waiters` of `key`'s row.
async fn wait_for_waiters(table: &str, key: &str) {
    let admin = admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w: Option<Option<String>> = sqlx::query_scalar(&format!(
            "SELECT CAST(waiters AS CHAR) FROM `{table}` WHERE `key` = ?"
        ))
        .bind(key)
        .fetch_optional(&admin)
        .await
        .unwrap();
        if w.flatten().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waiter never wrote itself into the row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admin.close().await;
}
