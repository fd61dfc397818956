//! Leader election over a lock: one leader per election name at a time, each leadership with
//! a **term** that a protected resource checks.
//!
//! # The words
//!
//! cadenas uses etcd's vocabulary (its `concurrency.Election`), and nothing else:
//!
//! | cadenas | what it is | etcd | Kubernetes (`client-go` `leaderelection`, `Lease`) |
//! |---|---|---|---|
//! | [`Locks::election`]`(name, candidate)` | an election, as seen by one candidate | `NewElection(session, prefix)` | a `LeaderElectionConfig` over a `Lease` named `name` |
//! | candidate | who runs: its identity, shown to everyone | the election key's value owner | `holderIdentity` |
//! | [`Election::campaign`] | wait until this candidate leads | `Campaign` | `Run` until `OnStartedLeading` |
//! | [`Leadership`] | one term of leading | a won `Campaign` | the context `OnStartedLeading` gets |
//! | term ([`Leadership::term`]) | the fence of the leadership's lock, strictly increasing | `Rev()` (the key's create revision) | none: `leaseTransitions` counts changes but is no fence |
//! | [`Leadership::proclaim`] | publish a value (an address) without a new term | `Proclaim` | (annotations, by hand) |
//! | [`Leadership::resign`] | step down | `Resign` | `ReleaseOnCancel` |
//! | [`Leadership::lost`] | the term ended without a resign | session `Done()` | `OnStoppedLeading` |
//! | [`Election::leader`] | who leads now: candidate, term, value, lease left | `Leader` | `GetLeader()` and the `Lease` record |
//! | [`Election::observe`] | a stream of changes, for anyone | `Observe` | `OnNewLeader` |
//! | lease ([`Election::with_ttl`]) | how long a silent leader keeps leading | the session's lease ttl | `leaseDurationSeconds` |
//! | poll interval ([`Election::with_poll_interval`]) | the longest a candidate or observer goes without looking | — | `RetryPeriod` |
//!
//! The leader renews its lease every third of it (the [`Guard`] watchdog;
//! Kubernetes' `RenewDeadline` is the watchdog's margin: a leader that cannot renew gives up
//! a tenth of the lease, at most one second, before the lease ends).
//!
//! # An election is a lock
//!
//! Election `name` is the lock `name` (in the factory's namespace): the leader is its holder,
//! the candidate identity is the holder's owner id, the proclaimed value is the lock's
//! metadata and the term is the holding's fence. So `cadenas status NAME` shows the leader,
//! and `cadenas exec NAME -- CMD` is a candidate too: it runs CMD while it leads, with the
//! term in `CADENAS_FENCE` (a singleton supervisor, see the README).
//!
//! A candidate identity must be unique among the candidates of one election (a host name and
//! a process id, a pod name): two candidates with one identity are one holder to the store.
//! It is shown to every observer, and whoever knows it can resign for it, as with any owner
//! id; give each candidate its own.
//!
//! # What it guarantees, and what it cannot
//!
//! The store decides who leads: one holder of the lock at a time, by the store's clock. Each
//! term is greater than every term before it on that store, across resignations, expiries,
//! crashes and client restarts. But **a leader can be wrong about still leading**: a process
//! paused longer than its lease (a stop signal, a long garbage collection, a swapped-out VM),
//! or cut off from the store by a partition, keeps running the code it was running while the
//! store elects a successor. Its [`lost`](Leadership::lost) signal fires as soon as its own
//! clock says the lease may be over (a tenth of the lease before, at most one second), and
//! [`LostSignal::is_lost`](crate::LostSignal::is_lost) is true the moment a paused process
//! resumes; yet a write it sent just before the pause can still arrive after the successor's
//! first write. Only the term stops it: **pass the term with every write, and have the
//! resource refuse a term lower than the highest it has seen** (a column checked in the
//! write's `WHERE`, a compare-and-set, a storage API's generation number). This is the part
//! Kubernetes' own package says it does not give ("does not guarantee that only one client is
//! acting as a leader (a.k.a. fencing)").
//!
//! Per store:
//!
//! | store | who decides expiry | what can elect two leaders at once | terms |
//! |---|---|---|---|
//! | memory | this process | nothing (one process) | increasing |
//! | SQLite | the host's clock (SQLite's `now`) | nothing on one host; a paused leader until its `lost` fires | increasing, across restarts |
//! | Redis, Redis Cluster | the Redis server's clock | a restart without persistence, or a failover to a replica that missed the last writes, forgets the leader | increasing after a full loss; after a failover a lagging counter can repeat a term (see the Redis store's docs) |
//! | PostgreSQL | the server's `now()` | a failover to a standby that missed the last commits; `unlogged=true` or `synchronous_commit=off` after a server crash | from a sequence, increasing |
//! | MySQL / MariaDB | the server's `UTC_TIMESTAMP` | a failover to a replica that missed the last commits | from a counter table, increasing |
//! | Redlock | each node's clock; a quorum holds the lease | a node that restarted empty before every lease it knew expired, or a leader paused past its validity until its `lost` fires | increasing as long as the nodes' clocks agree to within a lease's validity (see the Redlock store's "Fencing") |
//!
//! Elections need [`Capabilities::fencing`](crate::Capabilities::fencing), and
//! [`Capabilities::shared_records`](crate::Capabilities::shared_records): in the SQL stores'
//! session mode other clients see only which connection holds a lock, so they are refused
//! the same way (use the default lease mode).
//!
//! # Observing
//!
//! [`Election::observe`] reports the leader at the start, then each change: a new term
//! ([`LeaderChange::Elected`]), a proclaimed value ([`LeaderChange::Proclaimed`]), or no
//! leader ([`LeaderChange::Vacant`]). Terms are reported in increasing order, each once. It
//! looks at the store when the store notifies a release (memory, SQLite within one process,
//! Redis, PostgreSQL), when the leader's lease would run out, and at least every poll
//! interval; a value proclaimed by another process is seen within one poll interval. A term
//! that begins and ends between two looks (shorter than one round trip after a notification,
//! or than the poll interval without one) is not seen by anyone looking, so it is not
//! reported; the state the election settles in always is.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
//! let locks = cadenas::Locks::memory();
//! let election = locks.election("scheduler", "host-a").with_value("10.0.0.7:8080");
//! let leadership = election.campaign().await?;
//! let leader = election.leader().await?.expect("someone leads");
//! assert_eq!(leader.candidate, "host-a");
//! assert_eq!(leader.term, Some(leadership.term()));
//! assert_eq!(leader.value.as_deref(), Some("10.0.0.7:8080"));
//! leadership.resign().await?;
//! assert!(election.leader().await?.is_none());
//! # Ok(()) }
//! ```

mod observe;

pub use observe::{LeaderChange, Observer};

use std::time::Duration;

use crate::error::{Error, Result};
use crate::guard::{Guard, LostSignal};
use crate::key;
use crate::lock::Lock;
use crate::locks::{Locks, DEFAULT_TTL};
use crate::retry::Retry;
use crate::store::LockInfo;

/// The default poll interval of candidates and observers: the longest they go without
/// looking at the store when it sends no notification.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One election as one candidate takes part in it (see the [module docs](crate::election)).
/// Made by [`Locks::election`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Election {
    lock: Lock,
    poll: Duration,
    /// A bad name, candidate, value, lease or interval (what, message), reported by every
    /// operation.
    invalid: Option<(&'static str, String)>,
}

impl Locks {
    /// Election `name` as `candidate` sees it: [`campaign`](Election::campaign) to lead,
    /// [`leader`](Election::leader) and [`observe`](Election::observe) to follow it.
    ///
    /// The election is the lock `name` (see [the module docs](crate::election)); its lease is
    /// this factory's ttl (30 s if the factory has none: a leader needs a lease that ends when
    /// it dies). A bad name (empty, over 255 bytes with the namespace, NUL) or candidate
    /// (empty, over 255 bytes, NUL) is reported by the first operation as
    /// [`Error::InvalidInput`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
    /// let locks = cadenas::Locks::memory();
    /// let leadership = locks.election("compactor", "pod-1").campaign().await?;
    /// assert!(leadership.term() > 0);
    /// leadership.resign().await?;
    /// # Ok(()) }
    /// ```
    pub fn election(&self, name: &str, candidate: &str) -> Election {
        let invalid = check_name(name, self.namespace())
            .and_then(|()| check_candidate(candidate))
            .err()
            .map(split);
        let mut lock = self
            .lock(name)
            .with_owner(candidate)
            .with_ttl(Some(self.inner.ttl.unwrap_or(DEFAULT_TTL)))
            .with_auto_extend(true);
        // Observers read the term from the store: every term's fence must be there to read.
        lock.recorded = true;
        Election {
            lock,
            poll: DEFAULT_POLL_INTERVAL,
            invalid,
        }
        .with_poll_interval(DEFAULT_POLL_INTERVAL)
    }
}

impl Election {
    /// The lease of a leadership: how long a leader that stopped renewing (dead, paused,
    /// partitioned) keeps leading before a successor can be elected (Kubernetes'
    /// `leaseDurationSeconds`). The leader renews it every third of it. Between 1 ms and one
    /// year; otherwise the operations fail with [`Error::InvalidInput`].
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        if let Err(e) = check_duration("election lease", self.name(), ttl) {
            self.invalid.get_or_insert(split(e));
        }
        self.lock = self.lock.with_ttl(Some(ttl));
        self
    }

    /// The value published when this candidate wins, in the same step (an address, a
    /// version): observers never see this leader without it. At most 64 KiB of UTF-8.
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        let value = value.into();
        if let Err(e) = check_value(&value) {
            self.invalid.get_or_insert(split(e));
        }
        self.lock = self.lock.with_metadata(value);
        self
    }

    /// The longest a campaigning candidate or an observer goes without looking at the store
    /// when no notification comes (default [`DEFAULT_POLL_INTERVAL`], Kubernetes'
    /// `RetryPeriod`). Between 1 ms and one year.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        match check_duration("poll interval", self.name(), interval) {
            Ok(interval) => {
                self.poll = interval;
                // Up to a tenth more at random, so candidates do not look in lock step.
                let retry = Retry::default().delay(interval).jitter(interval / 10);
                self.lock = self.lock.with_retry(retry);
            }
            Err(e) => {
                self.invalid.get_or_insert(split(e));
            }
        }
        self
    }

    /// The election's name (without namespace).
    pub fn name(&self) -> &str {
        self.lock.key()
    }

    /// This candidate's identity.
    pub fn candidate(&self) -> &str {
        self.lock.owner()
    }

    /// The lease of a leadership.
    pub fn ttl(&self) -> Duration {
        self.lock.ttl().unwrap_or(DEFAULT_TTL)
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Checks the input and that the store can hold an election.
    fn check(&self) -> Result<()> {
        if let Some((what, message)) = &self.invalid {
            return Err(Error::invalid(what, message.clone()));
        }
        let store = self.lock.store();
        if !store.capabilities().fencing {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: format!(
                    "leader election ('{}'): a term must be a fence, and this store hands out none; use a store with fences (Redis, PostgreSQL, MySQL, SQLite)",
                    self.name()
                ),
            });
        }
        if !store.capabilities().shared_records {
            return Err(Error::Unsupported {
                store: store.describe().to_owned(),
                what: format!(
                    "leader election ('{}'): other clients of this store cannot read who holds a lock, its fence or its value (SQL session mode), so no one could observe the leader; use the store's default mode",
                    self.name()
                ),
            });
        }
        Ok(())
    }

    /// Waits until this candidate leads, and returns its [`Leadership`]: the term (strictly
    /// greater than every term before it in this election), with the lease renewed in the
    /// background until [`resign`](Leadership::resign) or until it is
    /// [`lost`](Leadership::lost). Waits as long as it takes: wrap it in
    /// [`tokio::time::timeout`] to bound the wait. Candidates wake when the leader resigns
    /// (on stores that notify), when its lease runs out, and at least every poll interval.
    ///
    /// A candidate that already leads (its identity holds the lock, e.g. a restarted process
    /// whose old lease is still running) waits like any other until that lease ends: a term is
    /// never inherited.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future never leaves this candidate leading.
    pub async fn campaign(&self) -> Result<Leadership> {
        self.check()?;
        let guard = self.lock.acquire().await?;
        let term = guard.fence().ok_or_else(|| Error::Unsupported {
            store: self.lock.store().describe().to_owned(),
            what: format!(
                "leader election ('{}'): the store handed out no fence",
                self.name()
            ),
        })?;
        Ok(Leadership { guard, term })
    }

    /// Who leads now: candidate, term, value and the lease left; `None` when no one does.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        self.check()?;
        Ok(self.lock.inspect().await?.map(Leader::from))
    }

    /// A stream of the election's changes, for any process, candidate or not: see
    /// [`Observer`]. Needs a tokio runtime; it looks at the store only when
    /// [`Observer::next`] is awaited.
    pub fn observe(&self) -> Observer {
        Observer::new(self.clone())
    }

    pub(crate) fn lock(&self) -> &Lock {
        &self.lock
    }
}

/// One term of leading, won by [`Election::campaign`]. The lease is renewed in the
/// background while it lives.
///
/// # Ending it
/// [`resign`](Leadership::resign) steps down at once, and lets the next candidate in.
/// Dropping a `Leadership` without `resign` steps down in the background on the current
/// tokio runtime and logs a `warn` (as a dropped [`Guard`] releases); a process that dies
/// leads until its lease runs out.
#[derive(Debug)]
pub struct Leadership {
    guard: Guard,
    term: u64,
}

impl Leadership {
    /// The term: the fence of this leadership, strictly greater than every term before it in
    /// this election. Pass it with every write the leader makes, and have the resource refuse
    /// a term lower than the highest it has seen: that, not the lost signal, is what stops a
    /// paused or partitioned former leader (see [the module docs](crate::election)).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The election's name (without namespace).
    pub fn name(&self) -> &str {
        self.guard.key()
    }

    /// This leader's candidate identity.
    pub fn candidate(&self) -> &str {
        self.guard.owner()
    }

    /// The lease left by our clock, never more than the store's.
    pub fn remaining_time(&self) -> Option<Duration> {
        self.guard.remaining_time()
    }

    /// Whether the leadership is known lost (or its lease ran out by our clock).
    pub fn is_lost(&self) -> bool {
        self.guard.is_expired()
    }

    /// Resolves with [`Error::Lost`] when the leadership ends without a resign: the lease
    /// could not be renewed in time (store unreachable, process paused), ran out, or was
    /// taken away (force-released). Stop the leader's work then: a successor may already
    /// lead. Use it in `tokio::select!` next to the work.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.guard.lost().await
    }

    /// A handle that tells when the leadership is lost; cheap to clone, usable after the
    /// leadership moved (into a task that does the leader's work, say).
    pub fn lost_signal(&self) -> LostSignal {
        self.guard.lost_signal()
    }

    /// Publishes `value` (at most 64 KiB of UTF-8) as this leader's value without a new term
    /// (etcd's `Proclaim`): [`Election::leader`] shows it at once, observers within their
    /// poll interval. Fails with [`Error::Lost`] when this candidate no longer leads.
    ///
    /// # Cancel safety
    /// If dropped, the value may or may not have been published.
    pub async fn proclaim(&self, value: &str) -> Result<()> {
        check_value(value)?;
        match self.guard.set_metadata(Some(value)).await {
            Err(Error::NotOwned { .. }) => Err(self.ended("before the proclaim")),
            other => other,
        }
    }

    /// Steps down: the lock is released and the next candidate can win at once. Fails with
    /// [`Error::Lost`] when the leadership had already ended (then whatever the leader did
    /// since may overlap with a successor's work; the term check at the resource is what
    /// sorts that out).
    ///
    /// # Cancel safety
    /// If dropped, the resignation may or may not have happened; the leadership ends at the
    /// latest when its lease runs out.
    pub async fn resign(self) -> Result<()> {
        let lock = self.guard.lock().clone();
        match self.guard.release().await {
            Err(Error::NotOwned { .. }) => Err(lock.lost_error(
                "the leadership had already ended (its lease ran out or was taken away) before the resign"
                    .into(),
            )),
            other => other,
        }
    }

    /// Ends the leadership as a crashed process would: no resign, no more renewals; the lease
    /// runs out by itself. For the conformance suite.
    #[cfg(feature = "conformance")]
    pub(crate) fn abandon(self) {
        self.guard.leak();
    }

    fn ended(&self, when: &str) -> Error {
        self.guard.lock().lost_error(format!(
            "the leadership ended (its lease ran out or was taken away) {when}"
        ))
    }
}

/// Who leads an election, as [`Election::leader`] and [`Election::observe`] see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's candidate identity (Kubernetes' `holderIdentity`).
    pub candidate: String,
    /// Its term. `None` only when the lock was taken without a fence: by a process that
    /// writes the lock itself (a Verrou process sharing the table or key), not a candidate.
    pub term: Option<u64>,
    /// The value it published (with [`Election::with_value`] or
    /// [`Leadership::proclaim`]).
    pub value: Option<String>,
    /// The lease left by the store's clock when it was read; `None` = never expires (a lock
    /// taken without ttl, not by a candidate).
    pub remaining: Option<Duration>,
}

impl From<LockInfo> for Leader {
    fn from(info: LockInfo) -> Self {
        Leader {
            candidate: info.owner,
            term: info.fence,
            value: info.metadata,
            remaining: info.remaining,
        }
    }
}

fn split(e: Error) -> (&'static str, String) {
    match e {
        Error::InvalidInput { what, message } => (what, message),
        other => ("election", other.to_string()),
    }
}

/// A lease or interval of election `name`: between 1 ms and one year.
fn check_duration(what: &'static str, name: &str, d: Duration) -> Result<Duration> {
    crate::duration::check(what, d).map_err(|_| {
        Error::invalid(
            what,
            format!(
                "election '{name}': the {what} must be between 1ms and one year, not {}",
                crate::duration::format_duration(d)
            ),
        )
    })
}

fn check_name(name: &str, namespace: Option<&str>) -> Result<()> {
    key::check_key(name, namespace).map_err(|e| match e {
        Error::InvalidInput { message, .. } => Error::invalid(
            "election name",
            format!("election name: {message} (an election is the lock of its name)"),
        ),
        other => other,
    })
}

fn check_candidate(candidate: &str) -> Result<()> {
    if key::check_owner(candidate).is_err() {
        let shown: String = candidate.chars().take(40).collect();
        return Err(Error::invalid(
            "candidate",
            format!(
                "{shown:?}{} ({} bytes) is not a candidate identity: use 1 to {} bytes without NUL (a host name and process id, a pod name)",
                if shown.len() < candidate.len() { "…" } else { "" },
                candidate.len(),
                key::MAX_OWNER_BYTES
            ),
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<()> {
    key::check_metadata(value).map_err(|_| {
        Error::invalid(
            "election value",
            format!(
                "an election value of {} bytes is over the limit of {} bytes; publish a reference (an address, a URL) instead",
                value.len(),
                key::MAX_METADATA_BYTES
            ),
        )
    })
}
