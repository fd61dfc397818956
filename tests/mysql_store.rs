//! The MySQL / MariaDB store against a real server: what is specific to MySQL (table
//! options, killed connections, Verrou's tables). The behaviour every store shares is
//! checked by the conformance suite (`tests/conformance.rs`).
//!
//! Set `CADENAS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).
//! Every test uses its own random table and drops it at the end. An unreachable server
//! fails the tests: they never skip.
#![cfg(feature = "mysql")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cadenas::store::{Acquire, AcquireRequest, Store, StoreErrorKind};
use cadenas::stores::mysql::{MySqlOptions, MySqlStore};
use cadenas::Error;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::Executor;

use cadenas_test_support::mysql::*;
use cadenas_test_support::verrou_sql as verrou;

#[tokio::test]
async fn bad_table_name_is_refused_before_any_sql() {
    for bad in ["bad;drop", "1abc", "a-b", "x%60y"] {
        let url = format!("mariadb://u:secret@127.0.0.1:1/db?table={bad}");
        let e = MySqlStore::connect(&url).await.unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(!e.to_string().contains("secret"));
    }
    let e = MySqlStore::from_pool(
        MySqlPoolOptions::new()
            .connect_lazy("mysql://127.0.0.1:1/db")
            .unwrap(),
        MySqlOptions::new().table("robert`); drop"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let e = MySqlStore::connect("mysql://127.0.0.1:1/db?schema=x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("schema"), "{e}");
}

#[tokio::test]
async fn table_with_wrong_columns_is_rejected() {
    let admin = admin().await;
    let table = random_name("cadenas_bad");
    let _c = cleanup_table(&table);
    sqlx::query(&format!(
        "CREATE TABLE `{table}` (`key` varchar(255) primary key, `expiration` bigint)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let e = MySqlStore::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("owner") && text.contains(&table), "{text}");
    assert!(matches!(&e, Error::Store { source, .. } if source.kind == StoreErrorKind::Rejected));
}

#[tokio::test]
async fn a_verrou_table_gets_our_columns() {
    let admin = admin().await;
    let table = random_name("cadenas_v");
    let _c = cleanup_table(&table);
    // The shape Verrou's Knex adapter creates: unsigned expiration, default collation.
    sqlx::query(&format!(
        "CREATE TABLE `{table}` (`key` varchar(255) not null primary key, `owner` varchar(255) not null, `expiration` bigint unsigned null)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO `{table}` (`key`, owner, expiration) VALUES ('v', 'node', CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED) + 60000)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let s = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    match s
        .try_acquire(AcquireRequest::new("v", "rust", LONG))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("node")),
        other => panic!("{other:?}"),
    }
    let info = s.inspect("v").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("node", None));
    assert!(info.remaining.unwrap() > Duration::from_secs(50));
    fence_of(
        s.try_acquire(AcquireRequest::new(
            "w",
            "rust",
            Some(Duration::from_millis(1)),
        ))
        .await
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        s.inspect("w").await.unwrap().is_none(),
        "unsigned expiry arithmetic"
    );
    fence_of(
        s.try_acquire(AcquireRequest::new("w", "rust", None))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn unreachable_and_wrong_credentials() {
    admin().await.close().await;
    let u = url::Url::parse(&base_url()).unwrap();
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(3306));
    let user = random_name("nobody");
    let urls = [
        "mysql://u:hunter2@127.0.0.1:1/test".to_owned(),
        format!("mariadb://{user}:hunter2@{host}/test"),
        format!("mysql://root@{host}/{user}"),
    ];
    refuses_unreachable_and_wrong_credentials(urls, |url| async move {
        MySqlStore::connect(&url).await
    })
    .await;
}

#[tokio::test]
async fn concurrent_creation_is_race_free() {
    let table = random_name("cadenas_race");
    let _c = cleanup_table(&table);
    admin().await.close().await;
    let url = with_query(&base_url(), &format!("table={table}&pool_size=1"));
    creation_is_race_free(url, |url| async move { MySqlStore::connect(&url).await }).await;
}

#[tokio::test]
async fn killed_connections_leave_the_lease_standing() {
    let table = random_name("cadenas_kill");
    let _c = cleanup_table(&table);
    admin().await.close().await;
    let ids = Arc::new(Mutex::new(Vec::<u64>::new()));
    let seen = ids.clone();
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            let seen = seen.clone();
            Box::pin(async move {
                let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .fetch_one(&mut *conn)
                    .await?;
                seen.lock().unwrap().push(id);
                Ok(())
            })
        })
        .connect(&base_url())
        .await
        .unwrap();
    let s = MySqlStore::from_pool(pool, MySqlOptions::new().table(&table))
        .await
        .unwrap();
    let f = fence_of(
        s.try_acquire(AcquireRequest::new("k", "a", LONG))
            .await
            .unwrap(),
    );
    let admin = admin().await;
    let to_kill: Vec<u64> = ids.lock().unwrap().clone();
    assert!(!to_kill.is_empty());
    for id in to_kill {
        let _ = admin.execute(format!("KILL {id}").as_str()).await;
    }
    let info = s.inspect("k").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("a", Some(f)));
    assert!(matches!(
        s.try_acquire(AcquireRequest::new("k", "b", LONG))
            .await
            .unwrap(),
        Acquire::Held(_)
    ));
    assert!(s.release("k", "a").await.unwrap());
}

/// Pool options from the URL reach the pool; lease mode declares every capability of a
/// mutex store.
#[tokio::test]
async fn pool_options() {
    let (s, _t, _c) = store_with("pool_size=3&test_before_acquire=false").await;
    let caps = s.capabilities();
    assert!(caps.fencing && caps.ttl_none && caps.list && caps.shared && caps.notify);
    assert!(!s.pool().options().get_test_before_acquire());
    assert_eq!(s.pool().options().get_max_connections(), 3);
    fence_of(
        s.try_acquire(AcquireRequest::new("k", "o", LONG))
            .await
            .unwrap(),
    );
    assert!(s.release("k", "o").await.unwrap());
}

/// Verrou (Node.js, Knex) and cadenas share one table and exclude each other.
#[tokio::test]
async fn verrou_interop() {
    admin().await.close().await;
    let table = random_name("verrou");
    let _c = cleanup_table(&table);
    // Verrou starts first and creates its three-column table.
    let mut node = verrou::Node::start(
        env!("CARGO_TARGET_TMPDIR"),
        KNEX_CLIENT,
        &base_url(),
        &table,
    )
    .await;
    let url = with_query(&base_url(), &format!("table={table}"));
    verrou::check_interop(&mut node, connect(&url)).await;
    node.quit().await;
}

const KNEX_CLIENT: &str = "mysql2";

/// The waiters of this process are woken by its own releases, one per release, without the
/// server: with a poll delay far longer than the check allows, every waiter still gets the
/// lock in turn.
#[tokio::test]
async fn waiters_in_this_process_are_woken_by_its_releases() {
    let (s, _t, _c) = store_with("").await;
    let locks = cadenas::Locks::builder()
        .ttl(Some(Duration::from_secs(60)))
        .build(s)
        .unwrap();
    let first = locks.lock("k").acquire().await.unwrap();
    let slow_poll = cadenas::Retry::default()
        .delay(Duration::from_secs(300))
        .timeout(Duration::from_secs(300));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let lock = locks.lock("k").with_retry(slow_poll.clone());
            tokio::spawn(async move {
                let g = lock.acquire().await.unwrap();
                g.release().await.unwrap();
            })
        })
        .collect();
    // Let every waiter make its first try and subscribe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.release().await.unwrap();
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("a waiter was not woken by a release of this process (it polls every 300 s)")
            .unwrap();
    }
}

/// A store with its own pool and notifier stands for another process: its waiter, polling
/// every 300 s, is woken by the server when the holder's store releases or force-releases
/// the key, and by the next holder's release after that.
#[tokio::test]
async fn waiters_in_other_processes_are_woken_by_the_server() {
    let (holder, table, _c) = store_with("").await;
    let other = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    woken_across(holder, other, &table).await;
}

/// The same with the statements MySQL 8 runs (no `DELETE … RETURNING`): a release of a row
/// with waiters reads them and deletes in one transaction.
#[tokio::test]
async fn waiters_are_woken_by_mysql_8_statements_too() {
    let (holder, table, _c) = store_with("").await;
    let without = |store: MySqlStore| {
        let table = table.clone();
        async move {
            let options = MySqlOptions::new().table(table).delete_returning(false);
            MySqlStore::from_pool(store.pool().clone(), options)
                .await
                .unwrap()
        }
    };
    let holder = without(holder).await;
    let url = with_query(&base_url(), &format!("table={table}"));
    let other = without(connect(&url).await).await;
    // Not ours: nothing deleted, whoever waits.
    fence_of(
        holder
            .try_acquire(AcquireRequest::new("n", "a", LONG))
            .await
            .unwrap(),
    );
    admin_update(&table, "n", "ffffffffffffffff").await;
    assert!(!holder.release("n", "b").await.unwrap());
    assert!(holder.release("n", "a").await.unwrap());
    woken_across(holder, other, &table).await;
}

/// Sets the `waiters` column of `key` in `table`.
async fn admin_update(table: &str, key: &str, waiters: &str) {
    let admin = admin().await;
    sqlx::query(&format!("UPDATE `{table}` SET waiters = ? WHERE `key` = ?"))
        .bind(waiters)
        .bind(key)
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

/// A waiter on `other`, polling every 300 s, gets key `k` of `table` in turn after releases
/// and a force release on `holder`.
async fn woken_across(holder: MySqlStore, other: MySqlStore, table: &str) {
    let ttl = Some(Duration::from_secs(60));
    let holder = cadenas::Locks::builder().ttl(ttl).build(holder).unwrap();
    let waiters = cadenas::Locks::builder().ttl(ttl).build(other).unwrap();
    let slow_poll = cadenas::Retry::default()
        .delay(Duration::from_secs(300))
        .timeout(Duration::from_secs(300));
    let admin = admin().await;
    for round in 0..4 {
        let held = holder.lock("k").acquire().await.unwrap();
        let lock = waiters.lock("k").with_retry(slow_poll.clone());
        let waiting = tokio::spawn(async move { lock.acquire().await });
        // The waiter's second try writes it into the row.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while waiters_column(&admin, table).await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the waiter never wrote itself into the row"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if round == 3 {
            assert!(holder.store().force_release("k").await.unwrap());
            // Its release finds the key gone; awaited here, not left to a task of the
            // guard's drop that could still be in a transaction when the table is dropped.
            assert!(held.release().await.is_err());
        } else {
            held.release().await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the waiter of the other store was not woken (it polls every 300 s)")
            })
            .unwrap()
            .unwrap();
        got.release().await.unwrap();
    }
}

/// The `waiters` column of key `k` in `table`, read through `admin`, if the row is there
/// and has any.
async fn waiters_column(admin: &sqlx::MySqlPool, table: &str) -> Option<String> {
    let w: Option<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT CAST(waiters AS CHAR) FROM `{table}` WHERE `key` = 'k'"
    ))
    .fetch_optional(admin)
    .await
    .unwrap();
    w.flatten()
}

/// What a row says waits is only a name: a release looks up which connection holds that
/// name's user lock and ends the query of that one only. A connection whose id is written
/// into the row sleeps on undisturbed, and names nobody holds are skipped.
#[tokio::test]
async fn a_release_wakes_only_a_store_that_waits() {
    let (s, table, _c) = store_with("").await;
    fence_of(
        s.try_acquire(AcquireRequest::new("k", "o", LONG))
            .await
            .unwrap(),
    );
    let admin = admin().await;
    let mut bystander = admin.acquire().await.unwrap();
    let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&mut *bystander)
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE `{table}` SET waiters = ? WHERE `key` = 'k'"
    ))
    .bind(format!("{id},ffffffffffffffff,,x'); KILL 1; --"))
    .execute(&admin)
    .await
    .unwrap();
    let sleeping = tokio::spawn(async move {
        let slept: i64 = sqlx::query_scalar("SELECT SLEEP(2)")
            .fetch_one(&mut *bystander)
            .await
            .expect("the bystander's query was not interrupted");
        slept
    });
    // The release must come while the bystander sleeps, or a wrong KILL would go unseen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let asleep: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SELECT SLEEP%'",
        )
        .bind(id)
        .fetch_one(&admin)
        .await
        .unwrap();
        if asleep > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bystander never began its sleep"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(s.release("k", "o").await.unwrap());
    assert_eq!(
        sleeping.await.unwrap(),
        0,
        "the bystander's sleep ran to its end"
    );
    assert!(s.inspect("k").await.unwrap().is_none());
}
