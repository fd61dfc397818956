//! The Redis store on a real 3-master Redis Cluster started by the test harness.
//! Run with `cargo test --features redis --test redis_cluster`.
#![cfg(feature = "redis")]

use std::collections::BTreeSet;
use std::time::Duration;

use cadenas::stores::redis::{keys, RedisStore};
use cadenas::{Acquire, AcquireRequest, Store};
use cadenas_test_support::redis::RedisCluster;

const WAIT: Duration = Duration::from_secs(5);

async fn fence(store: &RedisStore, r: AcquireRequest<'_>) -> u64 {
    match store.try_acquire(r).await.unwrap() {
        Acquire::Acquired(lease) => lease.fence.expect("the Redis store fences"),
        held => panic!("expected to acquire {}, got {held:?}", r.key),
    }
}

/// One master as `CLUSTER NODES` shows it.
struct Master {
    id: String,
    index: usize,
    slots: Vec<(u16, u16)>,
}

fn masters(cluster: &RedisCluster) -> Vec<Master> {
    let text = cluster.cli(0, &["CLUSTER", "NODES"]);
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[2].contains("master") {
            continue;
        }
        let port: u16 = fields[1]
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap();
        let index = cluster.nodes.iter().position(|n| n.port == port).unwrap();
        let slots = fields[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (r.parse().unwrap(), r.parse().unwrap()),
            })
            .collect();
        out.push(Master {
            id: fields[0].to_owned(),
            index,
            slots,
        });
    }
    out
}

fn owner_of(masters: &[Master], slot: u16) -> &Master {
    masters
        .iter()
        .find(|m| m.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
        .expect("every slot is served")
}

#[tokio::test]
async fn every_operation_works_on_keys_in_many_slots() {
    let cluster = RedisCluster::start(3);
    let s = RedisStore::connect(&cluster.url()).await.unwrap();
    assert!(s.is_cluster());
    let masters = masters(&cluster);
    let mut lock_keys: Vec<String> = (0..40).map(|i| format!("c:key-{i}")).collect();
    lock_keys.extend(["c:a}b", "c:{}x", "c:job{42}", "c:x}{y"].map(String::from));
    let served_by: BTreeSet<usize> = lock_keys
        .iter()
        .map(|k| owner_of(&masters, keys::slot(k.as_bytes())).index)
        .collect();
    assert_eq!(served_by.len(), 3, "the keys span every master");

    for key in &lock_keys {
        let request =
            AcquireRequest::new(key, "a", Some(Duration::from_secs(30))).with_metadata(Some("m"));
        let f1 = match s.try_acquire(request).await.unwrap() {
            Acquire::Acquired(l) => l.fence.unwrap(),
            other => panic!("{key}: {other:?}"),
        };
        assert!(matches!(
            s.try_acquire(AcquireRequest::new(key, "b", None))
                .await
                .unwrap(),
            Acquire::Held(_)
        ));
        let info = s.inspect(key).await.unwrap().unwrap();
        assert_eq!(
            (info.fence, info.metadata.as_deref()),
            (Some(f1), Some("m"))
        );
        assert!(s.extend(key, "a", None).await.unwrap().is_some());
        assert!(s.set_metadata(key, "a", Some("n")).await.unwrap());
        assert!(s.release(key, "a").await.unwrap());
        let f2 = fence(
            &s,
            AcquireRequest::new(key, "b", Some(Duration::from_secs(30))),
        )
        .await;
        assert!(f2 > f1, "{key}");
    }
    let listed: Vec<String> = s
        .list("c:")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    let mut expected = lock_keys.clone();
    expected.sort();
    assert_eq!(listed, expected, "list scans every master");
    for key in &lock_keys {
        assert!(s.force_release(key).await.unwrap());
    }
    assert!(s.list("c:").await.unwrap().is_empty());
}

#[tokio::test]
async fn derived_keys_are_in_the_lock_keys_slot() {
    let cluster = RedisCluster::start(3);
    let s = RedisStore::connect(&cluster.url()).await.unwrap();
    for key in ["plain", "app:job", "job{7}", "a}b", "{}x", "x}{y"] {
        fence(
            &s,
            AcquireRequest::new(key, "a", Some(Duration::from_secs(30))),
        )
        .await;
        let slot = cluster.cli(0, &["CLUSTER", "KEYSLOT", key]);
        for derived in [
            keys::fence_key(key),
            keys::state_key(key),
            keys::release_channel(key),
        ] {
            assert_eq!(
                cluster.cli(0, &["CLUSTER", "KEYSLOT", &derived]),
                slot,
                "{derived}"
            );
        }
        assert_eq!(
            slot.trim().parse::<u16>().unwrap(),
            keys::slot(key.as_bytes())
        );
    }
}

#[tokio::test]
async fn a_release_on_any_master_wakes_the_waiter() {
    let cluster = RedisCluster::start(3);
    let holder = RedisStore::connect(&cluster.url()).await.unwrap();
    let waiter = RedisStore::connect(&cluster.url()).await.unwrap();
    let masters = masters(&cluster);
    // One key per master: the subscriber listens on one node only.
    let mut per_master = Vec::new();
    for i in 0.. {
        let key = format!("w:{i}");
        let m = owner_of(&masters, keys::slot(key.as_bytes())).index;
        if !per_master.iter().any(|(_, n)| *n == m) {
            per_master.push((key, m));
        }
        if per_master.len() == 3 {
            break;
        }
    }
    for (key, _) in &per_master {
        fence(
            &holder,
            AcquireRequest::new(key, "a", Some(Duration::from_secs(30))),
        )
        .await;
        // As the lock layer does: a try (which marks the holding as waited for), then the
        // subscription.
        assert!(matches!(
            waiter
                .try_acquire(AcquireRequest::new(key, "b", Some(Duration::from_secs(30))))
                .await
                .unwrap(),
            Acquire::Held(_)
        ));
        let mut sub = waiter.subscribe(key).await.unwrap().unwrap();
        assert!(holder.release(key, "a").await.unwrap());
        tokio::time::timeout(WAIT, sub.released())
            .await
            .unwrap_or_else(|_| panic!("no release message for {key}"));
    }
}

#[tokio::test]
async fn a_lock_survives_the_migration_of_its_slot() {
    let cluster = RedisCluster::start(3);
    // With records: the lock key, its fence counter and its state all travel.
    let s = RedisStore::connect(&format!("{}?records=true", cluster.url()))
        .await
        .unwrap();
    let key = "moving";
    let slot = keys::slot(key.as_bytes());
    let f1 = fence(
        &s,
        AcquireRequest::new(key, "a", Some(Duration::from_secs(60))),
    )
    .await;
    let masters = masters(&cluster);
    let from = owner_of(&masters, slot);
    let to = masters.iter().find(|m| m.id != from.id).unwrap();
    let slot_text = slot.to_string();
    let names = cluster.cli(from.index, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
    let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(names.len(), 3, "lock, fence counter and state: {names:?}");
    move_slot(&cluster, slot, to, from);
    // The store follows MOVED: the lock, its fence and its ttl moved with the slot.
    let info = s.inspect(key).await.unwrap().unwrap();
    assert_eq!((info.owner.as_str(), info.fence), ("a", Some(f1)));
    assert!(info.remaining.unwrap() > Duration::from_secs(50));
    assert!(matches!(
        s.try_acquire(AcquireRequest::new(key, "b", None))
            .await
            .unwrap(),
        Acquire::Held(_)
    ));
    assert!(s.release(key, "a").await.unwrap());
    let f2 = fence(&s, AcquireRequest::new(key, "b", None)).await;
    assert!(f2 > f1);
}

/// Moves `slot` to master `to`, the way `redis-cli --cluster reshard` does, but one key per
/// `MIGRATE`, so that for a while some keys of the slot answer `ASK` and scripts on several
/// of them get `TRYAGAIN`.
fn move_slot(cluster: &RedisCluster, slot: u16, to: &Master, from: &Master) {
    let slot_text = slot.to_string();
    let to_port = cluster.nodes[to.index].port.to_string();
    cluster.cli(
        to.index,
        &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from.id],
    );
    cluster.cli(
        from.index,
        &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to.id],
    );
    loop {
        let names = cluster.cli(from.index, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "10"]);
        let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
        if names.is_empty() {
            break;
        }
        for name in names {
            let out = cluster.cli(
                from.index,
                &["MIGRATE", "127.0.0.1", &to_port, name, "0", "5000"],
            );
            assert!(
                out.contains("OK") || out.contains("NOKEY"),
                "MIGRATE {name}: {out}"
            );
        }
    }
    for i in 0..cluster.nodes.len() {
        cluster.cli(i, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to.id]);
    }
}

/// A `MOVED`/`ASK` storm: the slot of four locks travels round the three masters again and
/// again while eight tasks take and give back those locks. Every answer stays right (never
/// two holders of a key, fences increasing per key), and an operation that fails fails with
/// a retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_through_a_moved_and_ask_storm() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let cluster = Arc::new(RedisCluster::start(3));
    let locks = cadenas::Locks::connect(&cluster.url()).await.unwrap();
    let names: Arc<Vec<String>> = Arc::new((0..4).map(|i| format!("{{storm}}k{i}")).collect());
    let slot = keys::slot(b"{storm}");
    let stop = Arc::new(AtomicBool::new(false));
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..4).map(|_| AtomicBool::new(false)).collect());
    let fences: Arc<Vec<Mutex<u64>>> = Arc::new((0..4).map(|_| Mutex::new(0)).collect());
    let (cycles, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (locks, names, stop) = (locks.clone(), names.clone(), stop.clone());
        let (held, fences) = (held.clone(), fences.clone());
        let (cycles, errors) = (cycles.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = t;
            while !stop.load(Ordering::Relaxed) {
                let i = n % names.len();
                n += 1;
                let lock = locks
                    .lock(&names[i])
                    .with_ttl(Some(Duration::from_secs(3)))
                    .with_retry(cadenas::Retry::default().timeout(Duration::from_secs(10)));
                let guard = match lock.acquire().await {
                    Ok(g) => g,
                    Err(cadenas::Error::Store { source, .. }) if source.is_retryable() => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => panic!("acquire {}: {e}", names[i]),
                };
                assert!(
                    !held[i].swap(true, Ordering::SeqCst),
                    "two holders of {}",
                    names[i]
                );
                let fence = guard.fence().expect("fenced");
                {
                    let mut last = fences[i].lock().unwrap();
                    assert!(fence > *last, "{}: fence {fence} after {}", names[i], *last);
                    *last = fence;
                }
                held[i].store(false, Ordering::SeqCst);
                match guard.release().await {
                    Ok(()) => {}
                    Err(cadenas::Error::Store { source, .. }) if source.is_retryable() => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("release {}: {e}", names[i]),
                }
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mover = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..6 {
                let all = masters(&cluster);
                let from = owner_of(&all, slot);
                let to = all
                    .iter()
                    .find(|m| m.index == (from.index + 1) % all.len())
                    .expect("three masters");
                move_slot(&cluster, slot, to, from);
            }
        })
    };
    mover.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let (cycles, errors) = (
        cycles.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    assert!(cycles > 0, "no lock was taken during the storm");
    println!("storm: {cycles} cycles, {errors} retryable errors");
    // After the storm every lock is free and works.
    for name in names.iter() {
        let guard = locks.lock(name).acquire().await.unwrap();
        guard.release().await.unwrap();
    }
}
