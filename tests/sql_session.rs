//! Session mode (`?mode=session`) on PostgreSQL and MariaDB/MySQL, against the real servers:
//! what the conformance suite cannot show — a holder whose connection the server kills is
//! told `Lost` at its next liveness check, another client sees the lock go with the
//! connection, waiters in other clients are woken by the server, and fences keep growing
//! across clients. Servers as in `tests/conformance.rs`; nothing is created but the
//! PostgreSQL fence sequence of a random table, dropped at the end.
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::time::{Duration, Instant};

use cadenas::{Error, Locks, Retry};

fn random(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() >> 16)
}

/// What differs per server: its URL in session mode and how to kill a session.
struct Server {
    url: String,
    kill: fn(u64) -> futures_util::future::BoxFuture<'static, ()>,
}

/// The session holding `key`, as another client sees it (`backend 4242`, `connection 17`).
async fn session_of(other: &Locks, key: &str) -> u64 {
    let info = other.lock(key).inspect().await.unwrap().expect("held");
    let id = info.owner.rsplit(' ').next().unwrap();
    id.parse()
        .unwrap_or_else(|_| panic!("another client sees the session: {info:?}"))
}

async fn killed_connection_fires_lost(server: Server) {
    let (a, b) = (
        Locks::connect(&server.url).await.unwrap(),
        Locks::connect(&server.url).await.unwrap(),
    );
    let key = random("lost-");
    let ttl = Duration::from_millis(1500);
    let g = a
        .lock(&key)
        .with_ttl(Some(ttl))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    let id = session_of(&b, &key).await;
    let killed = Instant::now();
    (server.kill)(id).await;
    let e = tokio::time::timeout(Duration::from_secs(10), g.lost())
        .await
        .expect("the lost signal fires");
    assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    // Within one liveness check (ttl/3), plus a loaded machine's scheduling.
    assert!(
        killed.elapsed() < ttl / 3 + Duration::from_millis(700),
        "{}: lost {:?} after the kill",
        a.describe(),
        killed.elapsed()
    );
    // The lock went with the connection: another client takes it at once.
    let next = b
        .lock(&key)
        .try_acquire()
        .await
        .expect("free after the kill");
    assert!(next.fence() > g.fence(), "fences grow across clients");
    assert!(g.release().await.is_err());
    next.release().await.unwrap();
    // The killed connection's other locks are gone too; the store goes on with new ones.
    let again = a.lock(&key).try_acquire().await.unwrap();
    again.release().await.unwrap();
}

async fn waiter_is_woken_by_the_server(server: Server) {
    let (a, b) = (
        Locks::connect(&server.url).await.unwrap(),
        Locks::connect(&server.url).await.unwrap(),
    );
    let key = random("handoff-");
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let g = a.lock(&key).acquire().await.unwrap();
        let lock = b.lock(&key).with_retry(
            Retry::default()
                .delay(Duration::from_secs(60))
                .timeout(Duration::from_secs(60)),
        );
        let waiting = tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            (Instant::now(), g)
        });
        // Until the waiter blocks in the server's wait (its first tries are done).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        g.release().await.unwrap();
        let (got, g2) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the release, not by its 60 s poll")
            .unwrap();
        latencies.push(got - released);
        g2.release().await.unwrap();
    }
    latencies.sort();
    // Median well under any poll delay (the figure itself is measured in BENCHMARKS.md).
    assert!(latencies[2] < Duration::from_millis(100), "{latencies:?}");
}

/// The waiters of one key in a process queue in the order they subscribed, and only the
/// first polls (`ahead` is 0 for it alone): 256 tasks on one key do not flood the session
/// connections with tries.
async fn waiters_queue_in_order(server: Server) {
    let locks = Locks::connect(&server.url).await.unwrap();
    let key = random("queue-");
    let store = locks.store();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            store
                .subscribe(&key)
                .await
                .unwrap()
                .expect("a subscription"),
        );
    }
    let ahead: Vec<usize> = subs.iter().map(|s| s.ahead()).collect();
    assert_eq!(ahead, [0, 1, 2]);
    subs.remove(0);
    let ahead: Vec<usize> = subs.iter().map(|s| s.ahead()).collect();
    assert_eq!(ahead, [0, 1], "the first gone, the next is first");
    drop(subs);
    locks.disconnect().await.unwrap();
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use cadenas_test_support::postgres::base_url;

    fn kill(pid: u64) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let pool = sqlx::PgPool::connect(&base_url()).await.unwrap();
            let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid as i32)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(done, "backend {pid} was terminated");
            pool.close().await;
        })
    }

    async fn with_table(test: impl std::future::Future<Output = ()>, table: &str) {
        test.await;
        let pool = sqlx::PgPool::connect(&base_url()).await.unwrap();
        sqlx::query(&format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""))
            .execute(&pool)
            .await
            .unwrap();
    }

    fn server(table: &str) -> Server {
        Server {
            url: format!("{}?mode=session&table={table}", base_url()),
            kill,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_terminated_backend_fires_lost() {
        let table = random("cadenas_ss_");
        with_table(killed_connection_fires_lost(server(&table)), &table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_waiter_is_woken_by_the_server() {
        let table = random("cadenas_ss_");
        with_table(waiter_is_woken_by_the_server(server(&table)), &table).await;
    }

    #[tokio::test]
    async fn postgres_waiters_queue_in_order() {
        let table = random("cadenas_ss_");
        with_table(waiters_queue_in_order(server(&table)), &table).await;
    }

    /// A store's waits reuse its waiting connection: PostgreSQL starts a backend process per
    /// connection, which a waiter would otherwise wait for at every wait (its hand-off took
    /// the backend's start-up time, not the server's wake-up). Round after round, the
    /// backend that waits for the key is the same one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_reuse_the_waiting_connection() {
        let table = random("cadenas_ss_");
        let app = random("cadenas-wait-");
        let url = format!("{}&application_name={app}", server(&table).url);
        let test = async {
            let (holder, waiter) = (
                Locks::connect(&url).await.unwrap(),
                Locks::connect(&url).await.unwrap(),
            );
            let admin = sqlx::PgPool::connect(&base_url()).await.unwrap();
            let key = random("reuse-");
            let mut waiting_backends = Vec::new();
            for _ in 0..4 {
                let held = holder.lock(&key).acquire().await.unwrap();
                let lock = waiter.lock(&key);
                let waiting = tokio::spawn(async move { lock.acquire().await });
                let deadline = Instant::now() + Duration::from_secs(20);
                let pid = loop {
                    let pid: Option<i32> = sqlx::query_scalar(
                        "SELECT pid FROM pg_stat_activity \
                         WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    )
                    .bind(&app)
                    .fetch_optional(&admin)
                    .await
                    .unwrap();
                    if let Some(pid) = pid {
                        break pid;
                    }
                    assert!(Instant::now() < deadline, "no backend waited for the key");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                waiting_backends.push(pid);
                held.release().await.unwrap();
                let got = tokio::time::timeout(Duration::from_secs(20), waiting)
                    .await
                    .expect("the waiter was woken")
                    .unwrap()
                    .unwrap();
                got.release().await.unwrap();
            }
            waiting_backends.dedup();
            assert_eq!(
                waiting_backends.len(),
                1,
                "backends that waited: {waiting_backends:?}"
            );
            admin.close().await;
        };
        with_table(test, &table).await;
    }

    #[tokio::test]
    async fn lease_mode_options_are_refused_in_session_mode() {
        for option in ["unlogged=true", "synchronous_commit=off"] {
            let url = format!("{}?mode=session&{option}", base_url());
            let e = Locks::connect(&url).await.unwrap_err().to_string();
            assert!(e.contains("lease mode only"), "{e}");
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use cadenas_test_support::mysql::base_url;

    fn kill(id: u64) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let pool = sqlx::MySqlPool::connect(&base_url()).await.unwrap();
            sqlx::query(&format!("KILL {id}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        })
    }

    fn server() -> Server {
        Server {
            url: format!("{}?mode=session", base_url()),
            kill,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_killed_connection_fires_lost() {
        killed_connection_fires_lost(server()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_waiter_is_woken_by_the_server() {
        waiter_is_woken_by_the_server(server()).await;
    }

    #[tokio::test]
    async fn mariadb_waiters_queue_in_order() {
        waiters_queue_in_order(server()).await;
    }
}
