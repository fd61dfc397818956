//! A client of a SQL store that stalls in the middle of one of lease mode's transactions
//! (its process paused, its network cut) holds the key up for about 2 s, not until its
//! connection dies: PostgreSQL and MariaDB bound the time a session may sit idle in those
//! transactions.
//!
//! The stalled client reaches the server through a proxy that the test freezes, and keeps
//! acquiring and releasing one permit of a semaphore; the test freezes the proxy until the
//! server shows that client's session idle inside a transaction that holds locks, then times
//! another client's acquire of the key. Set `CADENAS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `CADENAS_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`); each test uses its own random table and drops it at
//! the end.
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cadenas::store::{Acquire, AcquireRequest, Store};
use cadenas::LockKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy on a free port of 127.0.0.1 that holds every chunk it reads, in both
/// directions, while frozen: a stalled client, as the server sees it.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    /// The local ports of its connections to the server.
    server_side: Arc<Mutex<Vec<u16>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let server_side = Arc::new(Mutex::new(Vec::new()));
        let (f, ports) = (frozen.clone(), server_side.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                ports
                    .lock()
                    .unwrap()
                    .push(server.local_addr().unwrap().port());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, f.clone()));
                tokio::spawn(pump(server_read, client_write, f.clone()));
            }
        });
        Proxy {
            port,
            frozen,
            server_side,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }

    fn ports(&self) -> Vec<u16> {
        self.server_side.lock().unwrap().clone()
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The host:port of `url`'s server.
fn target(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
}

/// Connects a client to the store at `base` (through a proxy) and another directly, both on
/// `table`; stalls the first inside a transaction that holds locks, as `caught` (given the
/// proxy's server-side ports) tells, and checks that an acquire of the second on the key
/// waits about 2 s, not until the stalled client goes on, and finds the stalled
/// transaction rolled back.
async fn stalled_client_holds_the_key_up_for_seconds_only<S, N, M, C, F>(
    base: &str,
    table: &str,
    connect: N,
    caught: C,
) where
    S: Store + 'static,
    N: Fn(String) -> M,
    M: Future<Output = S>,
    C: Fn(Vec<u16>) -> F,
    F: Future<Output = bool>,
{
    let proxy = Proxy::start(target(base)).await;
    let with = |url: &str| cadenas_test_support::with_query(url, &format!("table={table}"));
    let stalled = Arc::new(connect(with(&proxy.url(base))).await);
    let direct = connect(with(base)).await;
    // Two permits: whether the stalled client was joining or leaving, one is free once
    // its transaction is rolled back.
    let sem = LockKind::Permits(2);
    let ttl = Some(Duration::from_secs(60));
    let busy = tokio::spawn({
        let s = stalled.clone();
        async move {
            loop {
                let r = AcquireRequest::new("k", "stalled", ttl).with_kind(sem);
                if let Ok(Acquire::Acquired(_)) = s.try_acquire(r).await {
                    let _ = s.release("k", "stalled").await;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proxy.freeze(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if caught(proxy.ports()).await {
            break;
        }
        proxy.freeze(false);
        assert!(
            Instant::now() < deadline,
            "the busy client was never caught inside a transaction holding locks"
        );
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        direct.try_acquire(AcquireRequest::new("k", "direct", ttl).with_kind(sem)),
    )
    .await;
    let took = started.elapsed();
    let still_caught = caught(proxy.ports()).await;
    proxy.freeze(false);
    busy.abort();
    let answer =
        answer.expect("an acquire of the key waited 15 s behind a stalled client's transaction");
    assert!(
        matches!(answer, Ok(Acquire::Acquired(_))),
        "the stalled client's transaction was not rolled back: {answer:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "held up {took:?} by a client stalled in a transaction (bound: 2 s)"
    );
    assert!(!still_caught, "the stalled session still holds its locks");
    direct.release("k", "direct").await.unwrap();
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use cadenas_test_support::postgres::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_stalled_inside_a_group_transaction_holds_the_key_up_for_seconds_only() {
        let table = random_name("cadenas_stall");
        let _c = cleanup_table(&table);
        let admin = admin().await;
        // Caught: a session of the proxy's sits idle in a transaction holding an advisory
        // lock (the key's gate).
        let caught = |ports: Vec<u16>| {
            let admin = admin.clone();
            async move {
                let ports: Vec<i32> = ports.into_iter().map(i32::from).collect();
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN pg_locks l \
                       ON l.pid = a.pid \
                     WHERE a.client_port = ANY($1) AND a.state = 'idle in transaction' \
                       AND l.locktype = 'advisory' AND l.granted)",
                )
                .bind(ports)
                .fetch_one(&admin)
                .await
                .unwrap()
            }
        };
        let connect = |url: String| async move { connect(&url).await };
        stalled_client_holds_the_key_up_for_seconds_only(&base_url(), &table, connect, caught)
            .await;
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use cadenas_test_support::mysql::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_stalled_inside_a_transaction_holds_the_key_up_for_seconds_only() {
        let table = random_name("cadenas_stall");
        let _c = cleanup_table(&table);
        let admin = admin().await;
        // Caught: the key's fence counter or its row is row-locked by someone (the stalled
        // client: nobody else runs), as a locking read that does not wait finds.
        let caught = |_ports: Vec<u16>| {
            let (admin, table) = (admin.clone(), table.clone());
            async move {
                let mut tx = admin.begin().await.unwrap();
                for t in [format!("{table}_fences"), table] {
                    let read = format!("SELECT 1 FROM `{t}` WHERE `key` = 'k' FOR UPDATE NOWAIT");
                    match sqlx::query(&read).fetch_optional(&mut *tx).await {
                        Ok(_) => {}
                        Err(sqlx::Error::Database(e)) if e.message().contains("Lock wait") => {
                            return true
                        }
                        Err(e) => panic!("{read}: {e}"),
                    }
                }
                false
            }
        };
        let connect = |url: String| async move { connect(&url).await };
        stalled_client_holds_the_key_up_for_seconds_only(&base_url(), &table, connect, caught)
            .await;
    }
}
