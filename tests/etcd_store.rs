//! What is specific to the etcd store, against real etcd members the tests start: `etcdctl
//! lock` and cadenas exclude each other both ways, and a 3-member cluster that loses a
//! member (the leader too) while locks are held and contended never has two holders, hands
//! out increasing fences, and tells holders whose lease could not be kept that it is lost.
#![cfg(feature = "etcd")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cadenas::{Error, Locks, Retry};
use cadenas_test_support::etcd::EtcdCluster;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

fn key(name: &str) -> String {
    format!("etcd-{name}-{:x}", rand::random::<u32>())
}

/// `etcdctl lock NAME -- sh -c CMD`, with its stdout read line by line on a thread.
struct Etcdctl {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Etcdctl {
    fn lock(cluster: &EtcdCluster, name: &str, command: &str) -> Etcdctl {
        let mut child = cluster
            .etcdctl()
            .args(["lock", name, "--", "sh", "-c", command])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl runs (apt-get install etcd-client)");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Etcdctl { child, lines }
    }

    /// The next line within `limit`, if any.
    fn line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_excludes_cadenas() {
    let cluster = EtcdCluster::start();
    let locks = Locks::connect(&cluster.url()).await.unwrap();
    let name = key("ctl-first");
    let ctl = Etcdctl::lock(&cluster, &name, "echo held; sleep 2; echo done");
    assert_eq!(ctl.line(PATIENCE).as_deref(), Some("held"));
    match locks.lock(&name).try_acquire().await {
        Err(Error::AlreadyLocked { holder, .. }) => {
            let owner = holder.expect("the holder is named");
            assert!(owner.starts_with("etcd-lease:"), "{owner}");
        }
        other => panic!("taken while etcdctl held it: {other:?}"),
    }
    let info = locks.lock(&name).inspect().await.unwrap().expect("held");
    assert!(info.fence.is_some());
    // Once etcdctl's command ends it unlocks; a waiting cadenas acquire then gets it.
    let started = Instant::now();
    let g = locks
        .lock(&name)
        .with_retry(Retry::default().timeout(PATIENCE))
        .acquire()
        .await
        .unwrap();
    assert_eq!(
        ctl.line(Duration::ZERO).as_deref(),
        Some("done"),
        "held after etcdctl ended"
    );
    assert!(started.elapsed() < PATIENCE);
    assert!(g.fence().unwrap() > info.fence.unwrap());
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cadenas_excludes_etcdctl_lock() {
    let cluster = EtcdCluster::start();
    let locks = Locks::connect(&cluster.url()).await.unwrap();
    let name = key("cadenas-first");
    let g = locks.lock(&name).acquire().await.unwrap();
    let ctl = Etcdctl::lock(&cluster, &name, "echo got");
    // etcdctl queues behind our holding key and must not get the lock while we hold it.
    assert_eq!(
        ctl.line(Duration::from_millis(1500)),
        None,
        "etcdctl took a held lock"
    );
    // Its queued key is a waiter, never the holder.
    let info = locks.lock(&name).inspect().await.unwrap().unwrap();
    assert_eq!(info.owner, g.owner());
    g.release().await.unwrap();
    assert_eq!(ctl.line(PATIENCE).as_deref(), Some("got"));
}

/// What the contenders saw: holders at once per key, the highest fence per key, and how many
/// cycles completed.
#[derive(Default)]
struct Seen {
    holders: HashMap<String, AtomicUsize>,
    fences: Mutex<HashMap<String, u64>>,
    cycles: AtomicUsize,
    errors: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_lose_one_and_the_leader_without_two_holders() {
    let mut cluster = EtcdCluster::with_members(3);
    let keys: Vec<String> = (0..2).map(|i| key(&format!("cluster{i}"))).collect();
    let seen = Arc::new(Seen {
        holders: keys
            .iter()
            .map(|k| (k.clone(), AtomicUsize::new(0)))
            .collect(),
        ..Seen::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let locks = Locks::connect(&cluster.url()).await.unwrap();
        let (seen, stop) = (seen.clone(), stop.clone());
        let key = keys[t % keys.len()].clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let lock = locks
                    .lock(&key)
                    .with_ttl(Some(Duration::from_secs(5)))
                    .with_retry(Retry::default().timeout(Duration::from_secs(2)));
                let g = match lock.acquire().await {
                    Ok(g) => g,
                    Err(e) => {
                        // Members come and go: the cluster may be electing.
                        if seen.errors.fetch_add(1, Ordering::Relaxed) < 20 {
                            eprintln!("acquire failed: {e}");
                        }
                        continue;
                    }
                };
                let fence = g.fence().expect("etcd fences");
                {
                    let mut fences = seen.fences.lock().unwrap();
                    let last = fences.entry(key.clone()).or_default();
                    assert!(fence > *last, "fence {fence} after {last} on {key}");
                    *last = fence;
                }
                let holders = &seen.holders[&key];
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders of {key}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                seen.cycles.fetch_add(1, Ordering::Relaxed);
                // A release that fails leaves the lock to its ttl: never a second holder.
                if let Err(e) = g.release().await {
                    eprintln!("release failed: {e}");
                }
            }
        }));
    }
    let progress = |seen: &Seen| seen.cycles.load(Ordering::Relaxed);
    let wait_progress = |from: usize, what: &str| {
        let seen = seen.clone();
        let what = what.to_owned();
        async move {
            let deadline = Instant::now() + PATIENCE;
            while progress(&seen) < from + 20 {
                assert!(Instant::now() < deadline, "no progress {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_progress(0, "at the start").await;
    // A follower goes and comes back.
    let leader = cluster.leader().expect("a leader");
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    wait_progress(progress(&seen), "with a follower down").await;
    cluster.restart(follower).unwrap();
    cluster.wait_healthy().unwrap();
    // Then the leader.
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    wait_progress(progress(&seen), "after the leader was killed").await;
    cluster.restart(leader).unwrap();
    cluster.wait_healthy().unwrap();
    wait_progress(progress(&seen), "with every member back").await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await
            .expect("a contender panicked: two holders or a fence going back");
    }
    assert!(progress(&seen) > 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_cannot_be_kept_is_told_lost() {
    let cluster = EtcdCluster::with_members(3);
    let locks = Locks::connect(&cluster.url()).await.unwrap();
    let name = key("lost");
    let g = locks
        .lock(&name)
        .with_ttl(Some(Duration::from_secs(2)))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    let fence = g.fence().unwrap();
    // Two of three members stop: no quorum, so no extend can succeed.
    let (a, b) = (0, 1);
    cluster.pause(a);
    cluster.pause(b);
    let lost = tokio::time::timeout(PATIENCE, g.lost()).await;
    cluster.resume(a);
    cluster.resume(b);
    assert!(matches!(lost, Ok(Error::Lost { .. })), "{lost:?}");
    cluster.wait_healthy().unwrap();
    // The cluster back, the lock is taken again (after the old lease ends) with a higher fence.
    let again = Locks::connect(&cluster.url())
        .await
        .unwrap()
        .lock(&name)
        .with_retry(Retry::default().timeout(PATIENCE))
        .acquire()
        .await
        .unwrap();
    assert!(again.fence().unwrap() > fence);
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_cluster() {
    let mut cluster = EtcdCluster::start();
    cluster.enable_auth("Pw-7q-etcd");
    let locks = Locks::connect(&cluster.url()).await.unwrap();
    let g = locks.lock(&key("auth")).acquire().await.unwrap();
    assert!(
        !locks.describe().contains("Pw-7q-etcd"),
        "{}",
        locks.describe()
    );
    g.release().await.unwrap();
}

/// `etcds://` with `?ca_file=`: a member that serves clients over TLS only, with a certificate
/// from a private CA. With the CA the store works (fenced locks, hand-off by watch); without
/// it the certificate is refused and the error says so, naming the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let cluster = EtcdCluster::tls();
    let url = cluster.url();
    assert!(
        url.starts_with("etcds://") && url.contains("ca_file="),
        "{url}"
    );
    let locks = Locks::connect(&url).await.unwrap();
    let name = key("tls");
    let first = locks.lock(&name).acquire().await.unwrap();
    let f1 = first.fence().expect("etcd fences");
    let waiter = {
        let locks = locks.clone();
        let name = name.clone();
        tokio::spawn(async move {
            locks
                .lock(&name)
                .with_retry(Retry::default().timeout(PATIENCE))
                .acquire()
                .await
        })
    };
    first.release().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert!(second.fence().unwrap() > f1);
    second.release().await.unwrap();

    // The system's roots do not know the test's CA: the error says what to do.
    let without_ca = url.split('?').next().unwrap().to_owned() + "?connect_timeout=3s";
    let e = match Locks::connect(&without_ca).await {
        Ok(locks) => locks.lock(&name).try_acquire().await.unwrap_err(),
        Err(e) => e,
    };
    let message = e.to_string();
    assert!(
        message.contains("127.0.0.1")
            && !matches!(e, Error::AlreadyLocked { .. })
            && message.contains("ca_file"),
        "{message}"
    );
}
