//! The Redis store against real single-node `redis-server`s started by the test harness,
//! through the `Store` trait: what is specific to Redis (Verrou's layout, derived keys,
//! scripts, hash tags, passwords, TLS, restarts). The behaviour every store shares is checked
//! by the conformance suite (`tests/conformance.rs`). Run with
//! `cargo test --features redis --test redis_store`.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use cadenas::stores::redis::{keys, RedisStore};
use cadenas::{Acquire, AcquireRequest, Store, StoreErrorKind};
use cadenas_test_support::redis::RedisServer;
use redis::AsyncCommands;

const WAIT: Duration = Duration::from_secs(5);

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url()).await.unwrap()
}

async fn fence(store: &RedisStore, r: AcquireRequest<'_>) -> u64 {
    match store.try_acquire(r).await.unwrap() {
        Acquire::Acquired(lease) => lease.fence.expect("the Redis store fences"),
        held => panic!("expected to acquire {}, got {held:?}", r.key),
    }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Takes `key` as a Verrou process does (`SET NX PX`, the owner as the value); whether it
/// got it.
async fn verrou_takes(r: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    let taken: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("node-owner")
        .arg("NX")
        .arg("PX")
        .arg(10_000)
        .query_async(r)
        .await
        .unwrap();
    taken.is_some()
}

#[tokio::test]
async fn layout_is_verrous() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    fence(&s, AcquireRequest::new("app:job", "owner-1", secs(10))).await;
    // The owner, a NUL and the id of the request that took it.
    let value: String = r.get("app:job").await.unwrap();
    assert_eq!(value.split_once('\0').map(|(o, _)| o), Some("owner-1"));
    let pttl: i64 = r.pttl("app:job").await.unwrap();
    assert!(pttl > 9_000 && pttl <= 10_000, "{pttl}");
    fence(&s, AcquireRequest::new("forever", "owner-1", None)).await;
    let pttl: i64 = r.pttl("forever").await.unwrap();
    assert_eq!(pttl, -1);
    // A lock written the way Verrou writes it excludes cadenas, and shows its owner.
    assert!(verrou_takes(&mut r, "verrou-key").await);
    match s
        .try_acquire(AcquireRequest::new("verrou-key", "rust", secs(5)))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("node-owner")),
        other => panic!("{other:?}"),
    }
    let info = s.inspect("verrou-key").await.unwrap().unwrap();
    assert_eq!(info.owner, "node-owner");
    assert_eq!(info.fence, None, "Verrou writes no fence");
    // Derived keys live under one prefix; the fence counter persists.
    let pttl: i64 = r.pttl(keys::fence_key("app:job")).await.unwrap();
    assert_eq!(pttl, -1);
}

/// The state (fence, metadata) outlives the lock by a grace period, for the expiry watcher,
/// and goes with the lock on release.
#[tokio::test]
async fn the_state_expires_after_the_lock_and_goes_with_its_release() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    let request = AcquireRequest::new("m", "a", secs(10)).with_metadata(Some("pid 42 ✓"));
    s.try_acquire(request).await.unwrap();
    let state_ttl: i64 = r.pttl(keys::state_key("m")).await.unwrap();
    let grace = cadenas::stores::redis::EXPIRY_GRACE_MS as i64;
    assert!(
        state_ttl > grace && state_ttl <= 10_000 + grace,
        "{state_ttl}"
    );
    assert!(s.release("m", "a").await.unwrap());
    let exists: bool = r.exists(keys::state_key("m")).await.unwrap();
    assert!(!exists, "release removes the state");
}

#[tokio::test]
async fn list_skips_derived_keys_and_other_data() {
    let server = RedisServer::start();
    let s = store(&server).await;
    for key in ["run:x", "run:y", "other"] {
        fence(&s, AcquireRequest::new(key, "o", secs(10))).await;
    }
    let all = s.list("").await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|i| !i.key.starts_with(keys::DERIVED_PREFIX)));
    // Non-string keys under the prefix are not locks.
    let mut r = raw(&server).await;
    let _: () = r.hset("run:hash", "f", "v").await.unwrap();
    assert_eq!(s.list("run:").await.unwrap().len(), 2);
}

#[tokio::test]
async fn scripts_reload_after_script_flush() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    fence(&s, AcquireRequest::new("k", "a", secs(10))).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(s.release("k", "a").await.unwrap());
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut r)
        .await
        .unwrap();
    fence(&s, AcquireRequest::new("k", "b", secs(10))).await;
    assert_eq!(s.inspect("k").await.unwrap().unwrap().owner, "b");
}

#[tokio::test]
async fn a_key_holding_other_data_is_never_overwritten() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    let _: () = r.hset("users", "alice", "1").await.unwrap();
    let e = s
        .try_acquire(AcquireRequest::new("users", "a", secs(10)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Rejected);
    assert!(
        e.message.contains("'users'") && e.message.contains("hash"),
        "{e}"
    );
    for e in [
        s.release("users", "a").await.unwrap_err(),
        s.extend("users", "a", secs(1)).await.unwrap_err(),
        s.set_metadata("users", "a", None).await.unwrap_err(),
        s.force_release("users").await.unwrap_err(),
        s.inspect("users").await.unwrap_err(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::Rejected, "{e}");
    }
    let v: String = r.hget("users", "alice").await.unwrap();
    assert_eq!(v, "1");
}

#[tokio::test]
async fn keys_with_braces_work() {
    let server = RedisServer::start();
    // With records, so that inspect reads the fence from the state key's derived name too.
    let s = RedisStore::connect(&format!("{}?records=true", server.url()))
        .await
        .unwrap();
    for key in ["a}b", "{}x", "job{42}", "{", "x}{y"] {
        let f = fence(&s, AcquireRequest::new(key, "a", secs(10))).await;
        assert_eq!(
            s.inspect(key).await.unwrap().unwrap().fence,
            Some(f),
            "{key}"
        );
        assert!(s.release(key, "a").await.unwrap(), "{key}");
    }
}

#[tokio::test]
async fn wrong_password_is_unavailable_and_never_printed() {
    let server = RedisServer::with_password("s3cr3t-pw");
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", server.port);
    let e = RedisStore::connect(&url).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-pw"), "{text}");
    let s = RedisStore::connect(&server.url()).await.unwrap();
    assert!(!s.describe().contains("s3cr3t-pw"), "{}", s.describe());
    fence(&s, AcquireRequest::new("k", "a", secs(5))).await;
}

#[tokio::test]
async fn unknown_host_and_server_down_fail_clearly() {
    let e = RedisStore::connect("redis://no-such-host.invalid:6379?connect_timeout=2s")
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    let port = cadenas_test_support::free_port();
    let started = Instant::now();
    let e = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_server_that_dies_gives_retryable_errors() {
    let mut server = RedisServer::start();
    let s = store(&server).await;
    fence(&s, AcquireRequest::new("k", "a", secs(30))).await;
    server.kill();
    let e = s.extend("k", "a", secs(30)).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn a_restart_without_persistence_loses_the_lock_and_wakes_waiters() {
    let mut server = RedisServer::start();
    let s = store(&server).await;
    let other = store(&server).await;
    let f1 = fence(&s, AcquireRequest::new("k", "a", secs(30))).await;
    let mut sub = other.subscribe("k").await.unwrap().unwrap();
    server.restart();
    // The connection comes back by itself; the lock is gone and is not re-established: the
    // holder's next extend answers "not yours" (the lock layer reports it as lost).
    let deadline = Instant::now() + WAIT;
    let extended = loop {
        match s.extend("k", "a", secs(30)).await {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(Instant::now() < deadline, "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(extended, None);
    // The subscriber reconnects and wakes its waiters, since releases may have been missed.
    tokio::time::timeout(WAIT, sub.released())
        .await
        .expect("waiters are woken after the subscriber reconnects");
    // The first command on `other`'s dropped connection fails (retryable); the next one
    // goes through the new connection. The fence counter was lost with the data, but the
    // time floor keeps fences increasing.
    let deadline = Instant::now() + WAIT;
    let f2 = loop {
        match other
            .try_acquire(AcquireRequest::new("k", "b", secs(30)))
            .await
        {
            Ok(Acquire::Acquired(lease)) => break lease.fence.unwrap(),
            Ok(held) => panic!("{held:?}"),
            Err(e) => {
                assert!(e.is_retryable() && Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        f2 > f1,
        "fences must keep increasing when Redis loses its data: {f2} after {f1}"
    );
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    for url in [
        "redis://127.0.0.1:1/?bogus=1",
        "redis://127.0.0.1:1/?timeout=never",
        "redis://127.0.0.1:1/?ca_file=/x.pem",
        "redis+cluster://127.0.0.1:1,,127.0.0.1:2",
        "redis+cluster://127.0.0.1:1/3",
    ] {
        let e = RedisStore::connect(url).await.unwrap_err();
        assert!(
            matches!(
                e,
                cadenas::Error::Config { .. } | cadenas::Error::InvalidInput { .. }
            ),
            "{url}: {e}"
        );
    }
}

#[tokio::test]
async fn tls_with_a_trusted_ca_works_and_an_untrusted_certificate_is_refused() {
    let server = RedisServer::tls();
    let ca = server.tls.as_ref().unwrap().ca.display().to_string();
    let s = RedisStore::connect(&format!("{}?ca_file={ca}", server.url()))
        .await
        .unwrap();
    assert!(s.describe().starts_with("rediss://"));
    fence(&s, AcquireRequest::new("tls", "a", secs(5))).await;
    assert!(s.release("tls", "a").await.unwrap());
    // Without the CA, the system roots do not trust the test's certificate.
    let e = RedisStore::connect(&format!("{}?connect_timeout=3s", server.url()))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    // Refused for the certificate, not for some other reason.
    assert!(e.to_string().contains("certificate"), "{e}");
}

/// `PUBLISH` calls the server has run (its own count, `INFO commandstats`).
async fn publishes(r: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(r)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn only_a_release_someone_waits_for_is_announced() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    let before = publishes(&mut r).await;
    fence(&s, AcquireRequest::new("quiet", "a", secs(10))).await;
    assert!(s.release("quiet", "a").await.unwrap());
    assert_eq!(publishes(&mut r).await, before, "nobody waited: no PUBLISH");

    fence(&s, AcquireRequest::new("busy", "a", secs(10))).await;
    let held = s
        .try_acquire(AcquireRequest::new("busy", "b", secs(10)))
        .await
        .unwrap();
    assert!(
        matches!(&held, Acquire::Held(h) if h.owner.as_deref() == Some("a")),
        "{held:?}"
    );
    // The try marked the holding: inspect still shows its owner, and its release announces.
    assert_eq!(s.inspect("busy").await.unwrap().unwrap().owner, "a");
    assert!(s.extend("busy", "a", secs(10)).await.unwrap().is_some());
    assert!(s.release("busy", "a").await.unwrap());
    assert_eq!(publishes(&mut r).await, before + 1, "one PUBLISH");
}

/// Readers hold the lock key itself as a sorted set beside their group record: the plain
/// `SET NX` (a writer's native acquire, a Verrou process's) finds it taken, a waiting writer
/// records its marker, which holds new readers back and goes when the writer takes the key.
#[tokio::test]
async fn readers_hold_the_lock_key_as_a_sorted_set() {
    use cadenas::LockKind;
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    let read = |owner| AcquireRequest::new("g", owner, secs(10)).with_kind(LockKind::Shared);
    let f1 = fence(&s, read("r1")).await;
    let f2 = fence(&s, read("r2")).await;
    assert!(f2 > f1, "{f1} {f2}");
    let kind: String = redis::cmd("TYPE")
        .arg("g")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(kind, "zset");
    let holders: Vec<String> = r.zrange("g", 0, -1).await.unwrap();
    assert_eq!(holders, ["r1", "r2"]);
    let recorded: String = r.hget(keys::group_key("g"), "kind").await.unwrap();
    assert_eq!(recorded, "shared");
    let pttl: i64 = r.pttl("g").await.unwrap();
    assert!(pttl > 9_000 && pttl <= 10_000, "{pttl}");
    // A Verrou process's SET NX finds the key taken.
    assert!(!verrou_takes(&mut r, "g").await);
    // A waiting writer finds readers, and records its marker.
    let write = AcquireRequest::new("g", "w", secs(10)).with_writer_waiting(secs(5));
    match s.try_acquire(write).await.unwrap() {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("r1")),
        other => panic!("a writer beside readers: {other:?}"),
    }
    let marker: Option<String> = r.get(keys::writer_key("g")).await.unwrap();
    assert_eq!(marker.as_deref(), Some("w"));
    match s.try_acquire(read("r3")).await.unwrap() {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("w"), "held back by the writer"),
        other => panic!("a reader got past a waiting writer: {other:?}"),
    }
    assert!(s.release("g", "r1").await.unwrap());
    assert!(s.release("g", "r2").await.unwrap());
    assert!(!s.release("g", "r2").await.unwrap(), "released twice");
    for gone in ["g".to_owned(), keys::group_key("g")] {
        let exists: bool = r.exists(&gone).await.unwrap();
        assert!(!exists, "{gone} outlived the last reader");
    }
    let fw = fence(&s, write).await;
    assert!(fw > f2, "{f2} {fw}");
    let marker: Option<String> = r.get(keys::writer_key("g")).await.unwrap();
    assert_eq!(marker, None, "the writer's marker outlived its take");
}

/// A reader that dies without releasing: the key (sorted set and record) expires with its
/// lease, and the plain acquire takes it.
#[tokio::test]
async fn a_dead_readers_group_expires_with_its_lease() {
    use cadenas::LockKind;
    let server = RedisServer::start();
    let s = store(&server).await;
    let mut r = raw(&server).await;
    let request = AcquireRequest::new("dead", "r", Some(Duration::from_millis(200)));
    fence(&s, request.with_kind(LockKind::Shared)).await;
    let started = Instant::now();
    let fence = loop {
        match s
            .try_acquire(AcquireRequest::new("dead", "w", secs(10)))
            .await
            .unwrap()
        {
            Acquire::Acquired(lease) => break lease.fence,
            Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some("r")),
        }
        assert!(
            started.elapsed() < WAIT,
            "the dead reader's key never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(fence.is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "taken before the lease ended"
    );
    let exists: bool = r.exists(keys::group_key("dead")).await.unwrap();
    assert!(!exists, "the group record outlived its key");
}
