//! Single-holder behaviour: exclusion, owners, expiry, fences, metadata, tokens, input.

use std::time::Duration;

use super::{eventually, reader, Suite};
use crate::{Error, EventKind, Locks, Retry};

const SHORT: Duration = Duration::from_millis(300);

fn wait(suite: &Suite) -> Retry {
    Retry::default()
        .timeout(suite.patience)
        .delay(Duration::from_millis(20))
}

/// Fencing and ttl-none declarations match what the store does.
pub async fn capabilities_are_honest(suite: &Suite) {
    let locks = suite.client().await;
    let caps = locks.store().capabilities();
    let g = locks.lock(&suite.key("caps")).acquire().await.unwrap();
    assert_eq!(
        g.fence().is_some(),
        caps.fencing,
        "{}: fences must be handed out exactly when the store declares fencing",
        locks.describe()
    );
    let other = suite.client().await;
    let seen = other
        .lock(&suite.key("caps"))
        .inspect()
        .await
        .unwrap()
        .expect("another client sees a held lock");
    // A store that does not record every fence may show none (never a wrong one).
    let fence_seen = seen.fence == g.fence() || !caps.inspect_fence && seen.fence.is_none();
    assert_eq!(
        seen.owner == g.owner() && fence_seen,
        caps.shared_records,
        "{}: another client reads the holder's owner and fence exactly when the store declares shared records: {seen:?}",
        locks.describe()
    );
    g.release().await.unwrap();
    let none = locks.lock(&suite.key("caps-none")).with_ttl(None);
    match none.acquire().await {
        Ok(g) => {
            assert!(
                caps.ttl_none,
                "{}: ttl none worked but is not declared",
                locks.describe()
            );
            g.release().await.unwrap();
        }
        Err(Error::Unsupported { .. }) => assert!(!caps.ttl_none),
        Err(e) => panic!("{}: ttl none failed: {e}", locks.describe()),
    }
}

/// Only one holder at a time; the next one gets the lock after release.
pub async fn exclusion(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("exclusion");
    let held = a.lock(&key).acquire().await.unwrap();
    assert!(b.lock(&key).is_locked().await.unwrap());
    match b.lock(&key).try_acquire().await {
        Err(Error::AlreadyLocked { key: k, .. }) => assert_eq!(k, key),
        other => panic!("{}: a held lock was taken: {other:?}", a.describe()),
    }
    // A second acquire by the same owner is refused too: locks are not re-entrant.
    let same = held.lock().clone();
    assert!(same.try_acquire().await.is_err());
    match b
        .lock(&key)
        .with_retry(Retry::default().attempts(2).delay(Duration::from_millis(5)))
        .acquire()
        .await
    {
        Err(Error::Timeout { attempts: 2, .. }) => {}
        other => panic!(
            "{}: expected a timeout after 2 attempts: {other:?}",
            a.describe()
        ),
    }
    held.release().await.unwrap();
    assert!(!b.lock(&key).is_locked().await.unwrap());
    let g = b.lock(&key).try_acquire().await.unwrap();
    g.release().await.unwrap();
}

/// Only the owner releases or extends; the owner's later calls fail once someone else holds it.
pub async fn owner_checks(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("owners");
    let held = a.lock(&key).with_owner("alice").acquire().await.unwrap();
    let stored = match a.namespace() {
        Some(ns) => format!("{ns}:{key}"),
        None => key.clone(),
    };
    assert!(!b.store().release(&stored, "mallory").await.unwrap());
    assert!(b
        .store()
        .extend(&stored, "mallory", Some(SHORT))
        .await
        .unwrap()
        .is_none());
    assert!(!b
        .store()
        .set_metadata(&stored, "mallory", Some("x"))
        .await
        .unwrap());
    let info = b.lock(&key).inspect().await.unwrap().expect("still held");
    assert_eq!(info.owner, "alice");
    assert_eq!(info.key, key);
    // The same owner id, chosen by the caller, can release from another client (locky's `locker`).
    let token = held.serialize();
    let again = b.restore(&token).await.unwrap();
    assert_eq!(again.owner(), "alice");
    again.release().await.unwrap();
    match b.restore(&token).await {
        Err(Error::NotOwned { .. }) => {}
        other => panic!("{}: a released token restored: {other:?}", a.describe()),
    }
}

/// An expired lease is taken over; its old holder is told on release, extend and lost().
pub async fn expiry_and_takeover(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("expiry");
    let old = a.lock(&key).with_ttl(Some(SHORT)).acquire().await.unwrap();
    let lost = old.lost_signal();
    let new = b
        .lock(&key)
        .with_retry(wait(suite))
        .acquire()
        .await
        .expect("the expired lock is taken over");
    assert!(old.is_expired());
    assert!(lost.is_lost());
    assert!(matches!(
        tokio::time::timeout(suite.patience, old.lost()).await,
        Ok(Error::Lost { .. })
    ));
    if let (Some(f1), Some(f2)) = (old.fence(), new.fence()) {
        assert!(f2 > f1, "{}: fence went from {f1} to {f2}", a.describe());
    }
    assert!(matches!(
        old.extend(None).await,
        Err(Error::NotOwned { .. })
    ));
    assert!(matches!(old.release().await, Err(Error::NotOwned { .. })));
    assert!(
        b.lock(&key).is_locked().await.unwrap(),
        "the late release must not free the new holder's lock"
    );
    new.release().await.unwrap();
}

/// A lock without ttl never expires and reports no remaining time.
pub async fn ttl_none(suite: &Suite) {
    let locks = suite.client().await;
    if !locks.store().capabilities().ttl_none {
        return;
    }
    let key = suite.key("forever");
    let g = locks.lock(&key).with_ttl(None).acquire().await.unwrap();
    assert_eq!(g.remaining_time(), None);
    assert!(!g.is_expired());
    let info = locks.lock(&key).inspect().await.unwrap().unwrap();
    assert_eq!(info.remaining, None);
    g.extend(Some(Duration::from_secs(60))).await.unwrap();
    let info = locks.lock(&key).inspect().await.unwrap().unwrap();
    assert!(info.remaining.is_some_and(|r| r > Duration::from_secs(30)));
    g.release().await.unwrap();
}

/// Extending moves the expiry (store's and ours) past the original ttl.
pub async fn extend(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("extend");
    let g = a.lock(&key).with_ttl(Some(SHORT)).acquire().await.unwrap();
    let before = g.remaining_time().unwrap();
    assert!(before <= SHORT);
    g.extend(Some(Duration::from_secs(30))).await.unwrap();
    assert!(g.remaining_time().unwrap() > Duration::from_secs(20));
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    let info = b
        .lock(&key)
        .inspect()
        .await
        .unwrap()
        .expect("held past its first ttl");
    assert!(info.remaining.unwrap() > Duration::from_secs(20));
    // `extend(None)` goes back to the lock's own ttl, counted from now.
    g.extend(None).await.unwrap();
    assert!(g.remaining_time().unwrap() <= SHORT);
    assert!(matches!(
        g.extend(Some(Duration::ZERO)).await,
        Err(Error::InvalidInput { .. })
    ));
    g.release().await.unwrap();
}

/// Anyone can force-release; the holder's lost signal and release report it.
pub async fn force_release(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("force");
    let g = a
        .lock(&key)
        .with_ttl(Some(Duration::from_secs(30)))
        .acquire()
        .await
        .unwrap();
    assert!(b.lock(&key).force_release().await.unwrap());
    assert!(
        !b.lock(&key).force_release().await.unwrap(),
        "nothing left to remove"
    );
    assert!(!b.lock(&key).is_locked().await.unwrap());
    let other = b.lock(&key).try_acquire().await.unwrap();
    assert!(matches!(g.release().await, Err(Error::NotOwned { .. })));
    other.release().await.unwrap();
}

/// Fences strictly increase per key across release, expiry, takeover and new clients.
pub async fn fences_increase(suite: &Suite) {
    let locks = suite.client().await;
    if !locks.store().capabilities().fencing {
        return;
    }
    let key = suite.key("fences");
    let mut last = 0u64;
    let mut next = |f: Option<u64>, how: &str| {
        let f = f.expect("fencing stores hand out fences");
        assert!(
            f > last,
            "{}: fence {f} after {last} ({how})",
            locks.describe()
        );
        last = f;
    };
    for _ in 0..3 {
        let g = locks.lock(&key).acquire().await.unwrap();
        next(g.fence(), "after release");
        g.release().await.unwrap();
    }
    let g = locks
        .lock(&key)
        .with_ttl(Some(Duration::from_millis(50)))
        .acquire()
        .await
        .unwrap();
    next(g.fence(), "after release");
    let taken = locks
        .lock(&key)
        .with_retry(wait(suite))
        .acquire()
        .await
        .unwrap();
    next(taken.fence(), "after expiry and takeover");
    assert!(b_force(&locks, &key).await);
    g.leak();
    let fresh = suite.client().await;
    let g = fresh.lock(&key).acquire().await.unwrap();
    next(g.fence(), "from a new client after force release");
    let info = fresh.lock(&key).inspect().await.unwrap().unwrap();
    super::assert_shown_fence(&**fresh.store(), info.fence, g.fence(), "inspect");
    g.release().await.unwrap();
    taken.leak();
}

async fn b_force(locks: &Locks, key: &str) -> bool {
    locks.lock(key).force_release().await.unwrap()
}

/// Metadata is stored with the lock, readable by anyone, updatable by the holder.
pub async fn metadata_round_trip(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("meta");
    let text = "host=web-3 pid=4242 ünïcode ✓";
    let g = a.lock(&key).with_metadata(text).acquire().await.unwrap();
    let info = b.lock(&key).inspect().await.unwrap().unwrap();
    assert_eq!(info.metadata.as_deref(), Some(text));
    g.set_metadata(Some("step 2")).await.unwrap();
    let info = b.lock(&key).inspect().await.unwrap().unwrap();
    assert_eq!(info.metadata.as_deref(), Some("step 2"));
    g.release().await.unwrap();
    let g = a.lock(&key).acquire().await.unwrap();
    let info = b.lock(&key).inspect().await.unwrap().unwrap();
    assert_eq!(info.metadata, None, "metadata does not outlive its lock");
    g.release().await.unwrap();
    let big = "x".repeat(crate::MAX_METADATA_BYTES + 1);
    assert!(matches!(
        a.lock(&key).with_metadata(big).acquire().await,
        Err(Error::InvalidInput {
            what: "metadata",
            ..
        })
    ));
    let max = "m".repeat(crate::MAX_METADATA_BYTES);
    let g = a
        .lock(&key)
        .with_metadata(max.clone())
        .acquire()
        .await
        .unwrap();
    let info = b.lock(&key).inspect().await.unwrap().unwrap();
    assert_eq!(info.metadata.map(|m| m.len()), Some(max.len()));
    g.release().await.unwrap();
}

/// A serialized guard is restored in another client as the same holder.
pub async fn restore_from_token(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("token");
    let g = a
        .lock(&key)
        .with_ttl(Some(Duration::from_secs(30)))
        .acquire()
        .await
        .unwrap();
    let (owner, fence) = (g.owner().to_owned(), g.fence());
    let token = g.serialize();
    assert!(
        a.lock(&key).is_locked().await.unwrap(),
        "serialize does not release"
    );
    let r = b.restore(&token).await.unwrap();
    assert_eq!(
        (r.owner(), r.fence(), r.key()),
        (owner.as_str(), fence, key.as_str())
    );
    assert!(r.remaining_time().unwrap() > Duration::from_secs(20));
    r.extend(None).await.unwrap();
    r.release().await.unwrap();
    assert!(!a.lock(&key).is_locked().await.unwrap());
    let edited = token.replacen('.', ".x", 1);
    assert!(matches!(
        b.restore(&edited).await,
        Err(Error::InvalidInput { what: "token", .. })
    ));
    assert!(matches!(
        b.restore("not a token").await,
        Err(Error::InvalidInput { what: "token", .. })
    ));
}

/// Namespaces keep equal keys apart and are invisible in keys and lists.
pub async fn namespaces(suite: &Suite) {
    let base = suite.client().await;
    let store = base.store().clone();
    let ns = |n: &str| {
        Locks::builder()
            .namespace(format!("{}-{n}", suite.prefix()))
            .build_arc(store.clone())
            .unwrap()
    };
    let (x, y) = (ns("x"), ns("y"));
    let gx = x.lock("shared-name").acquire().await.unwrap();
    let gy = y
        .lock("shared-name")
        .try_acquire()
        .await
        .expect("other namespace, other lock");
    if store.capabilities().list {
        let listed = x.list("").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "shared-name");
    }
    let raw = format!("{}-x:shared-name", suite.prefix());
    assert_eq!(
        base.store().inspect(&raw).await.unwrap().map(|i| i.owner),
        Some(gx.owner().to_owned()),
        "key k in namespace ns is stored as ns:k"
    );
    gx.release().await.unwrap();
    gy.release().await.unwrap();
    assert!(Locks::builder()
        .namespace("bad namespace")
        .build_arc(store)
        .is_err());
}

/// `list` returns live locks under a prefix, sorted, with full keys.
pub async fn list_by_prefix(suite: &Suite) {
    let locks = suite.client().await;
    if !locks.store().capabilities().list {
        return;
    }
    let p = suite.key("list");
    let names = [
        format!("{p}/b"),
        format!("{p}/a"),
        format!("{p}%_x"),
        format!("{p}/c"),
    ];
    let mut guards = Vec::new();
    for n in &names {
        guards.push(locks.lock(n).acquire().await.unwrap());
    }
    let short = locks
        .lock(&format!("{p}/expired"))
        .with_ttl(Some(Duration::from_millis(30)))
        .acquire()
        .await
        .unwrap();
    let long = format!("{p}/{}", "L".repeat(200));
    guards.push(locks.lock(&long).acquire().await.unwrap());
    let want_expired = format!("{p}/expired");
    eventually(suite, "the short lock expired", || {
        let l = locks.lock(&want_expired);
        async move { !l.is_locked().await.unwrap() }
    })
    .await;
    let listed: Vec<String> = locks
        .list(&format!("{p}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    let mut want = vec![
        format!("{p}/a"),
        format!("{p}/b"),
        format!("{p}/c"),
        long.clone(),
    ];
    want.sort();
    assert_eq!(listed, want, "{}: list with a prefix", locks.describe());
    let like = locks.list(&format!("{p}%")).await.unwrap();
    assert_eq!(like.len(), 1, "% and _ in a prefix are literal characters");
    drop(short);
    for g in guards {
        g.release().await.unwrap();
    }
    assert!(locks.list(&format!("{p}/")).await.unwrap().is_empty());
}

/// Bad keys and durations are typed errors; nothing is truncated.
pub async fn bad_input(suite: &Suite) {
    let locks = suite.client().await;
    let invalid = |r: crate::Result<crate::Guard>, what: &str| match r {
        Err(Error::InvalidInput { what: w, .. }) => assert_eq!(w, what),
        other => panic!("{}: expected invalid {what}: {other:?}", locks.describe()),
    };
    invalid(locks.lock("").acquire().await, "key");
    invalid(locks.lock(&"k".repeat(256)).acquire().await, "key");
    invalid(locks.lock("a\0b").try_acquire().await, "key");
    invalid(
        locks
            .lock("k")
            .with_ttl(Some(Duration::ZERO))
            .acquire()
            .await,
        "ttl",
    );
    invalid(
        locks
            .lock("k")
            .with_ttl(Some(Duration::from_secs(400 * 86400)))
            .acquire()
            .await,
        "ttl",
    );
    invalid(locks.lock("k").with_owner("").acquire().await, "owner");
    assert!(matches!(
        locks.lock("").inspect().await,
        Err(Error::InvalidInput { .. })
    ));
    // The longest key the namespace leaves room for round-trips whole.
    let room = crate::MAX_KEY_BYTES - locks.namespace().map_or(0, |n| n.len() + 1);
    let mut long = suite.key("long-");
    while long.len() < room {
        long.push('é');
    }
    while long.len() > room {
        long.pop();
    }
    let g = locks.lock(&long).acquire().await.unwrap();
    let info = locks.lock(&long).inspect().await.unwrap().unwrap();
    assert_eq!(info.key, long);
    g.release().await.unwrap();
}

/// A guard dropped without release is released in the background.
pub async fn dropped_guard_is_released(suite: &Suite) {
    let locks = suite.client().await;
    let key = suite.key("dropped");
    drop(locks.lock(&key).acquire().await.unwrap());
    eventually(suite, "the dropped guard's lock is free", || {
        let l = locks.lock(&key);
        async move { !l.is_locked().await.unwrap() }
    })
    .await;
}

/// `run` returns `Lost` when the lease ended during the closure, even if it succeeded.
pub async fn run_reports_lost(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("run");
    let out = a.lock(&key).run(|_| async { 7 }).await.unwrap();
    assert_eq!(out, 7);
    let b_key = key.clone();
    let r = a
        .lock(&key)
        .with_ttl(Some(Duration::from_secs(30)))
        .run(|lost| async move {
            b.lock(&b_key).force_release().await.unwrap();
            b.lock(&b_key).try_acquire().await.unwrap().leak();
            // Without a watchdog the loss is found at release; the closure still finishes.
            let _ = lost;
            "done"
        })
        .await;
    assert!(matches!(r, Err(Error::Lost { .. })), "{r:?}");
    a.lock(&key).force_release().await.unwrap();
    let r = a
        .lock(&key)
        .with_ttl(Some(Duration::from_millis(100)))
        .run(|lost| async move { lost.wait().await })
        .await;
    assert!(
        matches!(r, Err(Error::Lost { .. })),
        "an expired lease is reported: {r:?}"
    );
}

/// Events arrive in order, once each.
pub async fn events_in_order(suite: &Suite) {
    let locks = suite.client().await;
    let mut rx = locks.events();
    let key = suite.key("events");
    let g = locks.lock(&key).acquire().await.unwrap();
    g.extend(None).await.unwrap();
    g.release().await.unwrap();
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if e.key == key {
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            EventKind::Acquired,
            EventKind::Extended,
            EventKind::Released
        ]
    );
}

/// With `auto_extend` a short lease outlives its ttl many times over and nobody else gets it.
pub async fn watchdog_keeps_the_lease(suite: &Suite) {
    let a = suite.client().await;
    let b = reader(suite, &a).await;
    let key = suite.key("watchdog");
    let ttl = Duration::from_millis(600);
    let g = a
        .lock(&key)
        .with_ttl(Some(ttl))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    let until = tokio::time::Instant::now() + ttl * 3;
    while tokio::time::Instant::now() < until {
        assert!(
            b.lock(&key).try_acquire().await.is_err(),
            "{}: taken while the watchdog held it",
            a.describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!g.is_expired());
    // Taken away: the watchdog's next extend fails and fires the lost signal.
    b.lock(&key).force_release().await.unwrap();
    let e = tokio::time::timeout(suite.patience, g.lost())
        .await
        .expect("lost signal fires");
    assert!(matches!(e, Error::Lost { .. }));
    let _ = g.release().await;
}
