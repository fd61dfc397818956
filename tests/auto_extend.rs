//! The watchdog's chosen interval (`auto_extend_every`): extends come at that cadence and
//! keep the lease alive past its ttl, a lost lease is noticed within an interval, an interval
//! close to the ttl still holds, and bad intervals are refused naming the key. Against the
//! memory store, SQLite and Redis.

use std::time::Duration;

use cadenas::{Error, EventKind, Locks};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

fn random(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() >> 16)
}

/// Waits for the next event of `kind` on `key`, or `None` when `until` passes first.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<cadenas::Event>,
    key: &str,
    kind: EventKind,
    until: Instant,
) -> Option<cadenas::Event> {
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_elapsed) => return None,
            Ok(Ok(e)) if e.key == key && e.kind == kind => return Some(e),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("event stream closed"),
        }
    }
}

/// Interval 50 ms, ttl 2 s: ten extends come well within one ttl (the default ttl/3 makes at
/// most three), never faster than the interval, and the lease outlives its first ttl.
async fn extends_at_the_chosen_cadence(locks: &Locks) {
    let url = locks.describe();
    let key = random("cadence-");
    let (ttl, every) = (Duration::from_secs(2), Duration::from_millis(50));
    let mut events = locks.events();
    let lock = locks
        .lock(&key)
        .with_ttl(Some(ttl))
        .with_auto_extend_every(every);
    let started = Instant::now();
    let guard = lock.acquire().await.unwrap();
    let lost = guard.lost_signal();
    for n in 1..=10u32 {
        let e = next_event(&mut events, &key, EventKind::Extended, started + ttl).await;
        assert!(
            e.is_some(),
            "{url}: only {} extends within the ttl {ttl:?} at an interval of {every:?}",
            n - 1
        );
        // Jitter only lengthens pauses: n extends take at least n intervals.
        assert!(
            started.elapsed() >= every * n,
            "{url}: extend {n} after {:?}, sooner than {n} intervals of {every:?}",
            started.elapsed()
        );
    }
    // Past the first ttl the lease is still ours, confirmed by the store.
    tokio::time::sleep_until(started + ttl + Duration::from_millis(300)).await;
    assert!(lost.reason().is_none(), "{url}: lost: {:?}", lost.reason());
    let info = lock.inspect().await.unwrap().expect("still held");
    assert_eq!(info.owner, guard.owner(), "{url}");
    let other = locks.lock(&key).try_acquire().await;
    assert!(
        matches!(other, Err(Error::AlreadyLocked { .. })),
        "{url}: {other:?}"
    );
    guard.release().await.unwrap();
}

/// With a short interval a force-released lease is found lost within a few intervals, long
/// before ttl/3 (3 s here) would have come round.
async fn a_lost_lease_is_noticed_within_the_interval(locks: &Locks) {
    let url = locks.describe();
    let key = random("noticed-");
    let lock = locks
        .lock(&key)
        .with_ttl(Some(Duration::from_secs(10)))
        .with_auto_extend_every(Duration::from_millis(50));
    let guard = lock.acquire().await.unwrap();
    assert!(locks.lock(&key).force_release().await.unwrap(), "{url}");
    let taken = Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(2), guard.lost()).await;
    assert!(
        matches!(lost, Ok(Error::Lost { .. })),
        "{url}: no lost signal 2 s after a force release: {lost:?}"
    );
    assert!(taken.elapsed() < Duration::from_secs(2), "{url}");
    assert!(guard.release().await.is_err(), "{url}");
}

/// An interval just under the ttl still keeps the lease: the watchdog starts its extend early
/// enough to be confirmed before it would give up.
async fn an_interval_close_to_the_ttl_still_holds(locks: &Locks) {
    let url = locks.describe();
    let key = random("close-");
    let ttl = Duration::from_millis(600);
    let lock = locks
        .lock(&key)
        .with_ttl(Some(ttl))
        .with_auto_extend_every(Duration::from_millis(590));
    let guard = lock.acquire().await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert!(
        guard.lost_signal().reason().is_none(),
        "{url}: {:?}",
        guard.lost_signal().reason()
    );
    assert_eq!(
        lock.inspect().await.unwrap().map(|i| i.owner).as_deref(),
        Some(guard.owner()),
        "{url}"
    );
    guard.release().await.unwrap();
}

async fn bad_intervals_are_refused_naming_the_key(locks: &Locks) {
    let url = locks.describe();
    let key = random("bad-interval-");
    let ttl = Some(Duration::from_secs(1));
    for every in [
        Duration::ZERO,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ] {
        let lock = locks.lock(&key).with_ttl(ttl).with_auto_extend_every(every);
        for e in [
            lock.acquire().await.unwrap_err(),
            lock.try_acquire().await.unwrap_err(),
        ] {
            assert!(
                matches!(
                    e,
                    Error::InvalidInput {
                        what: "auto-extend interval",
                        ..
                    }
                ),
                "{url}: {every:?}: {e:?}"
            );
            assert!(e.to_string().contains(&format!("'{key}'")), "{url}: {e}");
        }
        assert!(!lock.is_locked().await.unwrap_or(false), "{url}");
    }
    // The watchdog off: the interval is not used, so not checked.
    let off = locks
        .lock(&key)
        .with_ttl(ttl)
        .with_auto_extend_every(Duration::ZERO)
        .with_auto_extend(false);
    off.try_acquire().await.unwrap().release().await.unwrap();
}

async fn check_all(locks: Locks) {
    bad_intervals_are_refused_naming_the_key(&locks).await;
    extends_at_the_chosen_cadence(&locks).await;
    a_lost_lease_is_noticed_within_the_interval(&locks).await;
    an_interval_close_to_the_ttl_still_holds(&locks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    check_all(Locks::memory()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    check_all(Locks::connect(&url).await.unwrap()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let base = std::env::var("CADENAS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let url = format!("{base}?namespace={}", random("auto-extend-"));
    let locks = Locks::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}: start redis-server or set CADENAS_TEST_REDIS_URL"));
    check_all(locks).await;
}

/// A lock without ttl never expires: no watchdog runs, and the interval is ignored.
#[tokio::test(flavor = "current_thread")]
async fn an_interval_without_ttl_is_ignored() {
    let locks = Locks::memory();
    let lock = locks
        .lock("forever")
        .with_ttl(None)
        .with_auto_extend_every(Duration::from_millis(10));
    let guard = lock.try_acquire().await.unwrap();
    assert_eq!(guard.remaining_time(), None);
    guard.release().await.unwrap();
}

/// The builder's interval is checked against its default ttl when built, and locks with a
/// ttl of their own against theirs.
#[tokio::test(flavor = "current_thread")]
async fn the_builders_interval() {
    let built = |ttl: Duration, every: Duration| {
        Locks::builder()
            .ttl(Some(ttl))
            .auto_extend_every(every)
            .build(cadenas::stores::memory::MemoryStore::new())
    };
    let e = built(Duration::from_secs(1), Duration::from_secs(2)).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidInput {
                what: "auto-extend interval",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("the default"), "{e}");
    let locks = built(Duration::from_secs(10), Duration::from_secs(2)).unwrap();
    let short = locks.lock("short").with_ttl(Some(Duration::from_secs(1)));
    let e = short.try_acquire().await.unwrap_err();
    assert!(e.to_string().contains("'short'"), "{e}");
    // Within its ttl, a lock follows the builder's interval: with 100 ms, a ttl of 3 s sees
    // three extends before ttl/3 (1 s) could have come round once.
    let locks = built(Duration::from_secs(3), Duration::from_millis(100)).unwrap();
    let mut events = locks.events();
    let until = Instant::now() + Duration::from_millis(900);
    let guard = locks.lock("fast").try_acquire().await.unwrap();
    for n in 0..3 {
        let e = next_event(&mut events, "fast", EventKind::Extended, until).await;
        assert!(e.is_some(), "only {n} extends within 900 ms");
    }
    guard.release().await.unwrap();
}
