//! Redlock under faults, with 5 real `redis-server` masters: nodes killed before and while a
//! lock is held, a node that hangs (SIGSTOP), and two clients racing for one key.
//!
//! The race runs 2,000 rounds by default; set `CADENAS_REDLOCK_RACE=10000` for the long run.
#![cfg(feature = "redlock")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadenas::stores::redlock::RedlockStore;
use cadenas::{Error, Locks, Retry, StoreErrorKind};
use cadenas_test_support::redis::RedisServer;
use redis::AsyncCommands;

fn start(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn url(servers: &[RedisServer], query: &str) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redlock://{}{query}", hosts.join(","))
}

async fn exists(server: &RedisServer, key: &str) -> bool {
    let mut con = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    con.exists(key).await.unwrap()
}

#[tokio::test]
async fn two_nodes_down_before_acquire_still_works() {
    let mut servers = start(5);
    let locks = Locks::connect(&url(&servers, "")).await.unwrap();
    let other = Locks::connect(&url(&servers, "")).await.unwrap();
    servers[1].kill();
    servers[3].kill();
    let g = locks.lock("two-down").acquire().await.unwrap();
    assert!(matches!(
        other.lock("two-down").try_acquire().await,
        Err(Error::AlreadyLocked { .. })
    ));
    assert_eq!(
        other
            .lock("two-down")
            .inspect()
            .await
            .unwrap()
            .unwrap()
            .owner,
        g.owner()
    );
    g.extend(None).await.unwrap();
    g.set_metadata(Some("still here")).await.unwrap();
    assert_eq!(other.list("two-").await.unwrap().len(), 1);
    g.release().await.unwrap();
    let g = other.lock("two-down").try_acquire().await.unwrap();
    g.release().await.unwrap();
    // A store opened while the two are down works too (nodes connect on first use).
    let late = Locks::connect(&url(&servers, "")).await.unwrap();
    late.lock("two-down")
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn three_nodes_down_is_a_clear_error_and_leaves_nothing_held() {
    let mut servers = start(5);
    let locks = Locks::connect(&url(&servers, "")).await.unwrap();
    for i in [0, 2, 4] {
        servers[i].kill();
    }
    let started = Instant::now();
    let e = locks
        .lock("three-down")
        .with_retry(Retry::default().timeout(Duration::from_secs(5)))
        .acquire()
        .await
        .expect_err("no quorum");
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    let text = e.to_string();
    match &e {
        Error::Store { source, .. } => assert_eq!(source.kind, StoreErrorKind::Unavailable),
        other => panic!("expected a store error: {other:?}"),
    }
    for i in [0, 2, 4] {
        let node = format!("127.0.0.1:{}", servers[i].port);
        assert!(text.contains(&node), "{node} not named in: {text}");
    }
    for i in [1, 3] {
        assert!(
            !text.contains(&format!("127.0.0.1:{} (", servers[i].port)),
            "a live node is named as failed: {text}"
        );
    }
    assert!(e.is_retryable(), "{text}");
    // The two live nodes granted the lock; the failed try released them again.
    for i in [1, 3] {
        assert!(
            !exists(&servers[i], "three-down").await,
            "left held on node {i}"
        );
    }
    assert!(locks.lock("three-down").is_locked().await.is_err());
}

#[tokio::test]
async fn a_node_killed_while_held_keeps_the_lock_with_its_holder() {
    let mut servers = start(5);
    let a = Locks::connect(&url(&servers, "")).await.unwrap();
    let b = Locks::connect(&url(&servers, "")).await.unwrap();
    let g = a
        .lock("held")
        .with_ttl(Some(Duration::from_secs(30)))
        .acquire()
        .await
        .unwrap();
    // Held means held on every node: the nodes past the quorum get it moments later.
    let deadline = Instant::now() + Duration::from_secs(5);
    for server in &servers {
        while !exists(server, "held").await {
            assert!(
                Instant::now() < deadline,
                "the lock never reached every node"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    servers[2].kill();
    assert!(matches!(
        b.lock("held").try_acquire().await,
        Err(Error::AlreadyLocked { .. })
    ));
    match b
        .lock("held")
        .with_retry(Retry::default().timeout(Duration::from_millis(300)))
        .acquire()
        .await
    {
        Err(Error::Timeout { holder, .. }) => assert_eq!(holder.as_deref(), Some(g.owner())),
        other => panic!("the lock was taken from its holder: {other:?}"),
    }
    g.extend(Some(Duration::from_secs(30))).await.unwrap();
    assert!(!g.is_expired());
    // A second node goes: still a quorum of 3.
    servers[0].kill();
    g.extend(None).await.unwrap();
    assert!(b.lock("held").try_acquire().await.is_err());
    g.release().await.unwrap();
    b.lock("held")
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hung_node_does_not_stall_acquire() {
    let servers = start(5);
    let timeout = Duration::from_millis(500);
    let u = url(&servers, "?node_timeout=500ms");
    let locks = Locks::connect(&u).await.unwrap();
    let other = Locks::connect(&u).await.unwrap();
    // Connections are up before the node hangs, as in a real hang.
    locks
        .lock("warm")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    other
        .lock("warm")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    servers[4].pause();
    for round in 0..20 {
        let started = Instant::now();
        let g = locks.lock("hung").try_acquire().await.unwrap();
        let took = started.elapsed();
        assert!(took < timeout, "round {round}: acquire took {took:?}");
        assert!(other.lock("hung").try_acquire().await.is_err());
        g.extend(None).await.unwrap();
        g.release().await.unwrap();
    }
    // Two hung nodes: still a quorum, and every operation still ends within the timeout.
    servers[3].pause();
    let started = Instant::now();
    let g = locks.lock("hung").try_acquire().await.unwrap();
    assert!(started.elapsed() < timeout + Duration::from_millis(250));
    g.release().await.unwrap();
    // Three: no quorum; the error names the hung nodes as not answering in time.
    servers[2].pause();
    let started = Instant::now();
    let e = locks
        .lock("hung")
        .try_acquire()
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert!(e.contains("no answer within 500ms"), "{e}");
    for s in &servers[2..] {
        s.resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_racing_never_both_hold_the_lock() {
    let rounds: usize = std::env::var("CADENAS_REDLOCK_RACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let servers = start(5);
    let inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        // Each client its own store: its own connections, like another process.
        // A generous node timeout: other tests run beside this one on a small machine.
        let store = RedlockStore::connect(&url(&servers, "?node_timeout=2s"))
            .await
            .unwrap();
        let locks = Locks::builder()
            .retry(
                Retry::default()
                    .timeout(Duration::from_secs(30))
                    .delay(Duration::from_millis(2))
                    .jitter(Duration::from_millis(2)),
            )
            .build(store)
            .unwrap();
        let (inside, done) = (inside.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < rounds {
                let g = locks
                    .lock("race")
                    .with_ttl(Some(Duration::from_secs(10)))
                    .acquire()
                    .await
                    .expect("each client gets its turn");
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                g.release().await.expect("the holder releases");
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    eprintln!(
        "{} rounds of two racing clients in {:?}",
        done.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert!(done.load(Ordering::SeqCst) >= rounds);
}
