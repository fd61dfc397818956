//! The `metrics` feature: acquire latency and attempts, held locks, lost leases, reaped
//! expiries, labelled with the store's kind, read back through `metrics-util`'s debugging
//! recorder.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use cadenas::{Locks, Retry};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Every metric's value (changes since the last snapshot: this recorder resets on read),
/// checking that each is labelled `store=memory` and nothing else.
fn snapshot(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_eq!(labels, [("store".to_owned(), "memory".to_owned())]);
        out.insert(key.key().name().to_owned(), value);
    }
    out
}

fn histogram(m: &HashMap<String, DebugValue>, name: &str) -> Vec<f64> {
    match m.get(name) {
        Some(DebugValue::Histogram(xs)) => xs.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn gauge(m: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match m.get(name) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn counter(m: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match m.get(name) {
        Some(DebugValue::Counter(c)) => *c,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_acquires_contention_holds_and_losses() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    // Handles are registered when `Locks` is built: after the recorder.
    let locks = Locks::memory();

    // Two uncontended acquires, held.
    let a = locks.lock("m").acquire().await.unwrap();
    let other = locks.lock("other").acquire().await.unwrap();
    let m = snapshot(&snapshotter);
    assert_eq!(gauge(&m, "cadenas_locks_held"), 2.0);
    assert_eq!(histogram(&m, "cadenas_acquire_attempts"), [1.0, 1.0]);
    assert_eq!(histogram(&m, "cadenas_acquire_seconds").len(), 2);

    // A contended acquire: the waiter tries until `a` is released.
    let waiter = locks.lock("m").with_retry(
        Retry::default()
            .delay(Duration::from_millis(20))
            .attempts(1000),
    );
    let waiting = tokio::spawn(async move { waiter.acquire().await });
    let busy = locks.lock("m").with_retry(Retry::default().attempts(1));
    assert!(busy.acquire().await.is_err(), "a failed acquire");
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.release().await.unwrap();
    let b = waiting.await.unwrap().unwrap();
    b.release().await.unwrap();
    other.release().await.unwrap();

    // A lease taken away under the watchdog counts as lost, once.
    let g = locks
        .lock("lost")
        .with_ttl(Some(Duration::from_millis(300)))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    locks.lock("lost").force_release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), g.lost())
        .await
        .unwrap();
    let _ = g.release().await;

    let m = snapshot(&snapshotter);
    let attempts = histogram(&m, "cadenas_acquire_attempts");
    assert_eq!(attempts.len(), 2, "b and lost: {attempts:?}");
    assert!(
        attempts.iter().any(|a| *a >= 2.0),
        "contention: {attempts:?}"
    );
    let seconds = histogram(&m, "cadenas_acquire_seconds");
    assert!(
        seconds.iter().any(|s| *s >= 0.04),
        "the waiter waited: {seconds:?}"
    );
    assert_eq!(counter(&m, "cadenas_acquire_failures_total"), 1);
    assert_eq!(counter(&m, "cadenas_lost_total"), 1);
    assert!(counter(&m, "cadenas_extends_total") <= 1);
    // Two acquired (b, lost), four guards ended (a, other, b, lost).
    assert_eq!(gauge(&m, "cadenas_locks_held"), -2.0);

    // Reaped expiries.
    locks
        .lock("short")
        .with_ttl(Some(Duration::from_millis(20)))
        .acquire()
        .await
        .unwrap()
        .leak();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reaped = 0;
    while reaped == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never reaped");
        tokio::time::sleep(Duration::from_millis(10)).await;
        reaped = locks.reap_expired("").await.unwrap().len();
    }
    let m = snapshot(&snapshotter);
    assert_eq!(counter(&m, "cadenas_reaped_total"), 1);
}
