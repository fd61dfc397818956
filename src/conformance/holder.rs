//! Holder safety: the watchdog's events and lost signal, and the expiry watcher.

use std::time::Duration;

use tokio::time::Instant;

use super::{eventually, reader, Suite};
use crate::{Error, EventKind, Locks, Retry};

/// The kinds of the events about `key` received so far.
fn kinds_for(rx: &mut tokio::sync::broadcast::Receiver<crate::Event>, key: &str) -> Vec<EventKind> {
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if e.key == key {
            kinds.push(e.kind);
        }
    }
    kinds
}

/// With the watchdog, a lease's events are `Acquired`, `Extended` several times, then
/// `Released` — in that order, each once; a force-release while held gives `Lost` once, and
/// the lost signal fires within one extend interval (ttl/3).
pub async fn watchdog_events_and_lost_signal(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let mut rx = a.events();
    let key = suite.key("wd-events");
    let ttl = Duration::from_millis(900);
    let lock = a.lock(&key).with_ttl(Some(ttl)).with_auto_extend(true);
    let g = lock.acquire().await.unwrap();
    let mut seen = Vec::new();
    eventually(suite, "the watchdog extended the lease three times", || {
        seen.extend(kinds_for(&mut rx, &key));
        let n = seen.iter().filter(|k| **k == EventKind::Extended).count();
        async move { n >= 3 }
    })
    .await;
    g.release().await.unwrap();
    seen.extend(kinds_for(&mut rx, &key));
    assert_eq!(seen.first(), Some(&EventKind::Acquired), "{seen:?}");
    assert_eq!(seen.last(), Some(&EventKind::Released), "{seen:?}");
    assert!(
        seen[1..seen.len() - 1]
            .iter()
            .all(|k| *k == EventKind::Extended),
        "{}: only extends between acquired and released: {seen:?}",
        a.describe()
    );

    // Taken away while held: Lost once, within one extend interval.
    let ttl = Duration::from_millis(1500);
    let interval = ttl / 3;
    let g = a
        .lock(&key)
        .with_ttl(Some(ttl))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    let signal = g.lost_signal();
    assert!(b.lock(&key).force_release().await.unwrap());
    let taken = Instant::now();
    let e = tokio::time::timeout(suite.patience, signal.wait())
        .await
        .expect("the lost signal fires");
    let after = taken.elapsed();
    assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    // One interval, plus the extend's round trip and a loaded machine's scheduling.
    assert!(
        after <= interval + Duration::from_millis(400),
        "{}: the lost signal fired {after:?} after the force-release (interval {interval:?})",
        a.describe()
    );
    assert!(g.release().await.is_err(), "the lease is gone");
    let kinds = kinds_for(&mut rx, &key);
    assert_eq!(kinds.first(), Some(&EventKind::Acquired), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Lost).count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last(),
        Some(&EventKind::Lost),
        "nothing after lost: {kinds:?}"
    );
}

/// A holder whose process stops for longer than its lease (SIGSTOP, a long GC pause, a
/// swapped-out VM) while another client takes the key sees its lease lost the moment it
/// resumes, through `is_lost` and `is_expired`, before its watchdog has run again. (Found by
/// the torture tool: `is_lost` said no until the watchdog task got its turn.)
///
/// The pause is a blocked runtime: the holder acquires on a runtime of its own in its own
/// thread, which then blocks until the other client holds the key.
pub async fn paused_holder_sees_lost_at_once(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("paused");
    let ttl = Duration::from_millis(300);
    let lock = a.lock(&key).with_ttl(Some(ttl)).with_auto_extend(true);
    let (acquired_tx, acquired_rx) = tokio::sync::oneshot::channel();
    let (pause_tx, pause_rx) = tokio::sync::oneshot::channel::<()>();
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
    let patience = suite.patience;
    let holder = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the holder");
        rt.block_on(async move {
            let guard = lock.acquire().await.expect("the holder acquires");
            let _ = acquired_tx.send(());
            // Running until told to pause, so that a pooled connection this runtime used is
            // back in its pool (a store shared with the other client, such as in-memory
            // SQLite with one connection, would otherwise stall with the paused runtime).
            let _ = pause_rx.await;
            // The pause: nothing of this runtime runs, the watchdog included.
            let _ = taken_rx.recv_timeout(patience);
            // Resumed: no await before looking, so the watchdog has not run.
            let seen = (guard.lost_signal().is_lost(), guard.is_expired());
            // Released on the test's runtime: store connections used on this one would
            // die with it.
            (guard, seen)
        })
    });
    acquired_rx.await.expect("the holder acquired");
    assert!(
        b.lock(&key).is_locked().await.unwrap(),
        "{}: the holder's lock is visible to another client",
        b.describe()
    );
    pause_tx.send(()).expect("the holder waits to pause");
    let taker = b
        .lock(&key)
        .with_ttl(Some(Duration::from_secs(30)))
        .with_retry(Retry::default().timeout(suite.patience))
        .acquire()
        .await
        .expect("the key is free once the paused holder's lease ran out");
    taken_tx.send(()).expect("the holder waits");
    let (guard, (lost, expired)) = holder.await.expect("the holder's thread");
    assert!(
        guard.release().await.is_err(),
        "the paused holder's lease is gone"
    );
    assert!(
        expired,
        "{}: a lease taken over by another client is expired",
        a.describe()
    );
    assert!(
        lost,
        "{}: a holder resumed after its lease ran out must see it lost (is_lost) at once",
        a.describe()
    );
    taker.release().await.unwrap();
}

/// The expiry watcher reports an expired lock exactly once across clients racing to reap it,
/// and never a released or live one; a store that cannot watch says `Unsupported`.
pub async fn expiry_watch(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let prefix = suite.key("reap-");
    if !a.store().capabilities().expiry_watch {
        assert!(
            matches!(
                a.reap_expired(&prefix).await,
                Err(Error::Unsupported { .. })
            ),
            "{}: reaping without declaring expiry_watch must be Unsupported",
            a.describe()
        );
        assert!(matches!(
            a.watch_expiries(&prefix, Duration::from_millis(50)),
            Err(Error::Unsupported { .. })
        ));
        return;
    }
    let short = Some(Duration::from_millis(200));
    let gone = format!("{prefix}gone");
    let expiring = a.lock(&gone).with_ttl(short).acquire().await.unwrap();
    let (owner, fence) = (expiring.owner().to_owned(), expiring.fence());
    expiring.leak();
    let released = a.lock(&format!("{prefix}released")).with_ttl(short);
    released.acquire().await.unwrap().release().await.unwrap();
    let live = a
        .lock(&format!("{prefix}live"))
        .with_ttl(Some(Duration::from_secs(60)))
        .acquire()
        .await
        .unwrap();
    eventually(suite, "the short lease expired", || {
        let l = b.lock(&gone);
        async move { !l.is_locked().await.unwrap() }
    })
    .await;
    let (mut ea, mut eb) = (a.events(), b.events());
    let (ra, rb) = tokio::join!(a.reap_expired(&prefix), b.reap_expired(&prefix));
    let all: Vec<_> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
    assert_eq!(all.len(), 1, "{}: reported once: {all:?}", a.describe());
    assert_eq!(all[0].key, gone);
    assert_eq!(all[0].owner, owner);
    assert_eq!(all[0].fence, fence);
    assert!(a.reap_expired(&prefix).await.unwrap().is_empty());
    let reaped_events = [&mut ea, &mut eb]
        .into_iter()
        .flat_map(|rx| kinds_for(rx, &gone))
        .filter(|k| *k == EventKind::Reaped)
        .count();
    assert_eq!(reaped_events, 1, "one Reaped event in all");
    assert!(a.lock(&format!("{prefix}live")).is_locked().await.unwrap());
    live.release().await.unwrap();

    // The watcher task reports the next expiry by itself.
    let watcher = b
        .watch_expiries(&prefix, Duration::from_millis(50))
        .unwrap();
    let again = a.lock(&gone).with_ttl(short).acquire().await.unwrap();
    let fence = again.fence();
    again.leak();
    let deadline = Instant::now() + suite.patience;
    loop {
        match tokio::time::timeout_at(deadline, eb.recv()).await {
            Ok(Ok(e)) if e.kind == EventKind::Reaped && e.key == gone => {
                assert_eq!(e.fence, fence);
                break;
            }
            Ok(_) => {}
            Err(_) => panic!("{}: the watcher did not report the expiry", b.describe()),
        }
    }
    watcher.stop();
    cleanup(&a, &prefix).await;
}

async fn cleanup(locks: &Locks, prefix: &str) {
    for info in locks.list(prefix).await.unwrap_or_default() {
        let _ = locks.lock(&info.key).force_release().await;
    }
}
