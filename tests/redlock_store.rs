//! The Redlock store against real `redis-server` masters started by the test harness: the
//! conformance suite, URLs and settings, the layout on each node. Faults are in
//! `redlock_faults.rs`. Run with `cargo test --features redlock,conformance --test redlock_store`.
#![cfg(all(feature = "redlock", feature = "conformance"))]

use std::sync::Arc;
use std::time::Duration;

use cadenas::conformance::{run_all, Suite};
use cadenas::stores::redlock::RedlockStore;
use cadenas::{Error, Locks, Retry, Store};
use cadenas_test_support::redis::RedisServer;
use redis::AsyncCommands;

const SLOW_HOST: &str = "?node_timeout=2s";

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

/// A connection to one node, to look at or change what it stores.
async fn connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Two clients stand for two processes: each `connect` opens a new store (new connections).
/// The suite's 64 contenders on a debug build on a small shared machine starve the client's
/// runtime for longer than the default node timeout: the URLs give the nodes 2 s.
fn suite(url: String, namespace: Option<&'static str>) -> Suite {
    let mut suite = Suite::new(move || {
        let url = url.clone();
        async move {
            let store: Arc<dyn Store> = Arc::new(RedlockStore::connect(&url).await.unwrap());
            let mut builder = Locks::builder();
            if let Some(ns) = namespace {
                builder = builder.namespace(ns);
            }
            builder.build_arc(store).unwrap()
        }
    });
    suite.patience = Duration::from_secs(30);
    suite
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_five_nodes() {
    let servers = start(5);
    run_all(&suite(url(&servers, SLOW_HOST), None)).await;
}

/// Without fences (`fences=false`): the suite checks that no fence is handed out or shown
/// and that elections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_three_nodes_in_a_namespace_without_fences() {
    let servers = start(3);
    let url = url(&servers, &format!("{SLOW_HOST}&fences=false"));
    run_all(&suite(url, Some("app"))).await;
}

#[tokio::test]
async fn declares_fencing_and_no_ttl_none() {
    let servers = start(3);
    let locks = Locks::connect(&url(&servers, "")).await.unwrap();
    let caps = locks.store().capabilities();
    assert!(caps.fencing && !caps.ttl_none && caps.notify && caps.list && caps.shared);
    let g = locks.lock("k").acquire().await.unwrap();
    let first = g.fence().expect("a fence");
    g.release().await.unwrap();
    let g = locks.lock("k").acquire().await.unwrap();
    assert!(g.fence().expect("a fence") > first);
    g.release().await.unwrap();
    assert!(matches!(
        locks.lock("k").with_ttl(None).try_acquire().await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        Locks::builder().ttl(None).connect(&url(&servers, "")).await,
        Err(Error::Unsupported { .. })
    ));
}

/// `fences=false` (or the builder's `fences(false)`) is the cheaper path: no fence, no
/// counter touched on the nodes, no elections.
#[tokio::test]
async fn without_fences_no_counter_is_kept() {
    let servers = start(3);
    let store = RedlockStore::builder()
        .fences(false)
        .connect(&url(&servers, ""))
        .await
        .unwrap();
    assert!(!store.capabilities().fencing);
    let locks = Locks::new(store);
    let g = locks
        .lock("plain")
        .with_metadata("m")
        .acquire()
        .await
        .unwrap();
    assert_eq!(g.fence(), None);
    let info = locks.lock("plain").inspect().await.unwrap().unwrap();
    assert_eq!((info.fence, info.metadata.as_deref()), (None, Some("m")));
    g.release().await.unwrap();
    // A plain acquire and release leave every node's fence counter as it was.
    let counters = || async {
        let mut all = Vec::new();
        for server in &servers {
            let mut con = connection(server).await;
            let counter: Option<String> = con.get("__cadenas:fence{plain}").await.unwrap();
            all.push(counter);
        }
        all
    };
    let before = counters().await;
    let g = locks.lock("plain").acquire().await.unwrap();
    assert_eq!(g.fence(), None);
    g.release().await.unwrap();
    assert_eq!(counters().await, before);
    assert!(matches!(
        locks.election("plain", "a").campaign().await,
        Err(Error::Unsupported { .. })
    ));
    let fenced = Locks::connect(&url(&servers, "?fences=true"))
        .await
        .unwrap();
    assert!(fenced.store().capabilities().fencing);
}

/// Sets `key` on `server` to a value of another client, so that the node refuses cadenas'
/// acquires of it; `None` takes it away again.
async fn occupy(server: &RedisServer, key: &str, by: Option<&str>) {
    let mut con = connection(server).await;
    match by {
        Some(owner) => con.set_ex::<_, _, ()>(key, owner, 60).await.unwrap(),
        None => con.del::<_, ()>(key).await.unwrap(),
    }
}

/// The fence of a Redlock lease is the largest of its nodes', and a release raises every
/// node's counter to it: the next holder's fence is higher even when no node of its quorum
/// gave the old one. Node 0's counter is set far ahead of the others' (and of every clock);
/// the first holder's quorum is nodes 0 and 1 (node 2 is occupied by someone else), the
/// second's nodes 1 and 2 (node 0 occupied). Without the raise, node 1 would answer a fence
/// near its clock, far below the first.
#[tokio::test]
async fn a_release_raises_every_nodes_counter_to_the_released_fence() {
    let servers = start(3);
    let locks = Locks::connect(&url(&servers, "")).await.unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let ahead = now_us + 1_000_000_000_000;
    let mut con = connection(&servers[0]).await;
    con.set::<_, _, ()>("__cadenas:fence{k}", ahead)
        .await
        .unwrap();

    occupy(&servers[2], "k", Some("someone-else")).await;
    let first = locks.lock("k").acquire().await.unwrap();
    let fence = first.fence().expect("a fence");
    assert!(fence > ahead, "the largest node fence: {fence} <= {ahead}");
    first.release().await.unwrap();

    occupy(&servers[2], "k", None).await;
    occupy(&servers[0], "k", Some("someone-else")).await;
    let second = locks.lock("k").acquire().await.unwrap();
    let next = second.fence().expect("a fence");
    assert!(next > fence, "fence {next} after {fence}");
    second.release().await.unwrap();
}

#[tokio::test]
async fn remaining_time_is_the_validity() {
    let servers = start(5);
    let store = RedlockStore::connect(&url(&servers, "?drift_factor=0.05"))
        .await
        .unwrap();
    let ttl = Duration::from_secs(10);
    let drift = store.drift(ttl);
    assert_eq!(drift, Duration::from_millis(502));
    let locks = Locks::new(store);
    let g = locks
        .lock("validity")
        .with_ttl(Some(ttl))
        .acquire()
        .await
        .unwrap();
    let left = g.remaining_time().unwrap();
    assert!(left <= ttl - drift, "{left:?}");
    assert!(left > ttl - drift - Duration::from_secs(1), "{left:?}");
    g.extend(Some(Duration::from_secs(20))).await.unwrap();
    let left = g.remaining_time().unwrap();
    assert!(left <= Duration::from_secs(20) - Duration::from_millis(1002));
    g.release().await.unwrap();
}

#[tokio::test]
async fn every_node_holds_the_whole_lock_in_the_redis_layout() {
    let servers = start(3);
    let locks = Locks::connect(&url(&servers, "?namespace=app"))
        .await
        .unwrap();
    let g = locks
        .lock("job")
        .with_ttl(Some(Duration::from_secs(30)))
        .with_metadata("m")
        .acquire()
        .await
        .unwrap();
    // The acquire answers once a quorum granted it; the last node gets it moments later.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for server in &servers {
        let mut con = connection(server).await;
        let owner = loop {
            let owner: Option<String> = con.get("app:job").await.unwrap();
            if owner.is_some() || std::time::Instant::now() > deadline {
                break owner;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        // The owner, a NUL and the id of the request that took it.
        let value = owner.expect("every node holds the lock");
        assert_eq!(value.split_once('\0').map(|(o, _)| o), Some(g.owner()));
        let pttl: i64 = con.pttl("app:job").await.unwrap();
        assert!(pttl > 29_000 && pttl <= 30_000, "{pttl}");
    }
    let info = locks.lock("job").inspect().await.unwrap().unwrap();
    assert_eq!(info.metadata.as_deref(), Some("m"));
    // A holding with metadata is recorded, and every node was told its fence.
    assert_eq!(info.fence, g.fence());
    g.release().await.unwrap();
    for server in &servers {
        let mut con = connection(server).await;
        let exists: bool = con.exists("app:job").await.unwrap();
        assert!(!exists);
    }
}

#[tokio::test]
async fn retry_options_from_the_url_become_the_default_policy() {
    let servers = start(3);
    let u = url(
        &servers,
        "?retry_count=2&retry_delay=20ms&retry_jitter=10ms",
    );
    let store = RedlockStore::connect(&u).await.unwrap();
    assert_eq!(store.retry().get_attempts(), Some(3));
    let locks = Locks::connect(&u).await.unwrap();
    let g = locks.lock("busy").acquire().await.unwrap();
    match locks.lock("busy").acquire().await {
        Err(Error::Timeout { attempts: 3, .. }) => {}
        other => panic!("expected a timeout after 3 tries: {other:?}"),
    }
    // The pauses between tries are not asserted: a notification may cut a pause short, and
    // timing asserts flake on a loaded machine.
    // A policy given to the builder wins.
    let own = Locks::builder()
        .retry(Retry::once())
        .connect(&u)
        .await
        .unwrap();
    assert!(matches!(
        own.lock("busy").acquire().await,
        Err(Error::Timeout { attempts: 1, .. })
    ));
    g.release().await.unwrap();
    // The builder's settings win over the URL's.
    let store = RedlockStore::builder()
        .retry_count(-1)
        .connect(&u)
        .await
        .unwrap();
    assert_eq!(store.retry().get_attempts(), None);
}

#[tokio::test]
async fn urls_name_every_node_and_never_the_password() {
    let servers = start(3);
    let u = url(&servers, "");
    let locks = Locks::connect(&u).await.unwrap();
    for server in &servers {
        assert!(locks
            .describe()
            .contains(&format!("127.0.0.1:{}", server.port)));
    }
    let with_pw = u.replacen("redlock://", "redlock://user:s3cr3t@", 1);
    let store = RedlockStore::connect(&with_pw).await.unwrap();
    assert!(!store.describe().contains("s3cr3t"));
    assert!(!format!("{store:?}").contains("s3cr3t"));
    assert_eq!(store.nodes().len(), 3);
    assert_eq!(store.quorum(), 2);
    for bad in [
        format!("{u}?bogus=1"),
        u.replacen(",", ",127.0.0.1:1,127.0.0.1:1,", 1),
        "redlock://".to_owned(),
    ] {
        assert!(Locks::connect(&bad).await.is_err(), "{bad}");
    }
}
