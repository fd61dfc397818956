//! Atomic take-over ([`Lock::take_over`](crate::Lock::take_over)): the new holder gets the
//! lock with a higher fence in one step, the displaced one learns `Lost` at its next check.

use std::time::Duration;

use super::{eventually, Suite};
use crate::store::{AcquireRequest, StoreErrorKind};
use crate::{Error, EventKind, Locks};

const LONG: Duration = Duration::from_secs(60);

/// Every take-over check, one after the other (each returns at once on a store that does
/// not declare [`Capabilities::take_over`](crate::Capabilities::take_over), but the first,
/// which checks that declaration).
pub async fn take_over_all(suite: &Suite) {
    take_over_is_declared(suite).await;
    take_over_of_a_held_lock(suite).await;
    take_over_fires_the_lost_signal(suite).await;
    take_over_of_free_and_expired_keys(suite).await;
    concurrent_take_overs_are_serialized(suite).await;
    cancelled_take_over_leaves_nothing_held(suite).await;
}

fn stored(locks: &Locks, key: &str) -> String {
    match locks.namespace() {
        Some(ns) => format!("{ns}:{key}"),
        None => key.to_owned(),
    }
}

/// A store without take-over answers `Unsupported` (the lock layer and the bare store) and
/// leaves the holder alone; one with it takes a held key.
pub async fn take_over_is_declared(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("to-declared");
    let held = a.lock(&key).with_owner("holder").acquire().await.unwrap();
    let declared = b.store().capabilities().take_over;
    let stored_key = stored(&b, &key);
    let request = AcquireRequest::new(&stored_key, "taker", Some(LONG));
    let bare = b.store().take_over(request).await;
    match (declared, bare) {
        (true, Ok(t)) => {
            let displaced = t.displaced.expect("the bare take-over names the holder");
            assert_eq!(displaced.owner, "holder", "{}", b.describe());
            assert!(b.store().release(request.key, "taker").await.unwrap());
            assert!(held.release().await.is_err(), "{}", a.describe());
        }
        (false, Err(e)) => {
            assert_eq!(e.kind, StoreErrorKind::Unsupported, "{}: {e}", b.describe());
            match b.lock(&key).take_over().await {
                Err(Error::Unsupported { .. }) => {}
                other => panic!(
                    "{}: take_over without the capability: {other:?}",
                    b.describe()
                ),
            }
            let info = b.lock(&key).inspect().await.unwrap().expect("still held");
            if b.store().capabilities().shared_records {
                assert_eq!(info.owner, "holder", "{}", b.describe());
            }
            held.release().await.unwrap();
        }
        (declared, answer) => panic!(
            "{}: declares take_over: {declared}, but the store answered {answer:?}",
            b.describe()
        ),
    }
}

/// Taking a held lock: ours at once, with a higher fence, our ttl and metadata; the old
/// holder is named, and its extend, metadata update and release answer `NotOwned`.
pub async fn take_over_of_a_held_lock(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    if !b.store().capabilities().take_over {
        return;
    }
    let mut events = b.events();
    let key = suite.key("to-held");
    let old = a
        .lock(&key)
        .with_owner("holder")
        .with_metadata("old")
        .with_ttl(Some(LONG))
        .acquire()
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let taken = b
        .lock(&key)
        .with_owner("taker")
        .with_metadata("new")
        .with_ttl(Some(ttl))
        .take_over()
        .await
        .unwrap();
    let displaced = taken
        .displaced
        .clone()
        .expect("a live holder was displaced");
    assert_eq!(displaced.owner, "holder", "{}", b.describe());
    super::assert_shown_fence(&**b.store(), displaced.fence, old.fence(), "displaced");
    if b.store().capabilities().fencing {
        assert!(
            taken.guard.fence() > old.fence(),
            "{}: take-over fence {:?} not above the holder's {:?}",
            b.describe(),
            taken.guard.fence(),
            old.fence()
        );
    }
    let info = a.lock(&key).inspect().await.unwrap().expect("held");
    assert_eq!(info.owner, "taker", "{}", b.describe());
    assert_eq!(info.metadata.as_deref(), Some("new"), "{}", b.describe());
    super::assert_shown_fence(&**a.store(), info.fence, taken.guard.fence(), "inspect");
    let left = info.remaining.expect("the request's ttl applies");
    assert!(
        left <= ttl && left > ttl - Duration::from_secs(10),
        "{}: {left:?} left of a {ttl:?} take-over",
        b.describe()
    );
    let got = std::iter::from_fn(|| events.try_recv().ok())
        .find(|e| e.key == key && e.kind == EventKind::Acquired)
        .expect("the take-over emits Acquired");
    assert_eq!(got.fence, taken.guard.fence());
    assert_eq!(got.owner, "taker");

    assert!(
        matches!(old.extend(None).await, Err(Error::NotOwned { .. })),
        "{}: the displaced holder extended",
        a.describe()
    );
    assert!(old.lost_signal().is_lost());
    assert!(matches!(
        old.set_metadata(Some("x")).await,
        Err(Error::NotOwned { .. })
    ));
    assert!(matches!(old.release().await, Err(Error::NotOwned { .. })));
    // The displaced holder's failed calls changed nothing.
    let info = a.lock(&key).inspect().await.unwrap().expect("still held");
    assert_eq!(
        (info.owner.as_str(), info.metadata.as_deref()),
        ("taker", Some("new"))
    );
    // Taking over without metadata clears it.
    let again = a.lock(&key).with_owner("third").take_over().await.unwrap();
    assert_eq!(
        again.displaced.map(|d| d.owner).as_deref(),
        Some("taker"),
        "{}",
        a.describe()
    );
    let info = a.lock(&key).inspect().await.unwrap().expect("held");
    assert_eq!((info.owner.as_str(), info.metadata), ("third", None));
    assert!(matches!(
        taken.guard.release().await,
        Err(Error::NotOwned { .. })
    ));
    again.guard.release().await.unwrap();
    assert!(!a.lock(&key).is_locked().await.unwrap());
}

/// A displaced holder with a watchdog sees its lost signal fire; `run` around a take-over
/// returns `Error::Lost`.
pub async fn take_over_fires_the_lost_signal(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    if !b.store().capabilities().take_over {
        return;
    }
    let key = suite.key("to-lost");
    let watched = a
        .lock(&key)
        .with_ttl(Some(Duration::from_millis(900)))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    let signal = watched.lost_signal();
    let taken = b.lock(&key).with_ttl(Some(LONG)).take_over().await.unwrap();
    let e = tokio::time::timeout(suite.patience, signal.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: the displaced holder's lost signal never fired",
                a.describe()
            )
        });
    assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    assert!(watched.release().await.is_err());
    let info = a.lock(&key).inspect().await.unwrap().expect("held");
    assert_eq!(info.owner, taken.guard.owner(), "{}", a.describe());
    taken.guard.release().await.unwrap();

    let (k, taker) = (key.clone(), b.clone());
    let run = a
        .lock(&key)
        .with_ttl(Some(LONG))
        .run(|_lost| async move {
            taker.lock(&k).take_over().await.unwrap().guard.leak();
        })
        .await;
    assert!(
        matches!(run, Err(Error::Lost { .. })),
        "{}: run around a take-over answered {run:?}",
        a.describe()
    );
    assert!(b.lock(&key).force_release().await.unwrap());
}

/// A free key and an expired one are taken like an acquire would: nobody displaced, a fence
/// above the earlier ones; a take-over without ttl never expires (where supported).
pub async fn take_over_of_free_and_expired_keys(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    if !b.store().capabilities().take_over {
        return;
    }
    let key = suite.key("to-free");
    let free = b.lock(&key).with_ttl(Some(LONG)).take_over().await.unwrap();
    assert!(
        free.displaced.is_none(),
        "{}: {:?}",
        b.describe(),
        free.displaced
    );
    assert!(a.lock(&key).is_locked().await.unwrap());
    let first = free.guard.fence();
    free.guard.release().await.unwrap();

    let short = a
        .lock(&key)
        .with_ttl(Some(Duration::from_millis(150)))
        .acquire()
        .await
        .unwrap();
    eventually(suite, "the short lease expired", || {
        let l = b.lock(&key);
        async move { !l.is_locked().await.unwrap() }
    })
    .await;
    let expired = b.lock(&key).with_ttl(Some(LONG)).take_over().await.unwrap();
    assert!(
        expired.displaced.is_none(),
        "{}: an expired lease counts as displaced: {:?}",
        b.describe(),
        expired.displaced
    );
    if b.store().capabilities().fencing {
        assert!(short.fence() > first && expired.guard.fence() > short.fence());
    }
    short.leak();
    if b.store().capabilities().ttl_none {
        let forever = a.lock(&key).with_ttl(None).take_over().await.unwrap();
        assert!(forever.displaced.is_some());
        let info = b.lock(&key).inspect().await.unwrap().expect("held");
        assert_eq!(info.remaining, None, "{}", b.describe());
        assert!(matches!(
            expired.guard.release().await,
            Err(Error::NotOwned { .. })
        ));
        forever.guard.release().await.unwrap();
    } else {
        expired.guard.release().await.unwrap();
    }
}

/// Take-overs of one key racing from many tasks are serialized by the store: each displaces
/// exactly the holding before it, so ordered by fence they form one chain (every fence
/// unique, each displaced fence the previous one's), and a fence-checking resource sees
/// fences only grow in that order.
pub async fn concurrent_take_overs_are_serialized(suite: &Suite) {
    let clients = [suite.client().await, suite.client().await];
    if !clients[0].store().capabilities().take_over {
        return;
    }
    let fencing = clients[0].store().capabilities().fencing;
    let key = suite.key("to-race");
    let tasks = suite.contenders.clamp(2, 16);
    let rounds = 3;
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (locks, key) = (clients[i % 2].clone(), key.clone());
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..rounds {
                let taken = locks
                    .lock(&key)
                    .with_ttl(Some(LONG))
                    .take_over()
                    .await
                    .expect("a take-over never waits and never fails");
                let owner = taken.guard.owner().to_owned();
                seen.push((taken.guard.fence(), owner, taken.displaced));
                taken.guard.leak();
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(seen) => all.extend(seen),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let describe = clients[0].describe().to_owned();
    assert_eq!(all.len(), tasks * rounds);
    assert_eq!(
        all.iter().filter(|(_, _, d)| d.is_none()).count(),
        1,
        "{describe}: exactly the first take-over finds the key free"
    );
    if fencing {
        all.sort_by_key(|(fence, _, _)| *fence);
        for pair in all.windows(2) {
            let ((prev, prev_owner, _), (fence, _, displaced)) = (&pair[0], &pair[1]);
            assert!(fence > prev, "{describe}: fence {fence:?} handed out twice");
            let displaced = displaced.as_ref().unwrap_or_else(|| {
                panic!("{describe}: take-over with fence {fence:?} displaced nobody")
            });
            assert_eq!(
                &displaced.owner, prev_owner,
                "{describe}: the take-over with fence {fence:?} displaced another holding than the one before it"
            );
            super::assert_shown_fence(&**clients[0].store(), displaced.fence, *prev, "displaced");
        }
        let last = all.last().map(|(_, owner, _)| owner.clone());
        let info = clients[1].lock(&key).inspect().await.unwrap();
        assert_eq!(info.map(|i| i.owner), last, "{describe}");
    }
    assert!(clients[0].lock(&key).force_release().await.unwrap());
}

/// Dropping a take-over at any point leaves the lock free (once the clean-up has run).
pub async fn cancelled_take_over_leaves_nothing_held(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    if !b.store().capabilities().take_over {
        return;
    }
    let key = suite.key("to-cancel");
    for micros in [0u64, 1, 10, 50, 100, 200, 500, 1000, 2000, 5000] {
        let lock = b.lock(&key).with_ttl(Some(LONG));
        let _ = tokio::time::timeout(Duration::from_micros(micros), lock.take_over()).await;
        eventually(suite, "a cancelled take-over's lock is released", || {
            let l = a.lock(&key);
            async move { !l.is_locked().await.unwrap() }
        })
        .await;
    }
    // A cancelled request may still be on its way after the lock looked free; its clean-up
    // follows it. The lock must become free for good.
    eventually(suite, "a cancelled take-over left the lock held", || {
        let l = a.lock(&key);
        async move {
            match l.try_acquire().await {
                // A late take-over may take it from this probe before its release.
                Ok(g) => match g.release().await {
                    Ok(_) => true,
                    Err(Error::NotOwned { .. }) => false,
                    Err(e) => panic!("{e}"),
                },
                Err(Error::AlreadyLocked { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}
