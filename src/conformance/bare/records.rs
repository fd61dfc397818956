//! Bare-store checks on what a store reports: remaining time, lists, odd keys, reaped
//! records, release notifications.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// The time left that `inspect`, `list` and a refused `try_acquire` report counts down from
/// the grant (or the last extend) and is never longer than what was granted.
pub async fn store_remaining_time(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let key = suite.key("remaining");
    let ttl = Some(Duration::from_secs(10));
    let asked = Instant::now();
    take(a, AcquireRequest::new(&key, "alice", ttl)).await;
    let mut grant = (asked, Instant::now());
    for round in 0..3 {
        if round == 2 {
            let asked = Instant::now();
            a.extend(&key, "alice", ttl).await.unwrap().expect("ours");
            grant = (asked, Instant::now());
        }
        // Let time pass: a store that reports its ttl without counting down fails here.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let read = Instant::now();
        let info = inspect(b, &key).await.expect("held");
        check_remaining(b, info.remaining, ttl, grant, read);
        let read = Instant::now();
        let h = held(b, AcquireRequest::new(&key, "bob", LONG)).await;
        check_remaining(b, h.remaining, ttl, grant, read);
        if a.capabilities().list {
            let read = Instant::now();
            let listed = b.list(&key).await.unwrap();
            check_remaining(b, listed[0].remaining, ttl, grant, read);
        }
    }
    assert!(a.release(&key, "alice").await.unwrap());
}

/// `list` matches its prefix literally: `%`, `_`, `*`, `?`, `[`, `]`, `\`, `!` are plain
/// characters (not SQL `LIKE` or Redis `SCAN MATCH` patterns), case counts; it returns live
/// locks only, sorted by key, with owner, fence, remaining time and metadata. A store without
/// `list` answers `Unsupported`.
pub async fn store_list_escaping(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let base = suite.key("list/");
    if !a.capabilities().list {
        return assert_unsupported(a, "list", a.list(&base).await);
    }
    let special = "a%b_c*d?e[f]g\\h!i`j'k:";
    let prefix = format!("{base}{special}");
    let mut members = vec![
        prefix.clone(),
        format!("{prefix}2"),
        format!("{prefix}1"),
        format!("{prefix}1/deeper"),
    ];
    // Keys a pattern would match if the prefix's characters were not taken literally.
    let decoys: Vec<String> = [
        ("%", "XX"),
        ("_", "X"),
        ("*", "XX"),
        ("?", "X"),
        ("[f]", "f"),
        ("\\h", "h"),
        ("!i", "i"),
        ("a%", "A%"),
        ("k:", "k;"),
    ]
    .iter()
    .map(|(from, to)| format!("{base}{}1", special.replacen(from, to, 1)))
    .collect();
    let asked = Instant::now();
    for k in members.iter().chain(&decoys) {
        take(
            a,
            AcquireRequest::new(k, "o", LONG).with_metadata(Some("m")),
        )
        .await;
    }
    let grant = (asked, Instant::now());
    let expired = format!("{prefix}expired");
    take(a, AcquireRequest::new(&expired, "o", Some(SHORT))).await;
    eventually(suite, "the short lease expires", || async {
        inspect(b, &expired).await.is_none().then_some(())
    })
    .await;
    let keys = |v: &[LockInfo]| v.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
    let listed = b.list(&prefix).await.unwrap();
    members.sort();
    assert_eq!(keys(&listed), members, "{}: list('{prefix}')", a.describe());
    for info in &listed {
        assert_eq!(
            (info.owner.as_str(), info.metadata.as_deref()),
            ("o", Some("m"))
        );
        let recorded = a.capabilities().inspect_fence;
        assert!(
            info.fence.is_some() == a.capabilities().fencing || !recorded && info.fence.is_none()
        );
        check_remaining(b, info.remaining, LONG, grant, grant.0);
    }
    let mut all = members.clone();
    all.extend(decoys.iter().cloned());
    all.sort();
    assert_eq!(keys(&b.list(&base).await.unwrap()), all, "sorted by key");
    assert!(b.list(&format!("{prefix}zz")).await.unwrap().is_empty());
    for k in &all {
        assert!(a.release(k, "o").await.unwrap());
    }
    assert!(b.list(&base).await.unwrap().is_empty());
}

/// Keys and owners with quotes, SQL and glob characters, braces, any script and the full
/// 255 bytes are stored and read back exactly.
pub async fn store_odd_keys(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let mut long = suite.key("odd/");
    while long.len() + 'ü'.len_utf8() <= crate::MAX_KEY_BYTES {
        long.push('ü');
    }
    let names = [
        "'; DROP TABLE cadenas_locks; --",
        "\"quoted\" `tick` \\ back\\slash",
        "ключ🔒:锁 ✓",
        "$1 %s ? :x @y",
        "a}b{c}{",
        "tab\tnew\nline",
    ];
    let owner = "o'wn\"er` \\ 🔒";
    let keys = names.iter().map(|n| suite.key(&format!("odd/{n}")));
    for key in keys.chain([long]) {
        let lease = take(a, AcquireRequest::new(&key, owner, LONG)).await;
        let info = inspect(b, &key).await.expect("held");
        assert_eq!((info.key.as_str(), info.owner.as_str()), (&*key, owner));
        crate::conformance::assert_shown_fence(b, info.fence, lease.fence, &key);
        let h = held(b, AcquireRequest::new(&key, "other", LONG)).await;
        assert_eq!(h.owner.as_deref(), Some(owner));
        if a.capabilities().list {
            assert_eq!(b.list(&key).await.unwrap().len(), 1, "{key}");
        }
        assert!(a.release(&key, owner).await.unwrap(), "{key}");
        assert_eq!(inspect(b, &key).await, None);
    }
}

/// With `expiry_watch`, each expired record is returned by exactly one of several concurrent
/// `reap_expired` calls (with no time left), and neither released nor live locks are. A
/// store without it answers `Unsupported`.
pub async fn store_reap_once(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.peer());
    let prefix = suite.key("reap/");
    if !a.capabilities().expiry_watch {
        return assert_unsupported(a, "expiry_watch", a.reap_expired(&prefix).await);
    }
    let mut expired: Vec<(String, Option<u64>)> = Vec::new();
    for i in 0..6 {
        let key = format!("{prefix}e{i}");
        let lease = take(a, AcquireRequest::new(&key, &format!("o{i}"), Some(SHORT))).await;
        expired.push((key, lease.fence));
    }
    let released = format!("{prefix}released");
    take(a, AcquireRequest::new(&released, "r", Some(SHORT))).await;
    assert!(a.release(&released, "r").await.unwrap());
    let live = format!("{prefix}live");
    take(b, AcquireRequest::new(&live, "l", LONG)).await;
    for (key, _) in &expired {
        eventually(suite, "the short leases expire", || async {
            inspect(b, key).await.is_none().then_some(())
        })
        .await;
    }
    let reapers: Vec<_> = (0..4)
        .map(|i| {
            let store = suite.client(i);
            let prefix = prefix.clone();
            tokio::spawn(async move { store.reap_expired(&prefix).await.unwrap() })
        })
        .collect();
    let mut reaped = Vec::new();
    for r in reapers {
        reaped.extend(r.await.unwrap());
    }
    reaped.sort_by(|x, y| x.key.cmp(&y.key));
    let got: Vec<(String, Option<u64>)> = reaped.iter().map(|i| (i.key.clone(), i.fence)).collect();
    assert_eq!(got, expired, "{}: each expired record once", a.describe());
    for (i, info) in reaped.iter().enumerate() {
        assert_eq!(info.owner, format!("o{i}"));
        assert_eq!(info.remaining, Some(Duration::ZERO));
    }
    assert!(a.reap_expired(&prefix).await.unwrap().is_empty());
    assert_eq!(inspect(a, &live).await.expect("live").owner, "l");
    assert!(b.release(&live, "l").await.unwrap());
}

/// With `notify`, a subscriber on the peer is woken by a release and by a force release,
/// promptly (well under a poll delay). A store without `notify` may still hand out a
/// subscription for waiters in this process: a release through the same client wakes it.
pub async fn store_notify(suite: &StoreSuite) {
    let (a, b) = (suite.store(), suite.other());
    let key = suite.key("notify");
    let woken = |what: &'static str| move |_| panic!("{}: not woken by {what}", a.describe());
    if !b.capabilities().notify {
        if let Some(mut sub) = b.subscribe(&key).await.unwrap() {
            take(b, AcquireRequest::new(&key, "holder", LONG)).await;
            assert!(b.release(&key, "holder").await.unwrap());
            let wait = tokio::time::timeout(suite.patience, sub.released());
            wait.await.unwrap_or_else(woken("a release in this client"));
        }
        return;
    }
    let mut sub = b
        .subscribe(&key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{}: notify is declared", b.describe()));
    let mut latencies = Vec::new();
    for _ in 0..5 {
        take(a, AcquireRequest::new(&key, "holder", LONG)).await;
        // The waiter's try comes first: some stores notify only releases someone waited for.
        held(b, AcquireRequest::new(&key, "waiter", LONG)).await;
        let released = Instant::now();
        assert!(a.release(&key, "holder").await.unwrap());
        let wait = tokio::time::timeout(suite.patience, sub.released());
        wait.await.unwrap_or_else(woken("a release"));
        latencies.push(released.elapsed());
        take(b, AcquireRequest::new(&key, "waiter", LONG)).await;
        assert!(b.release(&key, "waiter").await.unwrap());
    }
    latencies.sort();
    assert!(
        latencies[2] < Duration::from_millis(500),
        "{}: woken after {latencies:?}",
        a.describe()
    );
    take(a, AcquireRequest::new(&key, "holder", LONG)).await;
    held(b, AcquireRequest::new(&key, "waiter", LONG)).await;
    assert!(a.force_release(&key).await.unwrap());
    let wait = tokio::time::timeout(suite.patience, sub.released());
    wait.await.unwrap_or_else(woken("a force release"));
}
