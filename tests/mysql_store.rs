//! The MySQL / MariaDB store against a real server.
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
async fn exclusion_and_owner_checks() {
    let (s, _t, _c) = store_with("").await;
    let caps = s.capabilities();
    assert!(caps.fencing && caps.ttl_none && caps.list && caps.shared && !caps.notify);
    let f1 = fence_of(s.try_acquire(req("k", "alice", LONG)).await.unwrap());
    match s.try_acquire(req("k", "bob", LONG)).await.unwrap() {
        Acquire::Held(h) => {
            assert_eq!(h.owner.as_deref(), Some("alice"));
            let r = h.remaining.unwrap();
            assert!(
                r > Duration::from_secs(50) && r <= Duration::from_secs(60),
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.try_acquire(req("k", "alice", LONG)).await.unwrap(),
        Acquire::Held(_)
    ));
    // Case and trailing spaces make other keys and other owners.
    fence_of(s.try_acquire(req("K", "alice", LONG)).await.unwrap());
    fence_of(s.try_acquire(req("k ", "alice", LONG)).await.unwrap());
    assert!(!s.release("k", "ALICE").await.unwrap());
    assert!(!s.release("k", "bob").await.unwrap());
    assert!(s.extend("k", "bob", LONG).await.unwrap().is_none());
    assert!(!s.set_metadata("k", "bob", Some("x")).await.unwrap());
    assert!(s.release("k", "alice").await.unwrap());
    assert!(!s.release("k", "alice").await.unwrap());
    let f2 = fence_of(s.try_acquire(req("k", "bob", LONG)).await.unwrap());
    assert!(f2 > f1);
    s.close().await.unwrap();
}

#[tokio::test]
async fn expiry_takeover_and_fences() {
    let (s, table, _c) = store_with("").await;
    let mut fences = vec![];
    let short = Some(Duration::from_millis(150));
    fences.push(fence_of(s.try_acquire(req("k", "a", short)).await.unwrap()));
    fences.push(acquire_within(&s, "k", "b", Duration::from_secs(5)).await);
    assert!(!s.release("k", "a").await.unwrap());
    assert!(s.extend("k", "a", LONG).await.unwrap().is_none());
    assert!(s.release("k", "b").await.unwrap());
    fences.push(fence_of(s.try_acquire(req("k", "c", None)).await.unwrap()));
    assert!(s.force_release("k").await.unwrap());
    assert!(!s.force_release("k").await.unwrap());
    s.close().await.unwrap();
    let s2 = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    fences.push(fence_of(s2.try_acquire(req("k", "d", LONG)).await.unwrap()));
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[tokio::test]
async fn contention_keeps_fences_increasing() {
    let (s, _t, _c) = store_with("pool_size=8").await;
    let s = Arc::new(s);
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, order) = (s.clone(), order.clone());
            tokio::spawn(async move {
                let owner = format!("t{i}");
                for _ in 0..5 {
                    loop {
                        if let Acquire::Acquired(l) =
                            s.try_acquire(req("hot", &owner, LONG)).await.unwrap()
                        {
                            order.lock().unwrap().push(l.fence.unwrap());
                            assert!(s.release("hot", &owner).await.unwrap());
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 40);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[tokio::test]
async fn ttl_none_extend_and_inspect() {
    let (s, _t, _c) = store_with("").await;
    s.try_acquire(req("forever", "a", None)).await.unwrap();
    let info = s.inspect("forever").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.remaining), ("a", None));
    assert!(info.fence.is_some());
    match s.try_acquire(req("forever", "b", LONG)).await.unwrap() {
        Acquire::Held(h) => assert_eq!((h.owner.as_deref(), h.remaining), (Some("a"), None)),
        other => panic!("{other:?}"),
    }
    let lease = s
        .extend("forever", "a", Some(Duration::from_millis(300)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.fence, info.fence);
    // Twice within the same millisecond still counts as extended.
    assert!(s.extend("forever", "a", LONG).await.unwrap().is_some());
    assert!(s.extend("forever", "a", LONG).await.unwrap().is_some());
    let r = s
        .inspect("forever")
        .await
        .unwrap()
        .unwrap()
        .remaining
        .unwrap();
    assert!(r > Duration::from_secs(50), "{r:?}");
    assert!(s.extend("forever", "a", None).await.unwrap().is_some());
    assert_eq!(s.inspect("forever").await.unwrap().unwrap().remaining, None);
    assert!(s.inspect("absent").await.unwrap().is_none());
}

#[tokio::test]
async fn metadata_round_trip() {
    let (s, _t, _c) = store_with("").await;
    let big = "é".repeat(32 * 1024);
    let r = AcquireRequest {
        key: "m",
        owner: "a",
        ttl: LONG,
        metadata: Some("{\"pid\": 42, \"host\": \"ñandú 🔒\"}"),
    };
    s.try_acquire(r).await.unwrap();
    assert_eq!(
        s.inspect("m").await.unwrap().unwrap().metadata.as_deref(),
        r.metadata
    );
    assert!(s.set_metadata("m", "a", Some(&big)).await.unwrap());
    assert!(
        s.set_metadata("m", "a", Some(&big)).await.unwrap(),
        "unchanged still matches"
    );
    assert_eq!(s.inspect("m").await.unwrap().unwrap().metadata, Some(big));
    assert!(s.set_metadata("m", "a", None).await.unwrap());
    assert_eq!(s.inspect("m").await.unwrap().unwrap().metadata, None);
}

#[tokio::test]
async fn list_escapes_like_and_sorts() {
    let (s, _t, _c) = store_with("").await;
    for key in ["a%b:1", "a_b:2", "axb:3", "a%c", "B", "a%b:0", "a!b"] {
        s.try_acquire(req(key, "o", LONG)).await.unwrap();
    }
    s.try_acquire(req("a%b:expired", "o", Some(Duration::from_millis(1))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let keys = |v: Vec<cadenas::LockInfo>| v.into_iter().map(|i| i.key).collect::<Vec<_>>();
    assert_eq!(keys(s.list("a%b").await.unwrap()), ["a%b:0", "a%b:1"]);
    assert_eq!(keys(s.list("a_b").await.unwrap()), ["a_b:2"]);
    assert_eq!(keys(s.list("a!").await.unwrap()), ["a!b"]);
    assert_eq!(
        keys(s.list("").await.unwrap()),
        ["B", "a!b", "a%b:0", "a%b:1", "a%c", "a_b:2", "axb:3"]
    );
    assert!(s.list("A").await.unwrap().is_empty());
}

#[tokio::test]
async fn sql_metacharacters_and_unicode_keys() {
    let (s, _t, _c) = store_with("").await;
    let long = "ü".repeat(127);
    let keys = [
        "'; DROP TABLE cadenas_locks; --",
        "`backtick` \"quoted\" \\ back\\slash",
        "ключ🔒:锁",
        "? %s $1",
        long.as_str(),
    ];
    for key in keys {
        let owner = format!("{key}-owner'");
        s.try_acquire(req(key, &owner, LONG)).await.unwrap();
        let info = s.inspect(key).await.unwrap().unwrap();
        assert_eq!(
            (info.key.as_str(), info.owner.as_str()),
            (key, owner.as_str())
        );
        assert_eq!(s.list(key).await.unwrap().len(), 1, "{key}");
        assert!(s.release(key, &owner).await.unwrap());
    }
}

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
    match s.try_acquire(req("v", "rust", LONG)).await.unwrap() {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("node")),
        other => panic!("{other:?}"),
    }
    let info = s.inspect("v").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("node", None));
    assert!(info.remaining.unwrap() > Duration::from_secs(50));
    fence_of(
        s.try_acquire(req("w", "rust", Some(Duration::from_millis(1))))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        s.inspect("w").await.unwrap().is_none(),
        "unsigned expiry arithmetic"
    );
    fence_of(s.try_acquire(req("w", "rust", None)).await.unwrap());
}

#[tokio::test]
async fn unreachable_and_wrong_credentials() {
    admin().await.close().await;
    let e = MySqlStore::connect("mysql://u:hunter2@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let u = url::Url::parse(&base_url()).unwrap();
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(3306));
    let user = random_name("nobody");
    let e = MySqlStore::connect(&format!("mariadb://{user}:hunter2@{host}/test"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = MySqlStore::connect(&format!("mysql://root@{host}/{user}"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn concurrent_creation_is_race_free() {
    let table = random_name("cadenas_race");
    let _c = cleanup_table(&table);
    admin().await.close().await;
    let url = with_query(&base_url(), &format!("table={table}&pool_size=1"));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { MySqlStore::connect(&url).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
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
    let f = fence_of(s.try_acquire(req("k", "a", LONG)).await.unwrap());
    let admin = admin().await;
    let to_kill: Vec<u64> = ids.lock().unwrap().clone();
    assert!(!to_kill.is_empty());
    for id in to_kill {
        let _ = admin.execute(format!("KILL {id}").as_str()).await;
    }
    let info = s.inspect("k").await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("a", Some(f)));
    assert!(matches!(
        s.try_acquire(req("k", "b", LONG)).await.unwrap(),
        Acquire::Held(_)
    ));
    assert!(s.release("k", "a").await.unwrap());
}

/// Pool options from the URL reach the pool.
#[tokio::test]
async fn pool_options() {
    let (s, _t, _c) = store_with("pool_size=3&test_before_acquire=false").await;
    assert!(!s.pool().options().get_test_before_acquire());
    assert_eq!(s.pool().options().get_max_connections(), 3);
    fence_of(s.try_acquire(req("k", "o", LONG)).await.unwrap());
    assert!(s.release("k", "o").await.unwrap());
}

#[tokio::test]
async fn local_releases_wake_local_subscribers() {
    let (s, _t, _c) = store_with("").await;
    let mut sub = s.subscribe("k").await.unwrap().expect("local subscription");
    fence_of(s.try_acquire(req("k", "h", LONG)).await.unwrap());
    assert!(s.release("k", "h").await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), sub.released())
        .await
        .expect("woken by a release in this process");
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
    let answer = node.cmd("try k1").await;
    let node_owner = answer.strip_prefix("acquired ").expect(&answer).to_owned();
    let s = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    match s.try_acquire(req("k1", "rust", LONG)).await.unwrap() {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some(node_owner.as_str())),
        other => panic!("cadenas took a lock Verrou holds: {other:?}"),
    }
    assert_eq!(s.inspect("k1").await.unwrap().unwrap().owner, node_owner);
    assert_eq!(node.cmd("release k1").await, "released");
    fence_of(s.try_acquire(req("k1", "rust", LONG)).await.unwrap());
    assert_eq!(node.cmd("try k1").await, "held");
    assert_eq!(node.cmd("locked k1").await, "true");
    assert!(s.release("k1", "rust").await.unwrap());
    assert_eq!(node.cmd("locked k1").await, "false");
    assert!(node.cmd("try k1").await.starts_with("acquired "));
    // A lock that never expires (NULL expiration) holds Verrou off too.
    fence_of(s.try_acquire(req("k2", "rust", None)).await.unwrap());
    assert_eq!(node.cmd("try k2").await, "held");
    // Verrou can release what it took after cadenas added its columns.
    assert_eq!(node.cmd("release k1").await, "released");
    assert!(s.inspect("k1").await.unwrap().is_none());
    node.quit().await;
}

const KNEX_CLIENT: &str = "mysql2";
