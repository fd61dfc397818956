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

/// Pool options from the URL reach the pool; the store declares all but `notify`.
#[tokio::test]
async fn pool_options() {
    let (s, _t, _c) = store_with("pool_size=3&test_before_acquire=false").await;
    let caps = s.capabilities();
    assert!(caps.fencing && caps.ttl_none && caps.list && caps.shared && !caps.notify);
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

/// Lease mode has no notification across processes (`notify` is false), but the waiters of
/// this process are woken by its own releases, one per release: with a poll delay far longer
/// than the check allows, every waiter still gets the lock in turn.
#[tokio::test]
async fn waiters_in_this_process_are_woken_by_its_releases() {
    let (s, _t, _c) = store_with("").await;
    assert!(!s.capabilities().notify);
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
