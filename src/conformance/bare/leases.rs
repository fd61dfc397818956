//! Bare-store checks on one lease at a time: exclusion, owners, expiry, ttl none, force
//! release, fences, metadata.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// One holder at a time, across clients and among racing requests; keys are exact strings
/// (case and trailing spaces make other keys); locks are not re-entrant.
pub async fn store_exclusion(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("exclusion");
    assert_eq!(inspect(b, &suite.key("absent")).await, None);
    let asked = Instant::now();
    let lease = take(a, AcquireRequest::new(&key, "alice", LONG)).await;
    let grant = (asked, Instant::now());
    let read = Instant::now();
    let h = held(b, AcquireRequest::new(&key, "bob", LONG)).await;
    assert_eq!(h.owner.as_deref(), Some("alice"), "{}", a.describe());
    check_remaining(b, h.remaining, LONG, grant, read);
    held(a, AcquireRequest::new(&key, "alice", LONG)).await;
    let info = inspect(b, &key).await.expect("held");
    assert_eq!((info.key.as_str(), info.owner.as_str()), (&*key, "alice"));
    assert_eq!(info.metadata, None);
    crate::conformance::assert_shown_fence(b, info.fence, lease.fence, "inspect");
    let others = [
        suite.key("EXCLUSION"),
        suite.key("exclusion "),
        suite.key("exclusion2"),
    ];
    for other in &others {
        take(b, AcquireRequest::new(other, "bob", LONG)).await;
    }
    assert!(a.release(&key, "alice").await.unwrap());
    take(b, AcquireRequest::new(&key, "bob", LONG)).await;
    for k in others.iter().chain([&key]) {
        assert!(b.release(k, "bob").await.unwrap());
    }

    // Eight requests race for a free key over both clients: exactly one wins.
    let race = suite.key("race");
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let store = suite.client(i);
            let race = race.clone();
            tokio::spawn(async move {
                let owner = format!("racer{i}");
                let answer = store
                    .try_acquire(AcquireRequest::new(&race, &owner, LONG))
                    .await
                    .unwrap();
                matches!(answer, Acquire::Acquired(_)).then_some(owner)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tries {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{}: {winners:?} all won", a.describe());
    assert!(a.release(&race, &winners[0]).await.unwrap());
}

/// Only the owner releases, extends or sets metadata; after its release it can do none.
pub async fn store_owner_checks(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("owners");
    let lease = take(a, AcquireRequest::new(&key, "alice", LONG)).await;
    for other in ["mallory", "ALICE", "alice "] {
        assert!(!b.release(&key, other).await.unwrap(), "{other}");
        assert_eq!(b.extend(&key, other, LONG).await.unwrap(), None, "{other}");
        assert!(!b.set_metadata(&key, other, Some("x")).await.unwrap());
    }
    let info = inspect(b, &key).await.expect("still held");
    assert_eq!((info.owner.as_str(), info.metadata), ("alice", None));

    let longer = Some(Duration::from_secs(120));
    let extended = a
        .extend(&key, "alice", longer)
        .await
        .unwrap()
        .expect("ours");
    check_extended(a, &extended, longer);
    crate::conformance::assert_shown_fence(
        a,
        extended.fence,
        lease.fence,
        "extend keeps the fence",
    );
    // Twice within the same millisecond still counts as extended.
    let asked = Instant::now();
    assert!(a.extend(&key, "alice", longer).await.unwrap().is_some());
    let grant = (asked, Instant::now());
    let read = Instant::now();
    let info = inspect(b, &key).await.expect("held");
    check_remaining(b, info.remaining, longer, grant, read);
    assert!(info.remaining.unwrap() > LONG.unwrap());

    assert!(a.release(&key, "alice").await.unwrap());
    assert!(!a.release(&key, "alice").await.unwrap());
    assert_eq!(a.extend(&key, "alice", LONG).await.unwrap(), None);
    assert!(!a.set_metadata(&key, "alice", Some("x")).await.unwrap());
    assert_eq!(inspect(b, &key).await, None);
    assert!(!b.force_release(&key).await.unwrap());
}

/// An expired lease is taken over, never before its ttl has passed by the store's clock; its
/// old owner can no longer release, extend or set metadata. An expired lease nobody took is
/// gone for every operation.
pub async fn store_expiry_and_takeover(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("expiry");
    let untaken = suite.key("expired-untaken");
    let asked = Instant::now();
    let first = take(a, AcquireRequest::new(&key, "alice", Some(SHORT))).await;
    take(a, AcquireRequest::new(&untaken, "alice", Some(SHORT))).await;
    let (second, at) = take_over(suite, b, &key, "bob", "alice").await;
    let after = at.duration_since(asked);
    assert!(
        after + MS_ROUNDING >= SHORT,
        "{}: a {SHORT:?} lease was taken over after {after:?}",
        a.describe()
    );
    if let (Some(f1), Some(f2)) = (first.fence, second.fence) {
        assert!(f2 > f1, "{}: fence {f2} after {f1}", a.describe());
    }
    assert!(!a.release(&key, "alice").await.unwrap());
    assert_eq!(a.extend(&key, "alice", LONG).await.unwrap(), None);
    assert!(!a.set_metadata(&key, "alice", Some("x")).await.unwrap());
    let info = inspect(a, &key).await.expect("bob holds it");
    assert_eq!(info.owner.as_str(), "bob");
    crate::conformance::assert_shown_fence(a, info.fence, second.fence, "inspect");
    assert!(b.release(&key, "bob").await.unwrap());

    eventually(suite, "the untaken lease expires", || async {
        inspect(b, &untaken).await.is_none().then_some(())
    })
    .await;
    if a.capabilities().list {
        assert!(a.list(&untaken).await.unwrap().is_empty());
    }
    assert_eq!(a.extend(&untaken, "alice", LONG).await.unwrap(), None);
    assert!(!a.set_metadata(&untaken, "alice", None).await.unwrap());
    assert!(!a.release(&untaken, "alice").await.unwrap());
    assert!(!b.force_release(&untaken).await.unwrap());
}

/// A lock without ttl never expires and reports no remaining time; extend moves between a
/// ttl and none. A store without `ttl_none` refuses both with `Unsupported`.
pub async fn store_ttl_none(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("forever");
    if !a.capabilities().ttl_none {
        let answer = a
            .try_acquire(AcquireRequest::new(&key, "alice", None))
            .await;
        assert_unsupported(a, "ttl_none", answer);
        assert_eq!(inspect(b, &key).await, None);
        take(a, AcquireRequest::new(&key, "alice", LONG)).await;
        assert_unsupported(a, "ttl_none", a.extend(&key, "alice", None).await);
        assert!(inspect(b, &key).await.unwrap().remaining.is_some());
        assert!(a.release(&key, "alice").await.unwrap());
        return;
    }
    let lease = take(a, AcquireRequest::new(&key, "alice", None)).await;
    assert_eq!(inspect(b, &key).await.unwrap().remaining, None);
    assert_eq!(
        held(b, AcquireRequest::new(&key, "bob", LONG))
            .await
            .remaining,
        None
    );
    let asked = Instant::now();
    let extended = a.extend(&key, "alice", LONG).await.unwrap().expect("ours");
    let grant = (asked, Instant::now());
    check_extended(a, &extended, LONG);
    crate::conformance::assert_shown_fence(a, extended.fence, lease.fence, "extend");
    let read = Instant::now();
    let info = inspect(b, &key).await.unwrap();
    check_remaining(b, info.remaining, LONG, grant, read);
    let back = a.extend(&key, "alice", None).await.unwrap().expect("ours");
    check_extended(a, &back, None);
    crate::conformance::assert_shown_fence(a, back.fence, lease.fence, "extend");
    assert_eq!(inspect(b, &key).await.unwrap().remaining, None);
    assert!(b.force_release(&key).await.unwrap());
    take(b, AcquireRequest::new(&key, "bob", None)).await;
    assert!(b.release(&key, "bob").await.unwrap());
}

/// Anyone can remove a lock; its owner then holds nothing, and the next holder a higher fence.
pub async fn store_force_release(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("force");
    let ttl = if a.capabilities().ttl_none {
        None
    } else {
        LONG
    };
    let first = take(a, AcquireRequest::new(&key, "alice", ttl)).await;
    assert!(b.force_release(&key).await.unwrap());
    assert_eq!(inspect(a, &key).await, None);
    assert!(!b.force_release(&key).await.unwrap(), "nothing left");
    assert!(!a.release(&key, "alice").await.unwrap());
    assert_eq!(a.extend(&key, "alice", LONG).await.unwrap(), None);
    assert!(!a.set_metadata(&key, "alice", None).await.unwrap());
    let second = take(b, AcquireRequest::new(&key, "bob", LONG)).await;
    if let (Some(f1), Some(f2)) = (first.fence, second.fence) {
        assert!(f2 > f1, "{}: fence {f2} after {f1}", a.describe());
    }
    assert!(b.release(&key, "bob").await.unwrap());
}

/// Fences strictly increase per key across release, expiry, takeover, force release, other
/// keys, clients and contending holders; `inspect`, `extend` and `list` show the holder's.
/// A store without fencing hands out `None` everywhere.
pub async fn store_fences(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("fences");
    let shown = |info: Option<LockInfo>| info.expect("held").fence;
    let mut fences = Vec::new();
    let lease = take(a, AcquireRequest::new(&key, "alice", LONG)).await;
    fences.push(lease.fence);
    let check = |shown, what| crate::conformance::assert_shown_fence(a, shown, lease.fence, what);
    check(shown(inspect(b, &key).await), "inspect");
    let extended = a.extend(&key, "alice", LONG).await.unwrap().unwrap();
    check(extended.fence, "extend");
    if a.capabilities().list {
        check(a.list(&key).await.unwrap()[0].fence, "list");
    }
    assert!(a.release(&key, "alice").await.unwrap());
    fences.push(
        take(b, AcquireRequest::new(&key, "bob", Some(SHORT)))
            .await
            .fence,
    );
    fences.push(take_over(suite, a, &key, "carol", "bob").await.0.fence);
    assert!(b.force_release(&key).await.unwrap());
    let other = suite.key("fences-other");
    take(a, AcquireRequest::new(&other, "x", LONG)).await;
    let lease = take(b, AcquireRequest::new(&key, "dave", LONG)).await;
    fences.push(lease.fence);
    crate::conformance::assert_shown_fence(
        a,
        shown(inspect(a, &key).await),
        lease.fence,
        "inspect",
    );
    assert!(a.release(&other, "x").await.unwrap());
    assert!(b.release(&key, "dave").await.unwrap());
    if !a.capabilities().fencing {
        assert!(fences.iter().all(Option::is_none), "{fences:?}");
        return;
    }

    // Eight contenders over both clients; each records its fence while it holds the lock.
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = suite.client(i);
            let (key, order) = (key.clone(), order.clone());
            let deadline = Instant::now() + suite.patience;
            tokio::spawn(async move {
                let owner = format!("contender{i}");
                for _ in 0..5 {
                    loop {
                        let answer = store
                            .try_acquire(AcquireRequest::new(&key, &owner, LONG))
                            .await
                            .unwrap();
                        if let Acquire::Acquired(lease) = answer {
                            order.lock().unwrap().push(lease.fence);
                            assert!(store.release(&key, &owner).await.unwrap());
                            break;
                        }
                        assert!(Instant::now() < deadline, "{owner} never got its turn");
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    fences.extend(order.lock().unwrap().iter().copied());
    let fences: Vec<u64> = fences.into_iter().map(|f| f.expect("a fence")).collect();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "{}: fences {fences:?}",
        a.describe()
    );
}

/// Metadata up to 64 KiB of any UTF-8 is stored with the lock, readable by anyone, replaced
/// or cleared by its owner, and not inherited by the next holder.
pub async fn store_metadata(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("meta");
    let text = "{\"job\": 42, \"host\": \"ñandú 🔒\"} ✓ 'quoted' \\ `tick`";
    let big = "é".repeat(crate::MAX_METADATA_BYTES / 2);
    let big4 = "🔒".repeat(crate::MAX_METADATA_BYTES / 4);
    let metadata = |info: Option<LockInfo>| info.expect("held").metadata;
    take(
        a,
        AcquireRequest::new(&key, "alice", LONG).with_metadata(Some(text)),
    )
    .await;
    assert_eq!(metadata(inspect(b, &key).await).as_deref(), Some(text));
    assert!(a.set_metadata(&key, "alice", Some(&big)).await.unwrap());
    assert!(
        a.set_metadata(&key, "alice", Some(&big)).await.unwrap(),
        "unchanged metadata still counts as set"
    );
    assert_eq!(metadata(inspect(b, &key).await).as_ref(), Some(&big));
    if a.capabilities().list {
        assert_eq!(b.list(&key).await.unwrap()[0].metadata.as_ref(), Some(&big));
    }
    assert!(a.set_metadata(&key, "alice", None).await.unwrap());
    assert_eq!(metadata(inspect(b, &key).await), None);
    assert!(a.release(&key, "alice").await.unwrap());
    take(
        b,
        AcquireRequest::new(&key, "bob", LONG).with_metadata(Some(&big4)),
    )
    .await;
    assert_eq!(metadata(inspect(a, &key).await).as_ref(), Some(&big4));
    assert!(b.release(&key, "bob").await.unwrap());
    take(a, AcquireRequest::new(&key, "carol", LONG)).await;
    assert_eq!(metadata(inspect(b, &key).await), None, "not inherited");
    assert!(a.release(&key, "carol").await.unwrap());
}
