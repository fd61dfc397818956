//! The PostgreSQL store against a real server: what is specific to PostgreSQL (table
//! options, schemas, `LISTEN`/`NOTIFY`, killed connections, Verrou's tables). The behaviour
//! every store shares is checked by the conformance suite (`tests/conformance.rs`).
//!
//! Set `CADENAS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Every test uses its own random table and drops it at the end. An unreachable server
//! fails the tests: they never skip.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use cadenas::store::{Acquire, AcquireRequest, Store, StoreErrorKind};
use cadenas::stores::postgres::{PostgresOptions, PostgresStore};
use cadenas::Error;
use sqlx::postgres::PgPoolOptions;

use cadenas_test_support::postgres::*;
use cadenas_test_support::verrou_sql as verrou;

#[tokio::test]
async fn bad_table_name_is_refused_before_any_sql() {
    // Port 1 has no server: a config error (not a connection error) proves no SQL was sent.
    for bad in ["bad;drop", "1abc", "a-b", "x%20y"] {
        let url = format!("postgres://u:secret@127.0.0.1:1/db?table={bad}");
        let e = PostgresStore::connect(&url).await.unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(!e.to_string().contains("secret"));
    }
    let e = PostgresStore::connect("postgres://127.0.0.1:1/db?schema=no-pe")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let e = PostgresStore::from_pool(
        PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/db")
            .unwrap(),
        PostgresOptions::new().table("robert'); drop"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let e = PostgresStore::connect("postgres://127.0.0.1:1/db?frobnicate=1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("frobnicate"), "{e}");
}

#[tokio::test]
async fn table_with_wrong_columns_is_rejected() {
    let admin = admin().await;
    let table = random_name("cadenas_bad");
    let _c = cleanup_table(&table);
    sqlx::query(&format!(
        "CREATE TABLE \"{table}\" (\"key\" varchar(255) primary key, \"owner\" varchar(255))"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let e = PostgresStore::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("expiration") && text.contains(&table),
        "{text}"
    );
    assert!(matches!(&e, Error::Store { source, .. } if source.kind == StoreErrorKind::Rejected));
}

#[tokio::test]
async fn a_verrou_table_gets_our_columns() {
    let admin = admin().await;
    let table = random_name("cadenas_v");
    let _c = cleanup_table(&table);
    sqlx::query(&format!(
        "CREATE TABLE \"{table}\" (\"key\" varchar(255) primary key, \"owner\" varchar(255) not null, expiration bigint)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    // A Verrou row: three columns, client-clock expiration.
    sqlx::query(&format!(
        "INSERT INTO \"{table}\" (\"key\", owner, expiration) VALUES ('v', 'node', (extract(epoch from now())*1000)::bigint + 60000)"
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
    fence_of(
        s.try_acquire(AcquireRequest::new("w", "rust", LONG))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn unreachable_and_wrong_credentials() {
    admin().await.close().await;
    let u = url::Url::parse(&base_url()).unwrap();
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(5432));
    let user = random_name("nobody");
    let urls = [
        "postgres://u:hunter2@127.0.0.1:1/test".to_owned(),
        format!("postgres://{user}:hunter2@{host}/test"),
        format!("postgres://postgres@{host}/{user}"),
    ];
    refuses_unreachable_and_wrong_credentials(urls, |url| async move {
        PostgresStore::connect(&url).await
    })
    .await;
}

#[tokio::test]
async fn concurrent_creation_is_race_free() {
    let table = random_name("cadenas_race");
    let _c = cleanup_table(&table);
    admin().await.close().await;
    let url = with_query(&base_url(), &format!("table={table}&pool_size=1"));
    creation_is_race_free(url, |url| async move { PostgresStore::connect(&url).await }).await;
}

#[tokio::test]
async fn unlogged_table_and_schema_option() {
    let admin = admin().await;
    let (s, table, _c) = store_with("unlogged=true").await;
    let persistence: String =
        sqlx::query_scalar("SELECT relpersistence::text FROM pg_class WHERE relname = $1")
            .bind(&table)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(persistence, "u");
    fence_of(
        s.try_acquire(AcquireRequest::new("k", "o", LONG))
            .await
            .unwrap(),
    );

    let schema = random_name("cadenas_s");
    let _cs = cleanup(vec![format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")]);
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&admin)
        .await
        .unwrap();
    let s = connect(&with_query(&base_url(), &format!("schema={schema}"))).await;
    assert_eq!(s.qualified_table(), format!("{schema}.cadenas_locks"));
    fence_of(
        s.try_acquire(AcquireRequest::new("k", "o", LONG))
            .await
            .unwrap(),
    );
}

/// `synchronous_commit=off` applies to the store's connections; a value PostgreSQL does
/// not have is refused before connecting. `test_before_acquire=false` reaches the pool.
#[tokio::test]
async fn synchronous_commit_and_pool_options() {
    let (s, _t, _c) =
        store_with("synchronous_commit=off&pool_size=2&test_before_acquire=false").await;
    assert!(!s.pool().options().get_test_before_acquire());
    assert_eq!(s.pool().options().get_max_connections(), 2);
    fence_of(
        s.try_acquire(AcquireRequest::new("k", "o", LONG))
            .await
            .unwrap(),
    );
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(setting, "off");
    assert!(s.release("k", "o").await.unwrap());

    let e = PostgresStore::connect("postgres://u:pw@127.0.0.1:1/test?synchronous_commit=sometimes")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("synchronous_commit=sometimes") && e.contains("remote_apply"),
        "{e}"
    );
}

#[tokio::test]
async fn killed_connections_leave_the_lease_standing() {
    let app = random_name("cadenas_kill");
    let (s, _t, _c) = store_with(&format!("application_name={app}")).await;
    let f = fence_of(
        s.try_acquire(AcquireRequest::new("k", "a", LONG))
            .await
            .unwrap(),
    );
    let admin = admin().await;
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the store's connections were found");
    // The lease stands, and the pool reconnects for the next operations.
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

async fn try_k(store: &PostgresStore, owner: &str) -> Acquire {
    store
        .try_acquire(AcquireRequest::new("k", owner, LONG))
        .await
        .unwrap()
}

/// The `LISTEN` connection is killed (as by a server restart): waiters are woken when it is
/// back, and later releases are heard again.
#[tokio::test]
async fn notifications_survive_a_killed_listen_connection() {
    let app = random_name("cadenas_listen");
    let (waiter, table, _c) = store_with(&format!("application_name={app}")).await;
    assert!(waiter.capabilities().fencing && waiter.capabilities().notify);
    let holder = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let mut sub = waiter
        .subscribe("k")
        .await
        .unwrap()
        .expect("postgres notifies");
    let held = |a: Acquire| assert!(matches!(a, Acquire::Held(_)), "{a:?}");
    // One release heard first: the listener is up before it is killed.
    fence_of(try_k(&holder, "h").await);
    held(try_k(&waiter, "w").await);
    assert!(holder.release("k", "h").await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), sub.released())
        .await
        .expect("woken by NOTIFY");
    fence_of(try_k(&holder, "h").await);
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin().await)
    .await
    .unwrap();
    assert!(!killed.is_empty());
    tokio::time::timeout(Duration::from_secs(10), sub.released())
        .await
        .expect("woken after the listener reconnected");
    held(try_k(&waiter, "w").await);
    assert!(holder.release("k", "h").await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), sub.released())
        .await
        .expect("notifications work again after the reconnect");
    // Force release notifies as well.
    fence_of(try_k(&holder, "h").await);
    held(try_k(&waiter, "w").await);
    assert!(waiter.force_release("k").await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), sub.released())
        .await
        .expect("woken by force release");
}

async fn next_payload(listener: &mut sqlx::postgres::PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap()
        .payload()
        .to_owned()
}

/// Only releases someone waited for reach PostgreSQL's notification queue (a NOTIFY takes a
/// database-wide lock until its commit is flushed); a takeover of an expired lease keeps
/// the mark, so the waiters of the old lease hear the new holder's release.
#[tokio::test]
async fn only_waited_for_releases_notify() {
    let (s, table, _c) = store_with("").await;
    let other = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    // The channel for a short table name: "cadenas.<schema>.<table>".
    let channel = format!("cadenas.{}", s.qualified_table());
    let mut listener = sqlx::postgres::PgListener::connect(&base_url())
        .await
        .unwrap();
    listener.listen(&channel).await.unwrap();
    // Nobody waited: no notification. Then a release someone waited for: notified.
    fence_of(
        s.try_acquire(AcquireRequest::new("quiet", "a", LONG))
            .await
            .unwrap(),
    );
    assert!(s.release("quiet", "a").await.unwrap());
    fence_of(
        s.try_acquire(AcquireRequest::new("quiet", "a", LONG))
            .await
            .unwrap(),
    );
    assert!(s.force_release("quiet").await.unwrap());
    fence_of(
        s.try_acquire(AcquireRequest::new("loud", "a", LONG))
            .await
            .unwrap(),
    );
    assert!(matches!(
        other
            .try_acquire(AcquireRequest::new("loud", "b", LONG))
            .await
            .unwrap(),
        Acquire::Held(_)
    ));
    assert!(s.release("loud", "a").await.unwrap());
    assert_eq!(next_payload(&mut listener).await, "loud");
    // The mark is per lease: the next holder's release is quiet again...
    fence_of(
        s.try_acquire(AcquireRequest::new("loud", "a", LONG))
            .await
            .unwrap(),
    );
    assert!(s.release("loud", "a").await.unwrap());
    // ...unless it took over an expired lease someone waited for.
    fence_of(
        s.try_acquire(AcquireRequest::new("exp", "a", LONG))
            .await
            .unwrap(),
    );
    assert!(matches!(
        other
            .try_acquire(AcquireRequest::new("exp", "b", LONG))
            .await
            .unwrap(),
        Acquire::Held(_)
    ));
    sqlx::query(&format!(
        "UPDATE \"{table}\" SET expiration = 1 WHERE \"key\" = 'exp'"
    ))
    .execute(&admin().await)
    .await
    .unwrap();
    fence_of(
        s.try_acquire(AcquireRequest::new("exp", "c", LONG))
            .await
            .unwrap(),
    );
    assert!(s.release("exp", "c").await.unwrap());
    assert_eq!(
        next_payload(&mut listener).await,
        "exp",
        "no notification for the quiet releases before"
    );
}

#[tokio::test]
async fn a_pool_of_one_with_subscriptions_does_not_deadlock() {
    let table = random_name("cadenas_one");
    let _c = cleanup_table(&table);
    admin().await.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&base_url())
        .await
        .unwrap();
    let s = Arc::new(
        PostgresStore::from_pool(pool.clone(), PostgresOptions::new().table(&table))
            .await
            .unwrap(),
    );
    let run = async {
        fence_of(
            s.try_acquire(AcquireRequest::new("k", "holder", LONG))
                .await
                .unwrap(),
        );
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let owner = format!("w{i}");
                    let mut sub = s.subscribe("k").await.unwrap().unwrap();
                    loop {
                        if let Acquire::Acquired(_) = s
                            .try_acquire(AcquireRequest::new("k", &owner, LONG))
                            .await
                            .unwrap()
                        {
                            assert!(s.release("k", &owner).await.unwrap());
                            return;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(1), sub.released()).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(s.release("k", "holder").await.unwrap());
        for w in waiters {
            w.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("no deadlock with a pool of one");
    s.close().await.unwrap();
    assert!(!pool.is_closed(), "close leaves a caller's pool open");
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

const KNEX_CLIENT: &str = "pg";

/// A table made by an earlier cadenas gets the group columns and the holders table; a
/// group's row marks the key held for Verrou's acquire while a holder lives; a waiting
/// writer's marker holds readers back past the last reader and is cleared by its take; the
/// expiry watcher reports an expired holder once; the last release removes everything.
#[tokio::test]
async fn groups_live_in_the_lock_table_and_its_holders_table() {
    use cadenas::LockKind;
    let admin = admin().await;
    let table = random_name("cadenas_g");
    let _c = cleanup_table(&table);
    sqlx::query(&format!(
        "CREATE TABLE \"{table}\" (\"key\" varchar(255) primary key, \"owner\" varchar(255) not null, \
         expiration bigint, fence bigint, metadata text, waiting boolean)"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let s = connect(&with_query(&base_url(), &format!("table={table}"))).await;
    let join = |key: &'static str, owner: &'static str, kind: LockKind, ttl: Duration| {
        let s = &s;
        async move {
            s.try_acquire(AcquireRequest::new(key, owner, Some(ttl)).with_kind(kind))
                .await
                .unwrap()
        }
    };
    let sem = LockKind::Permits(2);
    let a = fence_of(join("api", "a", sem, Duration::from_secs(60)).await);
    let b = fence_of(join("api", "b", sem, Duration::from_millis(300)).await);
    assert!(a < b);
    let row: (String, Option<String>, Option<i32>) = sqlx::query_as(&format!(
        "SELECT owner::text, kind, permits FROM \"{table}\" WHERE \"key\" = 'api'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(row, (String::new(), Some("permits".into()), Some(2)));
    // Verrou's acquire takes only an expired row.
    let verrou = sqlx::query(&format!(
        "INSERT INTO \"{table}\" (\"key\", owner, expiration) \
         VALUES ('api', 'v', (extract(epoch from now()) * 1000)::bigint + 60000) \
         ON CONFLICT (\"key\") DO UPDATE SET owner = EXCLUDED.owner, expiration = EXCLUDED.expiration \
         WHERE \"{table}\".expiration <= (extract(epoch from now()) * 1000)::bigint"
    ))
    .execute(&admin)
    .await
    .unwrap();
    assert_eq!(
        verrou.rows_affected(),
        0,
        "Verrou took a key held by permits"
    );
    match s
        .try_acquire(AcquireRequest::new("api", "m", LONG))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert!(matches!(h.owner.as_deref(), Some("a" | "b")), "{h:?}"),
        other => panic!("a mutex got in beside permits: {other:?}"),
    }
    // b's lease ends: reported once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reaped = loop {
        let r = s.reap_expired("").await.unwrap();
        if !r.is_empty() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b's permit was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!((reaped[0].owner.as_str(), reaped[0].fence), ("b", Some(b)));
    assert!(s.reap_expired("").await.unwrap().is_empty());
    assert_eq!(s.inspect("api").await.unwrap().unwrap().holders.len(), 1);
    assert!(s.release("api", "a").await.unwrap());
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT (SELECT count(*) FROM \"{table}\") + (SELECT count(*) FROM \"{table}_holders\")"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(left, 0, "the last release removes the row and the holders");

    // A waiting writer's marker.
    fence_of(join("cfg", "r1", LockKind::Shared, Duration::from_secs(60)).await);
    let writer = AcquireRequest::new("cfg", "w", LONG).with_writer_waiting(LONG);
    assert!(matches!(
        s.try_acquire(writer).await.unwrap(),
        Acquire::Held(_)
    ));
    match join("cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("w")),
        other => panic!("a reader got in past a waiting writer: {other:?}"),
    }
    assert!(s.release("cfg", "r1").await.unwrap());
    assert!(matches!(
        join("cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await,
        Acquire::Held(_)
    ));
    let w = s
        .try_acquire(AcquireRequest::new(
            "cfg",
            "w",
            Some(Duration::from_millis(100)),
        ))
        .await
        .unwrap();
    let w = fence_of(w);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Acquire::Acquired(l) =
            join("cfg", "r2", LockKind::Shared, Duration::from_secs(60)).await
        {
            assert!(l.fence.unwrap() > w);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer's take did not clear its marker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
