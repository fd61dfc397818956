//! In-process release notification: the building block stores use for hand-off without
//! polling. A store calls [`ReleaseNotifier::notify`] when a key is released (by this
//! process, or when its server tells it so) and hands out [`ReleaseNotifier::subscribe`].
//!
//! The waiters of a key queue in the order they subscribed. A release wakes one of them, the
//! first (the others need not try: only one can win), and a woken waiter that does not get
//! the lock stays first in the queue, so within a process the lock goes round in order. A
//! release while the first waiter already has a wake-up it has not used yet (it is about to
//! try) wakes nobody more: that try comes after this release too. A release that happens
//! while the waiter is not waiting — between a failed try and the wait — is kept for its next
//! wait, which returns at once. A waiter woken for nothing (its try cancelled or failed with
//! an error, or its subscription dropped before it used the wake-up) passes the wake-up on to
//! the next in the queue, so no waiter sleeps through a free lock. A waiter's place in the
//! queue ([`Subscription::ahead`]) lets the lock layer leave the fall-back polling to the
//! first waiter. An observer's subscription ([`Subscription::observe`]) is woken by every
//! release and takes no waiter's turn: it is not counted in the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::store::{ReleaseWait, Subscription};

/// Per-key release notification for waiters in this process.
#[derive(Debug, Default)]
pub struct ReleaseNotifier {
    /// Number of live subscriptions; lets `notify` skip the map when nobody waits.
    subscribers: AtomicUsize,
    slots: Mutex<HashMap<String, Slot>>,
}

/// The waiters of one key.
#[derive(Debug, Default)]
struct Slot {
    /// The ticket the next subscription gets.
    next_ticket: u64,
    /// Waiters in ticket order: the order they subscribed.
    queue: VecDeque<Arc<Waiting>>,
}

/// One subscription's side of the queue.
#[derive(Debug)]
struct Waiting {
    ticket: u64,
    /// Holds a wake-up until the waiter takes it (one waiter per `Notify`).
    notify: Notify,
    /// A wake-up was given and not taken yet. Changed under the slots' mutex, except when
    /// the waiter takes the wake-up.
    woken: AtomicBool,
    /// An observer's: woken by every release, never a waiter's turn. Changed under the
    /// slots' mutex.
    observer: AtomicBool,
}

impl Waiting {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    fn is_observer(&self) -> bool {
        self.observer.load(Ordering::Acquire)
    }
}

impl Slot {
    /// Wakes the first waiter, unless it has an unused wake-up already, and every observer.
    fn wake_first(&self) {
        let mut first = true;
        for w in &self.queue {
            if w.is_observer() {
                w.wake();
            } else if first {
                first = false;
                if !w.is_woken() {
                    w.wake();
                }
            }
        }
    }

    /// Gives a wake-up that `from` cannot use to the first other waiter without one.
    fn pass_from(&self, from: u64) {
        if let Some(w) = self
            .queue
            .iter()
            .find(|w| w.ticket != from && !w.is_woken() && !w.is_observer())
        {
            w.wake();
        }
    }

    fn position(&self, ticket: u64) -> Result<usize, usize> {
        self.queue.binary_search_by_key(&ticket, |w| w.ticket)
    }

    /// How many waiters (not observers) came before `ticket`.
    fn waiters_before(&self, ticket: u64) -> usize {
        self.queue
            .iter()
            .take_while(|w| w.ticket < ticket)
            .filter(|w| !w.is_observer())
            .count()
    }
}

impl ReleaseNotifier {
    /// A notifier with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Every change under the mutex is a single push, removal or flag: safe after a panic.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the first waiter of `key` (or keeps the wake-up for its next wait).
    pub fn notify(&self, key: &str) {
        if self.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(slot) = self.slots().get(key) {
            slot.wake_first();
        }
    }

    /// Wakes the first waiter of every key anyone waits for (and every observer): for a
    /// server that tells of a release without saying of which key.
    pub fn notify_every_key(&self) {
        if self.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        for slot in self.slots().values() {
            slot.wake_first();
        }
    }

    /// Wakes every subscriber of every key (after a reconnect, when releases may have been
    /// missed).
    pub fn notify_all(&self) {
        for slot in self.slots().values() {
            for w in &slot.queue {
                w.wake();
            }
        }
    }

    /// Whether anyone in this process waits for `key`.
    pub fn has_subscribers(&self, key: &str) -> bool {
        self.subscribers.load(Ordering::Acquire) > 0 && self.slots().contains_key(key)
    }

    /// Subscribes to releases of `key`, from now on, at the end of its queue.
    pub fn subscribe(self: &Arc<Self>, key: &str) -> Subscription {
        let waiting = {
            let mut slots = self.slots();
            let slot = slots.entry(key.to_owned()).or_default();
            let waiting = Arc::new(Waiting {
                ticket: slot.next_ticket,
                notify: Notify::new(),
                woken: AtomicBool::new(false),
                observer: AtomicBool::new(false),
            });
            slot.next_ticket += 1;
            slot.queue.push_back(waiting.clone());
            self.subscribers.fetch_add(1, Ordering::AcqRel);
            waiting
        };
        Subscription::new(Waiter {
            waiting,
            notifier: self.clone(),
            key: key.to_owned(),
        })
    }
}

/// A subscription: its place in the key's queue, given up when dropped.
struct Waiter {
    waiting: Arc<Waiting>,
    notifier: Arc<ReleaseNotifier>,
    key: String,
}

#[async_trait::async_trait]
impl ReleaseWait for Waiter {
    async fn released(&mut self) {
        // Cancel safe: a `Notified` dropped after it was chosen keeps the wake-up in the
        // `Notify` (it has no other waiter), and `woken` stays set.
        self.waiting.notify.notified().await;
        self.waiting.woken.store(false, Ordering::Release);
    }

    fn pass_on(&mut self) {
        if self.waiting.is_observer() {
            return; // an observer's wake-up was extra: nobody's turn to hand on
        }
        if let Some(slot) = self.notifier.slots().get(&self.key) {
            slot.pass_from(self.waiting.ticket);
        }
    }

    fn ahead(&self) -> usize {
        self.notifier
            .slots()
            .get(&self.key)
            .map_or(0, |slot| slot.waiters_before(self.waiting.ticket))
    }

    fn observe(&mut self) {
        let slots = self.notifier.slots();
        self.waiting.observer.store(true, Ordering::Release);
        if let Some(slot) = slots.get(&self.key) {
            if self.waiting.is_woken() {
                // A wake-up it got as a waiter is a waiter's: the next one's now.
                slot.pass_from(self.waiting.ticket);
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut slots = self.notifier.slots();
        if let Some(slot) = slots.get_mut(&self.key) {
            if let Ok(i) = slot.position(self.waiting.ticket) {
                slot.queue.remove(i);
            }
            if self.waiting.is_woken() && !self.waiting.is_observer() {
                // A wake-up we never used: the next waiter's now.
                slot.pass_from(self.waiting.ticket);
            }
            if slot.queue.is_empty() {
                slots.remove(&self.key);
            }
        }
        self.notifier.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_release_before_the_wait_is_not_missed() {
        let n = ReleaseNotifier::new();
        let mut sub = n.subscribe("k");
        n.notify("other");
        n.notify("k");
        tokio::time::timeout(Duration::from_secs(5), sub.released())
            .await
            .expect("the earlier notification is delivered");
        // Consumed: the next wait blocks until a new release.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), sub.released())
                .await
                .is_err()
        );
        n.notify("k");
        tokio::time::timeout(Duration::from_secs(5), sub.released())
            .await
            .unwrap();
    }

    /// On one thread, so that "the other waiter is still asleep" is a fact, not a timing.
    #[tokio::test(flavor = "current_thread")]
    async fn one_waiter_wakes_per_release_and_passes_an_unused_wake_on() {
        let n = ReleaseNotifier::new();
        let (tx, mut woken) = tokio::sync::mpsc::unbounded_channel();
        for name in ["a", "b"] {
            let mut sub = n.subscribe("k");
            let tx = tx.clone();
            tokio::spawn(async move {
                sub.released().await;
                tx.send((name, sub)).unwrap();
            });
        }
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        settle().await; // both wait now
        n.notify("k");
        let (first, mut sub) = woken.recv().await.unwrap();
        settle().await;
        assert!(
            woken.try_recv().is_err(),
            "one release woke a second waiter"
        );
        // The woken waiter could not use it: the other one gets it.
        sub.pass_on();
        let (second, _) = woken.recv().await.unwrap();
        assert_ne!(first, second);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_first_waiter_is_woken_and_an_unused_wake_up_moves_on_when_it_is_dropped() {
        let n = ReleaseNotifier::new();
        let first = n.subscribe("k");
        let mut second = n.subscribe("k");
        let mut third = n.subscribe("k");
        assert_eq!((first.ahead(), second.ahead(), third.ahead()), (0, 1, 2));
        n.notify("k");
        // The first has a wake-up it has not used: a second release wakes nobody more.
        n.notify("k");
        let quick = Duration::from_millis(20);
        assert!(tokio::time::timeout(quick, second.released())
            .await
            .is_err());
        // Dropped unused: the next waiter gets it, and moves up the queue.
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second.released())
            .await
            .expect("the wake-up moved on");
        assert_eq!((second.ahead(), third.ahead()), (0, 1));
        assert!(tokio::time::timeout(quick, third.released()).await.is_err());
    }

    /// Observers (an election's) subscribed before a waiter must not take its turn: each
    /// release wakes the waiter, and every observer too.
    #[tokio::test(flavor = "current_thread")]
    async fn observers_see_every_release_and_take_no_waiters_turn() {
        let n = ReleaseNotifier::new();
        let mut observers = [n.subscribe("k"), n.subscribe("k")];
        for o in &mut observers {
            o.observe();
        }
        let mut waiter = n.subscribe("k");
        assert_eq!(waiter.ahead(), 0, "observers are not ahead of a waiter");
        let soon = Duration::from_secs(5);
        for _ in 0..3 {
            n.notify("k");
            tokio::time::timeout(soon, waiter.released())
                .await
                .expect("the release wakes the waiter behind the observers");
            for o in &mut observers {
                tokio::time::timeout(soon, o.released())
                    .await
                    .expect("and every observer");
            }
        }
        // An observer handing a wake-up on gives a waiter nothing it did not have.
        observers[0].pass_on();
        drop(observers);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiter.released())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn dropping_subscriptions_frees_the_slot() {
        let n = ReleaseNotifier::new();
        let a = n.subscribe("k");
        let b = n.subscribe("k");
        assert!(n.has_subscribers("k"));
        drop(a);
        assert!(n.has_subscribers("k"));
        drop(b);
        assert!(!n.has_subscribers("k"));
        assert_eq!(n.subscribers.load(Ordering::Acquire), 0);
    }
}
