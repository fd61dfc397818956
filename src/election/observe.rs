//! [`Observer`]: the changes of an election, for candidates and bystanders alike.

use std::time::Duration;

use futures_util::Stream;

use super::{Election, Leader};
use crate::error::Result;
use crate::store::Subscription;

/// The first look after a release notification that found no leader comes this soon, then
/// twice as late each time up to the poll interval: a successor is usually elected within
/// a round trip or two, and no notification tells of an election.
const SETTLE: Duration = Duration::from_millis(5);

/// A change of an election, as [`Observer::next`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaderChange {
    /// A term not reported before: a new leader, or the same candidate elected again. Also
    /// the first report when someone leads as the observer starts.
    Elected(Leader),
    /// The leader of the term last reported published a new value
    /// ([`Leadership::proclaim`](super::Leadership::proclaim)).
    Proclaimed(Leader),
    /// No one leads: the leader resigned or its lease ran out, and no successor was elected
    /// when the observer looked. Also the first report when no one leads as it starts.
    Vacant,
}

impl LeaderChange {
    /// The leader after the change; `None` for [`Vacant`](LeaderChange::Vacant).
    pub fn leader(&self) -> Option<&Leader> {
        match self {
            LeaderChange::Elected(l) | LeaderChange::Proclaimed(l) => Some(l),
            LeaderChange::Vacant => None,
        }
    }
}

/// The changes of one election, from [`Election::observe`]: the state when it starts, then
/// every change it sees, in order — terms increasing, each [`Elected`](LeaderChange::Elected)
/// once. It looks at the store when the store notifies a release, when the leader's lease
/// would run out, and at least every poll interval ([`Election::with_poll_interval`]); see
/// [the module docs](crate::election) for what it cannot see.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// use cadenas::LeaderChange;
/// let locks = cadenas::Locks::memory();
/// let election = locks.election("scheduler", "host-a");
/// let mut changes = election.observe();
/// assert_eq!(changes.next().await?, LeaderChange::Vacant);
/// let leadership = election.campaign().await?;
/// match changes.next().await? {
///     LeaderChange::Elected(leader) => assert_eq!(leader.term, Some(leadership.term())),
///     other => panic!("{other:?}"),
/// }
/// leadership.resign().await?;
/// assert_eq!(changes.next().await?, LeaderChange::Vacant);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Observer {
    election: Election,
    subscription: Option<Subscription>,
    subscribed: bool,
    /// The state last reported: `None` before the first report, `Some(None)` vacant.
    reported: Option<Option<Leader>>,
    /// The highest term reported.
    highest: Option<u64>,
    /// The next quick look while a successor is likely being elected.
    settle: Option<Duration>,
    /// Whether the last call failed with a store error: the next one waits a poll interval
    /// first, so a loop over a failing store does not spin.
    failed: bool,
}

impl Observer {
    pub(super) fn new(election: Election) -> Observer {
        Observer {
            election,
            subscription: None,
            subscribed: false,
            reported: None,
            highest: None,
            settle: None,
            failed: false,
        }
    }

    /// The next change: the state at the start on the first call, then each change seen.
    ///
    /// Fails with [`Error::InvalidInput`](crate::Error::InvalidInput) or
    /// [`Error::Unsupported`](crate::Error::Unsupported) (SQL session mode) at every call, and with
    /// [`Error::Store`](crate::Error::Store) when the store fails; the call after a store
    /// error waits a poll interval before it looks again, and reports whatever changed
    /// meanwhile.
    ///
    /// # Cancel safety
    /// Cancel safe: a change is recorded as reported only when it is returned, so a call
    /// dropped half-way loses nothing; the next call looks again.
    pub async fn next(&mut self) -> Result<LeaderChange> {
        self.election.check()?;
        if self.failed {
            tokio::time::sleep(self.election.poll).await;
        }
        let change = self.look().await;
        self.failed = change.is_err();
        change
    }

    async fn look(&mut self) -> Result<LeaderChange> {
        if !self.subscribed {
            let lock = self.election.lock();
            if lock.store().capabilities().notify {
                self.subscription = lock
                    .store()
                    .subscribe(&lock.stored)
                    .await
                    .map_err(|e| lock.store_error("subscribe", e))?;
                // Woken by every release, without taking a campaigning candidate's turn.
                if let Some(sub) = self.subscription.as_mut() {
                    sub.observe();
                }
            }
            self.subscribed = true;
        }
        loop {
            let now = self.election.lock().inspect().await?.map(Leader::from);
            if now.is_some() {
                self.settle = None;
            }
            let pause = self.pause(now.as_ref());
            if let Some(change) = self.change_to(now) {
                return Ok(change);
            }
            self.wait(pause).await;
        }
    }

    /// How long to wait before looking again, after a look that found `now`.
    fn pause(&mut self, now: Option<&Leader>) -> Duration {
        let mut pause = self.election.poll;
        match now {
            // Look again as its lease runs out: an expiry sends no notification.
            Some(l) => {
                if let Some(left) = l.remaining {
                    pause = pause.min(left + Duration::from_millis(1));
                }
            }
            None => {
                if let Some(s) = self.settle {
                    pause = pause.min(s);
                    self.settle = Some(s * 2).filter(|n| *n < self.election.poll);
                }
            }
        }
        pause
    }

    /// What `now` changes after the state last reported, if anything; records it.
    fn change_to(&mut self, now: Option<Leader>) -> Option<LeaderChange> {
        let Some(leader) = now else {
            if self.reported == Some(None) {
                return None;
            }
            self.reported = Some(None);
            return Some(LeaderChange::Vacant);
        };
        if let Some(Some(last)) = &self.reported {
            if last.term == leader.term && last.candidate == leader.candidate {
                let proclaimed = last.value != leader.value;
                self.reported = Some(Some(leader.clone()));
                return proclaimed.then_some(LeaderChange::Proclaimed(leader));
            }
        }
        // A term reported before (a stale read, or the last leader seen again after a look
        // that found no one) is not reported twice, nor one lower than the highest.
        if let (Some(term), Some(highest)) = (leader.term, self.highest) {
            if term <= highest {
                return None;
            }
        }
        if leader.term.is_some() {
            self.highest = leader.term;
        }
        self.reported = Some(Some(leader.clone()));
        Some(LeaderChange::Elected(leader))
    }

    /// Waits for a release notification or `pause`, whichever comes first.
    async fn wait(&mut self, pause: Duration) {
        let Some(sub) = self.subscription.as_mut() else {
            tokio::time::sleep(pause).await;
            return;
        };
        if tokio::time::timeout(pause, sub.released()).await.is_err() {
            return;
        }
        self.settle = Some(SETTLE);
    }

    /// The observer as a [`Stream`] of [`next`](Observer::next)'s answers, for stream
    /// combinators. It never ends; after a store error the next item comes a poll interval
    /// later.
    pub fn into_stream(self) -> impl Stream<Item = Result<LeaderChange>> + Send {
        futures_util::stream::unfold(self, |mut observer| async move {
            let change = observer.next().await;
            Some((change, observer))
        })
    }
}
