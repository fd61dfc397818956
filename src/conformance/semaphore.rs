//! Semaphores ([`Locks::semaphore`](crate::Locks::semaphore)): at most N holders, each with
//! its own lease and fence; the count stored with the key; a killed holder's permit comes
//! back when its lease ends; cancelled acquires leave nothing held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{eventually, Suite};
use crate::{Error, LockKind, Locks, Retry, MAX_PERMITS};

/// Every semaphore check, one after the other. On a store that does not declare
/// [`Capabilities::semaphores`](crate::Capabilities::semaphores) only the first runs: it
/// checks that semaphores are refused there.
pub async fn semaphore_all(suite: &Suite) {
    if !semaphores_are_declared(suite).await {
        return;
    }
    semaphore_basics(suite).await;
    semaphore_bad_counts(suite).await;
    semaphore_killed_holder_returns(suite).await;
    semaphore_cancelled_acquire_leaves_nothing_held(suite).await;
    semaphore_contention(suite).await;
}

/// A store without semaphores answers `Unsupported` (naming the key) and takes nothing; one
/// with them grants a permit. Returns whether the store declares them.
pub async fn semaphores_are_declared(suite: &Suite) -> bool {
    let locks = suite.client().await;
    let key = suite.key("sem-declared");
    let declared = locks.store().capabilities().semaphores;
    let sem = locks.semaphore(&key, 2);
    match sem.try_acquire().await {
        Ok(g) if declared => {
            g.release().await.unwrap();
            true
        }
        Err(Error::Unsupported { what, .. }) if !declared => {
            assert!(what.contains(&key), "{}: {what}", locks.describe());
            assert!(
                matches!(sem.acquire().await, Err(Error::Unsupported { .. })),
                "{}: acquire of an undeclared semaphore",
                locks.describe()
            );
            assert!(
                !locks.lock(&key).is_locked().await.unwrap(),
                "{}: a refused semaphore took the key",
                locks.describe()
            );
            false
        }
        other => panic!(
            "{}: semaphores declared {declared}, yet a permit acquire gave {other:?}",
            locks.describe()
        ),
    }
}

/// N holders at once with increasing fences, the N+1st refused; `available`, `holders`,
/// `inspect`; a count mismatch is `InvalidInput` naming both counts; per-holding release,
/// extend and metadata; restore of a permit holding; force release frees every permit; a
/// mutex or reader of the key waits while permits are held.
pub async fn semaphore_basics(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let d = a.describe().to_owned();
    let key = suite.key("sem-basics");
    let ttl = Some(Duration::from_secs(30));
    let sem = |locks: &Locks| locks.semaphore(&key, 3).with_ttl(ttl);
    let g1 = sem(&a).with_metadata("one").try_acquire().await.unwrap();
    let g2 = sem(&b).try_acquire().await.unwrap();
    let g3 = sem(&a).try_acquire().await.unwrap();
    assert!(
        g1.fence() < g2.fence() && g2.fence() < g3.fence() || g1.fence().is_none(),
        "{d}: permit fences must increase: {:?} {:?} {:?}",
        g1.fence(),
        g2.fence(),
        g3.fence()
    );
    assert!(
        matches!(
            sem(&b).try_acquire().await,
            Err(Error::AlreadyLocked { .. })
        ),
        "{d}: a fourth holder of three permits"
    );
    assert_eq!(sem(&b).available().await.unwrap(), 0, "{d}");
    let info = b.lock(&key).inspect().await.unwrap().expect("held");
    assert_eq!(info.kind, LockKind::Permits(3), "{d}");
    let owners: Vec<&str> = info.holders.iter().map(|h| h.owner.as_str()).collect();
    assert_eq!(owners, [g1.owner(), g2.owner(), g3.owner()], "{d}: holders");
    assert_eq!(info.holders[0].metadata.as_deref(), Some("one"), "{d}");
    assert_eq!(info.owner, g1.owner(), "{d}: the first holder");
    // Another count while held: refused, naming both.
    match b.semaphore(&key, 5).try_acquire().await {
        Err(Error::InvalidInput { message, .. }) => {
            assert!(message.contains('3') && message.contains('5'), "{message}");
            assert!(message.contains(&key), "{message}");
        }
        other => panic!("{d}: a semaphore of 5 on one of 3: {other:?}"),
    }
    // A mutex and a reader of the key wait.
    assert!(b.lock(&key).try_acquire().await.is_err(), "{d}: a mutex");
    if b.store().capabilities().shared_locks {
        assert!(b.read(&key).try_acquire().await.is_err(), "{d}: a reader");
    }
    // Per holding: extend, metadata, release.
    g2.extend(Some(Duration::from_secs(60))).await.unwrap();
    g2.set_metadata(Some("two")).await.unwrap();
    let h = b.lock(&key).holders().await.unwrap();
    assert_eq!(h[1].metadata.as_deref(), Some("two"), "{d}");
    assert!(
        h[1].remaining.unwrap() > Duration::from_secs(30),
        "{d}: {h:?}"
    );
    g2.release().await.unwrap();
    assert_eq!(sem(&b).available().await.unwrap(), 1, "{d}");
    assert_eq!(b.lock(&key).holders().await.unwrap().len(), 2, "{d}");
    // Restore a permit holding in another client.
    let fence = g3.fence();
    let token = g3.serialize();
    let g3 = b.restore(&token).await.unwrap();
    assert_eq!(g3.fence(), fence, "{d}");
    assert_eq!(g3.lock().kind(), LockKind::Permits(3), "{d}");
    g3.release().await.unwrap();
    assert_eq!(sem(&b).available().await.unwrap(), 2, "{d}");
    // Force release frees every permit.
    let g4 = sem(&b).try_acquire().await.unwrap();
    assert!(b.lock(&key).force_release().await.unwrap(), "{d}");
    assert!(!b.lock(&key).is_locked().await.unwrap(), "{d}");
    assert!(matches!(g1.release().await, Err(Error::NotOwned { .. })));
    assert!(matches!(g4.release().await, Err(Error::NotOwned { .. })));
    // Once free, the key forgets its count.
    let g = b.semaphore(&key, 5).try_acquire().await.unwrap();
    g.release().await.unwrap();
}

/// 0 permits and more than [`MAX_PERMITS`] are `InvalidInput` naming the key, before the
/// store is asked.
pub async fn semaphore_bad_counts(suite: &Suite) {
    let locks = suite.client().await;
    let key = suite.key("sem-bad");
    for n in [0, MAX_PERMITS + 1, u32::MAX] {
        match locks.semaphore(&key, n).try_acquire().await {
            Err(Error::InvalidInput { what, message }) => {
                assert_eq!(what, "permits", "{message}");
                assert!(message.contains(&key), "{message}");
            }
            other => panic!("{}: {n} permits gave {other:?}", locks.describe()),
        }
    }
    let g = locks
        .semaphore(&key, MAX_PERMITS)
        .try_acquire()
        .await
        .unwrap();
    g.release().await.unwrap();
}

/// A holder that dies without releasing (its guard leaked) gives its permit back when its
/// lease ends: a waiter gets it.
pub async fn semaphore_killed_holder_returns(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("sem-killed");
    let ttl = Some(Duration::from_millis(300));
    let other = a.semaphore(&key, 2).with_ttl(Some(Duration::from_secs(30)));
    let kept = other.try_acquire().await.unwrap();
    a.semaphore(&key, 2)
        .with_ttl(ttl)
        .try_acquire()
        .await
        .unwrap()
        .leak();
    let waiter = b.semaphore(&key, 2).with_retry(
        Retry::default()
            .timeout(suite.patience)
            .delay(Duration::from_millis(20)),
    );
    let g = waiter.acquire().await.unwrap_or_else(|e| {
        panic!(
            "{}: the killed holder's permit came back: {e}",
            a.describe()
        )
    });
    assert_eq!(b.lock(&key).holders().await.unwrap().len(), 2);
    g.release().await.unwrap();
    kept.release().await.unwrap();
}

/// Acquires cancelled while waiting for a full semaphore, and at every point of an acquire of
/// a free one, leave no permit held.
pub async fn semaphore_cancelled_acquire_leaves_nothing_held(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("sem-cancel");
    let g = a.semaphore(&key, 1).try_acquire().await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), b.semaphore(&key, 1).acquire()).await;
    assert!(r.is_err(), "the waiter was still waiting");
    g.release().await.unwrap();
    for micros in [0u64, 1, 10, 50, 100, 200, 500, 1000, 2000, 5000] {
        let lock = b.semaphore(&key, 2);
        let _ = tokio::time::timeout(Duration::from_micros(micros), lock.acquire()).await;
    }
    eventually(
        suite,
        "cancelled permit acquires leave nothing held",
        || {
            let l = a.lock(&key);
            async move { !l.is_locked().await.unwrap() }
        },
    )
    .await;
}

/// `contenders` tasks (default 64) over two clients on a semaphore of 5 permits: the number
/// of holders inside never exceeds 5, and does reach 5.
pub async fn semaphore_contention(suite: &Suite) {
    const N: usize = 5;
    let clients = [suite.client().await, suite.client().await];
    let key = suite.key("sem-contention");
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let sections = Arc::new(AtomicUsize::new(0));
    let rounds = 3;
    let mut tasks = Vec::new();
    for i in 0..suite.contenders {
        let locks = clients[i % 2].clone();
        let (key, inside, most, sections) =
            (key.clone(), inside.clone(), most.clone(), sections.clone());
        let patience = suite.patience * 3;
        tasks.push(tokio::spawn(async move {
            let retry = Retry::default()
                .timeout(patience)
                .delay(Duration::from_millis(10));
            for _ in 0..rounds {
                let g = locks
                    .semaphore(&key, N as u32)
                    .with_ttl(Some(Duration::from_secs(30)))
                    .with_retry(retry.clone())
                    .acquire()
                    .await
                    .expect("every contender gets its turn");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= N, "{now} holders of a semaphore of {N}");
                most.fetch_max(now, Ordering::SeqCst);
                // Stay a moment, so that the others can fill the permits.
                let until = tokio::time::Instant::now() + Duration::from_millis(20);
                while most.load(Ordering::SeqCst) < N && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                inside.fetch_sub(1, Ordering::SeqCst);
                sections.fetch_add(1, Ordering::SeqCst);
                g.release()
                    .await
                    .expect("the holder releases its own permit");
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    assert_eq!(sections.load(Ordering::SeqCst), suite.contenders * rounds);
    assert_eq!(
        most.load(Ordering::SeqCst),
        N.min(suite.contenders),
        "{}: the permits were never all in use at once",
        clients[0].describe()
    );
}
