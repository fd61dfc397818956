//! Leader election ([`Locks::election`](crate::Locks::election)): one leader at a time,
//! increasing terms, successors within the lease, observers that see every change in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{eventually, Suite};
use crate::{Error, LeaderChange, Leadership, Locks};

/// Candidates and observers look at least this often in these checks.
const POLL: Duration = Duration::from_millis(50);

/// Every election check, one after the other. On a store without fences or shared records
/// (SQL session mode) only the first runs: it checks that elections are refused there.
pub async fn election_all(suite: &Suite) {
    if !election_is_declared(suite).await {
        return;
    }
    one_leader_at_a_time(suite).await;
    observe_sees_every_change_in_order(suite).await;
    a_resigned_or_killed_leader_is_replaced_within_its_lease(suite).await;
}

/// A store with fences holds elections, and [`leader`](crate::Election::leader) shows the
/// candidate, term, value and lease; one without answers `Unsupported` to every election
/// operation and takes nothing. Returns whether the store holds elections.
pub async fn election_is_declared(suite: &Suite) -> bool {
    let locks = suite.client().await;
    let name = suite.key("el-declared");
    let ttl = Duration::from_secs(10);
    let election = locks
        .election(&name, "alice")
        .with_ttl(ttl)
        .with_value("10.0.0.1:80");
    let caps = locks.store().capabilities();
    if !caps.fencing || !caps.shared_records {
        let refused = |r: &crate::Result<()>| matches!(r, Err(Error::Unsupported { .. }));
        let campaign = election.campaign().await.map(|_| ());
        let leader = election.leader().await.map(|_| ());
        let observed = election.observe().next().await.map(|_| ());
        assert!(
            refused(&campaign) && refused(&leader) && refused(&observed),
            "{}: elections on a store without fences or shared records must be Unsupported: {campaign:?} {leader:?} {observed:?}",
            locks.describe()
        );
        let e = campaign.unwrap_err().to_string();
        let why = if caps.fencing {
            "other clients"
        } else {
            "fence"
        };
        assert!(e.contains(&name) && e.contains(why), "{e}");
        assert!(
            !locks.lock(&name).is_locked().await.unwrap(),
            "{}: a refused campaign took the lock",
            locks.describe()
        );
        return false;
    }
    let leadership = election.campaign().await.unwrap();
    let leader = election.leader().await.unwrap().expect("alice leads");
    assert_eq!(leader.candidate, "alice", "{}", locks.describe());
    assert_eq!(leader.term, Some(leadership.term()), "{}", locks.describe());
    assert_eq!(leader.value.as_deref(), Some("10.0.0.1:80"));
    let left = leader.remaining.expect("a leadership has a lease");
    assert!(
        left <= ttl && left > ttl / 2,
        "{}: {left:?}",
        locks.describe()
    );
    // The election is the lock of its name.
    let info = locks.lock(&name).inspect().await.unwrap().expect("held");
    assert_eq!(info.fence, Some(leadership.term()));
    leadership.resign().await.unwrap();
    assert!(election.leader().await.unwrap().is_none());
    true
}

/// Sixteen candidates over two clients campaign for one election in turn: never two leaders
/// at once, every term greater than the one before, and observers on both clients report
/// terms in increasing order. Campaigns still waiting at the end are cancelled and leave no
/// one leading.
pub async fn one_leader_at_a_time(suite: &Suite) {
    const CANDIDATES: usize = 16;
    const TERMS: usize = 32;
    let clients = [suite.client().await, suite.client().await];
    let name = suite.key("el-contention");
    let leaders = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(Mutex::new(Vec::<u64>::new()));
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let observers: Vec<_> = clients
        .iter()
        .map(|c| spawn_observer(suite, c, &name, "bystander"))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..CANDIDATES {
        let election = clients[i % 2]
            .election(&name, &format!("candidate-{i}"))
            .with_ttl(Duration::from_secs(30))
            .with_poll_interval(POLL);
        let (leaders, terms, done_tx) = (leaders.clone(), terms.clone(), done_tx.clone());
        let mut done = done.clone();
        let patience = suite.patience * 3;
        tasks.push(tokio::spawn(async move {
            loop {
                // The end first: once it is announced no term is recorded any more, so every
                // campaign cancelled then holds a term above the last one recorded.
                let leadership = tokio::select! {
                    biased;
                    _ = done.wait_for(|d| *d) => return,
                    l = tokio::time::timeout(patience, election.campaign()) => {
                        l.expect("every candidate gets its turn").expect("campaign")
                    }
                };
                let now = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(now, 1, "two leaders of one election at once");
                let count = {
                    let mut terms = terms.lock().unwrap();
                    if let Some(last) = terms.last() {
                        assert!(
                            leadership.term() > *last,
                            "term {} after term {last}",
                            leadership.term()
                        );
                    }
                    terms.push(leadership.term());
                    terms.len()
                };
                tokio::task::yield_now().await;
                leaders.fetch_sub(1, Ordering::SeqCst);
                leadership.resign().await.expect("the leader resigns");
                if count >= TERMS {
                    let _ = done_tx.send(true);
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a candidate failed");
    }
    let terms = terms.lock().unwrap().clone();
    assert!(terms.len() >= TERMS, "{}: {terms:?}", clients[0].describe());
    let election = clients[0].election(&name, "bystander");
    eventually(suite, "no one leads once every campaign ended", || {
        let election = election.clone();
        async move { election.leader().await.unwrap().is_none() }
    })
    .await;
    for observer in observers {
        let seen = observer.stop();
        let elected: Vec<u64> = seen
            .iter()
            .filter_map(|c| match c {
                LeaderChange::Elected(l) => l.term,
                _ => None,
            })
            .collect();
        assert!(
            elected.windows(2).all(|w| w[0] < w[1]),
            "{}: observed terms must increase: {elected:?}",
            clients[0].describe()
        );
        // A campaign that won as it was cancelled at the end held a term above the last
        // one recorded, and gave it back.
        let last = terms.last().copied().unwrap_or_default();
        assert!(
            elected.iter().all(|t| terms.contains(t) || *t > last),
            "{}: observed a term never elected: {elected:?} of {terms:?}",
            clients[0].describe()
        );
    }
}

/// An observer sees the vacancy it starts with, each new leader with its term and value, a
/// proclaimed value, each resignation; and after a quick run of terms, terms in increasing
/// order ending with the last one. An observer in the candidates' client sees it too.
pub async fn observe_sees_every_change_in_order(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let name = suite.key("el-observe");
    let elect = |c: &Locks, who: &str| c.election(&name, who).with_poll_interval(POLL);
    let mut far = spawn_observer(suite, &b, &name, "far");
    let mut near = spawn_observer(suite, &a, &name, "near");
    let store = b.describe().to_owned();

    far.expect("the vacancy at the start", |c| *c == LeaderChange::Vacant)
        .await;
    let alice = elect(&a, "alice")
        .with_value("a1")
        .campaign()
        .await
        .unwrap();
    let t_alice = alice.term();
    far.expect("alice elected with her value", |c| match c {
        LeaderChange::Elected(l) => {
            l.candidate == "alice" && l.term == Some(t_alice) && l.value.as_deref() == Some("a1")
        }
        _ => false,
    })
    .await;
    alice.proclaim("a2").await.unwrap();
    far.expect("alice's proclaimed value", |c| match c {
        LeaderChange::Proclaimed(l) => l.term == Some(t_alice) && l.value.as_deref() == Some("a2"),
        _ => false,
    })
    .await;
    alice.resign().await.unwrap();
    far.expect("the vacancy after alice resigned", |c| {
        *c == LeaderChange::Vacant
    })
    .await;

    // A resignation with a successor waiting: the successor's term, maybe a vacancy first.
    let bob = elect(&a, "bob").campaign().await.unwrap();
    let t_bob = bob.term();
    assert!(t_bob > t_alice, "{store}: term {t_bob} after {t_alice}");
    far.expect(
        "bob elected",
        |c| matches!(c, LeaderChange::Elected(l) if l.term == Some(t_bob)),
    )
    .await;
    let carol = elect(&b, "carol");
    let carol = tokio::spawn(async move { carol.campaign().await });
    bob.resign().await.unwrap();
    let carol = tokio::time::timeout(suite.patience, carol)
        .await
        .expect("carol is elected after bob")
        .unwrap()
        .unwrap();
    let mut change = far.next("carol elected").await;
    if change == LeaderChange::Vacant {
        change = far.next("carol elected").await;
    }
    assert!(
        matches!(&change, LeaderChange::Elected(l) if l.candidate == "carol" && l.term == Some(carol.term())),
        "{store}: expected carol elected after bob, observed {change:?}"
    );

    // A quick run of terms: whatever is seen, in order, ending with the last.
    let mut elected = vec![t_alice, t_bob, carol.term()];
    carol.resign().await.unwrap();
    let mut last: Option<Leadership> = None;
    for i in 0..5 {
        let client = if i % 2 == 0 { &a } else { &b };
        let next = elect(client, &format!("quick-{i}"));
        let next = tokio::spawn(async move { next.campaign().await });
        if let Some(previous) = last.take() {
            previous.resign().await.unwrap();
        }
        let l = tokio::time::timeout(suite.patience, next)
            .await
            .expect("the next candidate is elected")
            .unwrap()
            .unwrap();
        elected.push(l.term());
        last = Some(l);
    }
    let last = last.expect("five terms");
    for observer in [&mut far, &mut near] {
        let mut seen = Vec::new();
        loop {
            match observer.next("the last quick term").await {
                LeaderChange::Elected(l) => {
                    let term = l.term.expect("a term");
                    seen.push(term);
                    if term == last.term() {
                        break;
                    }
                }
                LeaderChange::Vacant | LeaderChange::Proclaimed(_) => {}
            }
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]) && seen.iter().all(|t| elected.contains(t)),
            "{store}: observed {seen:?} of the terms {elected:?}"
        );
    }
    last.resign().await.unwrap();
    far.expect("the vacancy at the end", |c| *c == LeaderChange::Vacant)
        .await;
    near.stop();
    far.stop();
}

/// A leader that resigns, one dropped without resigning, and one that stops renewing (a
/// crashed process) are each replaced by a waiting candidate within the lease, with a higher
/// term; a leader whose lock is taken away learns `Lost`, and its proclaim and resign fail
/// with `Lost`.
pub async fn a_resigned_or_killed_leader_is_replaced_within_its_lease(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let name = suite.key("el-replaced");
    // Long enough that a loaded machine's scheduling is small beside it.
    let lease = Duration::from_millis(1500);
    let store = a.describe().to_owned();
    let elect = |c: &Locks, who: &str| {
        c.election(&name, who)
            .with_ttl(lease)
            .with_poll_interval(POLL)
    };
    let successor = |c: &Locks, who: &str| {
        let election = elect(c, who);
        let patience = suite.patience;
        tokio::spawn(async move {
            let l = tokio::time::timeout(patience, election.campaign()).await;
            (
                l.expect("the successor is elected").unwrap(),
                Instant::now(),
            )
        })
    };
    let alice = elect(&a, "alice").campaign().await.unwrap();
    let bob = successor(&b, "bob");
    let resigned = Instant::now();
    let t_alice = alice.term();
    alice.resign().await.unwrap();
    let (bob, won) = bob.await.unwrap();
    assert!(bob.term() > t_alice, "{store}");
    within(won - resigned, lease, &store, "after a resign");

    let carol = successor(&a, "carol");
    let t_bob = bob.term();
    let dropped = Instant::now();
    drop(bob);
    let (carol, won) = carol.await.unwrap();
    assert!(carol.term() > t_bob, "{store}");
    within(
        won - dropped,
        lease,
        &store,
        "after a leader was dropped without resigning",
    );

    let dave = successor(&b, "dave");
    let t_carol = carol.term();
    let killed = Instant::now();
    carol.abandon();
    let (dave, won) = dave.await.unwrap();
    assert!(dave.term() > t_carol, "{store}");
    // The lease was renewed at most a lease ago; expiry is seen at once by a waiting
    // candidate, plus a round trip and a loaded machine's scheduling. etcd grants leases in
    // whole seconds (1.5 s becomes 2 s), so the lease counts rounded up.
    within(
        won - killed,
        Duration::from_secs(lease.as_secs_f64().ceil() as u64) + Duration::from_secs(1),
        &store,
        "after a leader stopped renewing",
    );

    // Taken away: lost, and nothing more can be done as leader.
    assert!(a.lock(&name).force_release().await.unwrap());
    let e = tokio::time::timeout(suite.patience, dave.lost())
        .await
        .expect("the lost signal fires");
    assert!(matches!(e, Error::Lost { .. }), "{store}: {e:?}");
    assert!(dave.is_lost());
    assert!(
        matches!(dave.proclaim("late").await, Err(Error::Lost { .. })),
        "{store}: a proclaim after the loss"
    );
    assert!(
        matches!(dave.resign().await, Err(Error::Lost { .. })),
        "{store}: a resign after the loss"
    );
}

fn within(took: Duration, limit: Duration, store: &str, what: &str) {
    assert!(
        took <= limit,
        "{store}: the successor was elected {took:?} {what} (lease {limit:?})"
    );
}

/// An observer running in a task of its own, its changes sent to a channel.
struct Observing {
    changes: mpsc::UnboundedReceiver<LeaderChange>,
    task: tokio::task::JoinHandle<()>,
    store: String,
    patience: Duration,
}

fn spawn_observer(suite: &Suite, locks: &Locks, name: &str, who: &str) -> Observing {
    let mut observer = locks.election(name, who).with_poll_interval(POLL).observe();
    let (tx, changes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let change = observer.next().await.expect("the observer looks");
            if tx.send(change).is_err() {
                return;
            }
        }
    });
    Observing {
        changes,
        task,
        store: locks.describe().to_owned(),
        patience: suite.patience,
    }
}

impl Observing {
    /// The next change, within the suite's patience.
    async fn next(&mut self, what: &str) -> LeaderChange {
        match tokio::time::timeout(self.patience, self.changes.recv()).await {
            Ok(Some(change)) => change,
            _ => panic!(
                "{}: the observer reported nothing within {:?}; expected {what}",
                self.store, self.patience
            ),
        }
    }

    /// The next change, which must satisfy `check`.
    async fn expect(&mut self, what: &str, check: impl Fn(&LeaderChange) -> bool) {
        let change = self.next(what).await;
        assert!(
            check(&change),
            "{}: expected {what}, observed {change:?}",
            self.store
        );
    }

    /// Stops the observer and returns what it reported.
    fn stop(mut self) -> Vec<LeaderChange> {
        self.task.abort();
        let mut seen = Vec::new();
        while let Ok(c) = self.changes.try_recv() {
            seen.push(c);
        }
        seen
    }
}
