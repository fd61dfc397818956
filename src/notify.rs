//! In-process release notification: the building block stores use for hand-off without
//! polling. A store calls [`ReleaseNotifier::notify`] when a key is released (by this
//! process, or when its server tells it so) and hands out [`ReleaseNotifier::subscribe`].
//!
//! One waiter per key is woken per release (the others need not try: only one can win), and a
//! release that happens while nobody waits yet — between a failed try and the wait — is kept
//! for the next wait, which returns at once. A waiter woken for nothing (its try cancelled
//! or failed with an error) passes the wake-up on, so no waiter sleeps through a free lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{ReleaseWait, Subscription};

/// Per-key release notification for waiters in this process.
#[derive(Debug, Default)]
pub struct ReleaseNotifier {
    /// Number of live subscriptions; lets `notify` skip the map when nobody waits.
    subscribers: AtomicUsize,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    notify: Arc<Notify>,
    subscribers: usize,
}

impl ReleaseNotifier {
    /// A notifier with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Wakes one subscriber of `key` (or the next one to wait).
    pub fn notify(&self, key: &str) {
        if self.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            slot.notify.notify_one();
        }
    }

    /// Wakes every subscriber of every key (after a reconnect, when releases may have been
    /// missed).
    pub fn notify_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            slot.notify.notify_waiters();
            // And the next one to wait, if it is between two tries right now.
            slot.notify.notify_one();
        }
    }

    /// Whether anyone in this process waits for `key`.
    pub fn has_subscribers(&self, key: &str) -> bool {
        self.subscribers.load(Ordering::Acquire) > 0
            && self
                .slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key)
    }

    /// Subscribes to releases of `key`, from now on.
    pub fn subscribe(self: &Arc<Self>, key: &str) -> Subscription {
        let notify = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(key.to_owned()).or_insert_with(|| Slot {
                notify: Arc::new(Notify::new()),
                subscribers: 0,
            });
            slot.subscribers += 1;
            self.subscribers.fetch_add(1, Ordering::AcqRel);
            slot.notify.clone()
        };
        Subscription::new(Waiter {
            notify,
            _slot: SlotGuard {
                notifier: self.clone(),
                key: key.to_owned(),
            },
        })
    }
}

struct Waiter {
    notify: Arc<Notify>,
    _slot: SlotGuard,
}

#[async_trait::async_trait]
impl ReleaseWait for Waiter {
    async fn released(&mut self) {
        // Cancel safe: a `Notified` dropped after it was chosen hands the wake-up on.
        self.notify.notified().await;
    }

    fn pass_on(&mut self) {
        self.notify.notify_one();
    }
}

/// Unregisters a subscription when the last clone of it is dropped.
#[derive(Debug)]
struct SlotGuard {
    notifier: Arc<ReleaseNotifier>,
    key: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self
            .notifier
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.subscribers -= 1;
            if slot.subscribers == 0 {
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
