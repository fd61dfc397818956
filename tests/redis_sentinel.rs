//! The Redis Sentinel store on a topology the test starts (a primary, two replicas, three
//! sentinels; `cadenas_test_support::redis_sentinel`): finding the primary, and the
//! failover drill — the primary is killed (SIGKILL) while locks are
//! held and contended, and the store follows the sentinels to the promoted replica (locks,
//! fences, hand-off and the expiry watcher); and TLS (`rediss+sentinel://`).
//! Run with `cargo nextest run --features redis --test redis_sentinel`.
#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cadenas::{Error, Locks, Retry};
use cadenas_test_support::redis::cli_with_password;
use cadenas_test_support::redis_sentinel::{SentinelTopology, SERVICE};
use tokio::time::Instant;

const SECTIONS_PER_PHASE: u64 = 30;

use cadenas_test_support::process::wait_until_async as wait_until;

/// (Bad input — no sentinel reachable, an unknown service, wrong passwords — is in the
/// bad-input table, `tests/bad_input/sentinel.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_writes_to_the_primary_the_sentinels_name() {
    let topology = SentinelTopology::single(Some("data-Pw-7q"), Some("sent-Pw-7q"));
    let locks = Locks::connect(&topology.url()).await.unwrap();
    assert_eq!(locks.store().kind(), "redis+sentinel");
    let describe = locks.store().describe().to_owned();
    assert!(!describe.contains("Pw-7q"), "{describe}");
    assert!(!format!("{locks:?}").contains("Pw-7q"));
    let guard = locks.lock("sentinel-key").acquire().await.unwrap();
    let owner = topology.node_cli(0, &["GET", "sentinel-key"]);
    assert!(
        owner.starts_with(guard.owner()),
        "the primary holds the lock: {owner}"
    );
    // Fences start at the server's time in microseconds (at least 10^15).
    assert!(guard.fence().unwrap() > 1_000_000_000_000_000);
    guard.release().await.unwrap();
}

/// A sentinel that has not heard of a failover names the old primary, and that node may be
/// up and call itself a primary (restarted, empty, before the sentinels make it a replica):
/// the store follows the sentinel whose configuration is newer, wherever it is in the URL.
/// Here the "stale" sentinel watches a primary of its own at config epoch 0, and the
/// "fresh" one has failed its service over to a replica (epoch 1); the URL lists the stale
/// one first, which is the one a first-answer-wins lookup would follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinel_with_the_newest_configuration_names_the_primary() {
    let stale = SentinelTopology::single(None, None);
    let fresh = SentinelTopology::one_sentinel_one_replica();
    // The sentinel takes a replica as promotable once it has its first INFO answer.
    cadenas_test_support::process::wait_until(
        "the sentinel starts a failover",
        Duration::from_secs(30),
        || {
            fresh
                .sentinel_cli(0, &["SENTINEL", "FAILOVER", SERVICE])
                .starts_with("OK")
        },
    );
    let promoted = fresh.wait_for_promotion(0, Duration::from_secs(30));
    let promoted_port = fresh.nodes[promoted].port.to_string();
    // Until the failover ends, SENTINEL MASTER still names the old primary; wait for its end
    // (the store reads the address that follows the promotion, but the check of the epoch
    // below reads this one).
    cadenas_test_support::process::wait_until("the failover ends", Duration::from_secs(30), || {
        let info = fresh.sentinel_cli(0, &["SENTINEL", "MASTER", SERVICE]);
        info.lines().any(|l| l.trim() == promoted_port)
    });
    let epoch = |t: &SentinelTopology| {
        let info = t.sentinel_cli(0, &["SENTINEL", "MASTER", SERVICE]);
        let mut lines = info.lines();
        lines.find(|l| l.trim() == "config-epoch");
        lines.next().map(|l| l.trim().to_owned())
    };
    assert_eq!(epoch(&stale).as_deref(), Some("0"));
    assert_eq!(epoch(&fresh).as_deref(), Some("1"));
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{SERVICE}",
        stale.sentinels[0].port, fresh.sentinels[0].port
    );
    let locks = Locks::connect(&url).await.unwrap();
    let guard = locks.lock("newest-config").acquire().await.unwrap();
    let on_fresh = fresh.node_cli(promoted, &["GET", "newest-config"]);
    assert!(
        on_fresh.starts_with(guard.owner()),
        "the promoted primary holds the lock: {on_fresh:?}"
    );
    assert_eq!(stale.node_cli(0, &["EXISTS", "newest-config"]).trim(), "0");
    guard.release().await.unwrap();
}

/// `rediss+sentinel://`: the sentinel and the data node speak TLS only (certificates of a CA
/// the test makes, given as `ca_file`); the store asks the sentinel for the primary over TLS
/// and locks on the primary over TLS. Without the CA the certificate is refused, with an
/// error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_speaks_tls_to_the_sentinels_and_the_primary() {
    let topology = SentinelTopology::single_tls(Some("tls-Pw-3k"));
    let url = topology.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let locks = Locks::connect(&url).await.unwrap();
    assert!(!format!("{locks:?}").contains("Pw-3k"));
    let guard = locks.lock("over-tls").acquire().await.unwrap();
    let owner = topology.node_cli(0, &["GET", "over-tls"]);
    assert!(
        owner.starts_with(guard.owner()),
        "the primary holds the lock: {owner}"
    );
    guard.release().await.unwrap();
    assert_eq!(topology.node_cli(0, &["EXISTS", "over-tls"]).trim(), "0");

    let (untrusted, _) = url.split_once("?ca_file=").expect("the URL names its CA");
    let e = Locks::connect(&format!("{untrusted}?connect_timeout=3s"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(!e.to_string().contains("Pw-3k"), "{e}");
}

/// What the protected resource sees: each section starts with the holder's fence, which
/// must be above every fence accepted before; a later holder supersedes an earlier one,
/// whose writes are refused from then on.
#[derive(Default)]
struct Resource {
    state: Mutex<ResourceState>,
}

#[derive(Default)]
struct ResourceState {
    max: u64,
    inside: Option<u64>,
    accepted: u64,
    refused: u64,
    /// Sections that began while another one was still inside: its lock had vanished.
    superseded: u64,
}

impl Resource {
    fn enter(&self, fence: u64) -> bool {
        let mut s = self.state.lock().unwrap();
        if fence <= s.max {
            s.refused += 1;
            return false;
        }
        if s.inside.is_some() {
            s.superseded += 1;
        }
        s.max = fence;
        s.inside = Some(fence);
        true
    }

    fn write(&self, fence: u64) -> bool {
        let mut s = self.state.lock().unwrap();
        let ok = s.inside == Some(fence) && s.max == fence;
        match ok {
            true => s.accepted += 1,
            false => s.refused += 1,
        }
        ok
    }

    fn leave(&self, fence: u64) {
        let mut s = self.state.lock().unwrap();
        if s.inside == Some(fence) {
            s.inside = None;
        }
    }
}

/// What the workers share.
#[derive(Default)]
struct Drill {
    resource: Resource,
    /// The highest fence any acquire has answered.
    handed: Mutex<u64>,
    sections: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
}

impl Drill {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

async fn worker(locks: Locks, drill: Arc<Drill>, n: usize) {
    let lock = locks.lock("drill").with_ttl(Some(Duration::from_secs(2)));
    let retry = Retry::default()
        .timeout(Duration::from_millis(500))
        .delay(Duration::from_millis(50));
    while !drill.stop.load(Ordering::Relaxed) {
        let before = *drill.handed.lock().unwrap();
        let taken = match n % 2 {
            0 => lock.acquire_with(&retry).await,
            _ => lock.try_acquire().await,
        };
        let guard = match taken {
            Ok(guard) => guard,
            Err(e) if e.is_contended() => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            Err(e) if e.is_retryable() => {
                drill.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => {
                drill.fail(format!("worker {n}: acquire failed for good: {e}"));
                return;
            }
        };
        let fence = guard.fence().expect("Sentinel fences");
        {
            let mut handed = drill.handed.lock().unwrap();
            if fence <= before {
                drill.fail(format!(
                    "fence {fence} is not above {before}, handed out before this acquire was sent"
                ));
            }
            *handed = (*handed).max(fence);
        }
        if drill.resource.enter(fence) {
            for _ in 0..3 {
                if !drill.resource.write(fence) {
                    break; // superseded: our lock vanished with the failover
                }
                tokio::task::yield_now().await;
            }
            drill.resource.leave(fence);
        }
        drill.sections.fetch_add(1, Ordering::Relaxed);
        // A release that fails (the lock vanished, or the store is between primaries) is
        // not an error of the drill.
        let _ = guard.release().await;
    }
}

async fn sections_reach(drill: &Drill, n: u64, limit: Duration) {
    wait_until(&format!("{n} sections"), limit, || async {
        drill.sections.load(Ordering::Relaxed) >= n
    })
    .await;
}

/// The failover drill. The replicas are cut off from the primary first (it starts asking
/// for a password they do not have), so the replica the sentinels promote lacks the last
/// locks and fence counts: those locks vanish, and the fences must still go on increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_keeps_fences_increasing_and_tells_vanished_holders() {
    let mut topology = SentinelTopology::start();
    let url = topology.url();
    let locks = Locks::builder()
        .ttl(Some(Duration::from_secs(30)))
        .connect(&url)
        .await
        .unwrap();
    let drill = Arc::new(Drill::default());
    let workers: Vec<_> = (0..4)
        .map(|n| tokio::spawn(worker(locks.clone(), drill.clone(), n)))
        .collect();
    sections_reach(&drill, SECTIONS_PER_PHASE, Duration::from_secs(20)).await;

    // A holder whose lock reaches the replicas, and a waiter for a lock only hand-off can
    // give it in time (its poll delay is longer than its timeout).
    let survivor = locks.lock("survivor").acquire().await.unwrap();
    let handed_over = locks.lock("hand-off").acquire().await.unwrap();
    let hand_off_channel = cadenas::stores::redis::keys::release_channel("hand-off");
    let replicated = topology.node_cli(0, &["WAIT", "2", "5000"]);
    assert_eq!(replicated.trim(), "2", "both replicas have the survivor");

    // The expiry watcher's first sweep subscribes to the primary's `expired` events.
    assert!(locks.reap_expired("expiring").await.unwrap().is_empty());

    // Cut the replicas off: the primary wants a password, and their links are dropped.
    topology.node_cli(0, &["CONFIG", "SET", "requirepass", "cut-off"]);
    let primary_port = topology.nodes[0].port;
    let cut = |args: &[&str]| cli_with_password(primary_port, Some("cut-off"), args);
    cut(&["CLIENT", "KILL", "TYPE", "replica"]);
    wait_until(
        "the replicas are cut off",
        Duration::from_secs(10),
        || async { cut(&["INFO", "replication"]).contains("connected_slaves:0") },
    )
    .await;
    // Acknowledged by the primary alone: these vanish with it.
    let mut doomed = Vec::new();
    for i in 0..3 {
        doomed.push(locks.lock(&format!("doomed-{i}")).acquire().await.unwrap());
    }
    let cut_at = drill.sections.load(Ordering::Relaxed);
    sections_reach(&drill, cut_at + 10, Duration::from_secs(20)).await;
    let max_before_kill = *drill.handed.lock().unwrap();

    let killed = topology.kill_primary();
    let killed_at = Instant::now();
    let promoted = tokio::task::block_in_place(|| {
        topology.wait_for_promotion(killed, Duration::from_secs(30))
    });
    let promoted_after = killed_at.elapsed();
    assert_ne!(promoted, killed);

    // New acquires work within a short time of the promotion.
    let at_promotion = drill.sections.load(Ordering::Relaxed);
    sections_reach(&drill, at_promotion + 1, Duration::from_secs(10)).await;
    let resumed_after = killed_at.elapsed();
    sections_reach(
        &drill,
        at_promotion + SECTIONS_PER_PHASE,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        *drill.handed.lock().unwrap() > max_before_kill,
        "fences went on above the last one before the failover"
    );

    // Holders whose locks vanished are told at their next extend; the survivor is not.
    for guard in &doomed {
        match guard.extend(None).await {
            Err(Error::NotOwned { .. }) => assert!(guard.lost_signal().is_lost()),
            other => panic!("a vanished holding extended: {other:?}"),
        }
    }
    survivor.extend(None).await.unwrap();
    assert!(!survivor.lost_signal().is_lost());

    // The store's one pub/sub connection (subscribed for the workers that wait) followed
    // the failover: a new waiter subscribes on the promoted primary and wakes on the
    // release, which its poll delay alone would not do in time.
    let waiter = {
        let lock = locks.lock("hand-off");
        let retry = Retry::default()
            .timeout(Duration::from_secs(10))
            .delay(Duration::from_secs(60));
        tokio::spawn(async move { lock.acquire_with(&retry).await })
    };
    wait_until("the waiter waits", Duration::from_secs(5), || async {
        topology
            .node_cli(promoted, &["PUBSUB", "NUMSUB", &hand_off_channel])
            .lines()
            .nth(1)
            .is_some_and(|n| n.trim() != "0")
    })
    .await;
    let released_at = Instant::now();
    handed_over.release().await.unwrap();
    let got = waiter
        .await
        .unwrap()
        .expect("the waiter gets the lock by hand-off");
    assert!(
        released_at.elapsed() < Duration::from_secs(5),
        "hand-off took {:?}",
        released_at.elapsed()
    );
    got.release().await.unwrap();

    // The expiry watcher followed the failover too: it turned `expired` events on at the
    // promoted primary (a replica's configuration does not have them), listens there, and
    // reports a lease that ran out after the failover.
    wait_until(
        "the expiry watcher listens to the promoted primary",
        Duration::from_secs(10),
        || async {
            topology
                .node_cli(promoted, &["PUBSUB", "NUMSUB", "__keyevent@0__:expired"])
                .lines()
                .nth(1)
                .is_some_and(|n| n.trim() != "0")
        },
    )
    .await;
    let events = topology.node_cli(promoted, &["CONFIG", "GET", "notify-keyspace-events"]);
    let flags = events.lines().nth(1).unwrap_or_default();
    assert!(
        flags.contains('x') && (flags.contains('E') || flags.contains('A')),
        "expired events on: {events}"
    );
    locks
        .lock("expiring")
        .with_ttl(Some(Duration::from_millis(200)))
        .acquire()
        .await
        .unwrap()
        .leak();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reaped = loop {
        let reaped = locks.reap_expired("expiring").await.unwrap();
        if !reaped.is_empty() {
            break reaped;
        }
        assert!(
            Instant::now() < deadline,
            "the expiry after the failover was never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].key, "expiring");
    assert!(reaped[0].fence.is_some(), "{reaped:?}");

    drill.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    survivor.release().await.unwrap();
    let failures = drill.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:#?}");
    let s = drill.resource.state.lock().unwrap();
    // Only sections under way at the failover can be superseded: one per worker at most.
    assert!(s.superseded <= 4, "{} sections superseded", s.superseded);
    assert!(
        s.accepted >= 3 * 2 * SECTIONS_PER_PHASE,
        "{} writes",
        s.accepted
    );
    eprintln!(
        "failover drill: promoted after {promoted_after:?}, acquires resumed after \
         {resumed_after:?}; {} sections, {} writes accepted, {} refused, {} superseded, {} \
         retryable errors",
        drill.sections.load(Ordering::Relaxed),
        s.accepted,
        s.refused,
        s.superseded,
        drill.errors.load(Ordering::Relaxed)
    );
}
