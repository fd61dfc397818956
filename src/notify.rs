//! In-process release notification: the building block stores use for hand-off without
//! polling. A store calls [`ReleaseNotifier::notify`] when a key is released (by this
//! process, or when its server tells it so) and hands out [`ReleaseNotifier::subscribe`].
//!
//! Subscriptions count versions, so a release that happens between a failed try and the
//! wait is never missed: the wait returns at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

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
    tx: watch::Sender<u64>,
    subscribers: usize,
}

impl ReleaseNotifier {
    /// A notifier with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Wakes every subscriber of `key`.
    pub fn notify(&self, key: &str) {
        if self.subscribers.load(Ordering::Acquire) == 0 {
            return;
        }
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            slot.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wakes every subscriber of every key (after a reconnect, when releases may have been
    /// missed).
    pub fn notify_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            slot.tx.send_modify(|v| *v = v.wrapping_add(1));
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
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(key.to_owned()).or_insert_with(|| Slot {
                tx: watch::channel(0).0,
                subscribers: 0,
            });
            slot.subscribers += 1;
            self.subscribers.fetch_add(1, Ordering::AcqRel);
            slot.tx.subscribe()
        };
        Subscription::new(Waiter {
            rx,
            _slot: SlotGuard {
                notifier: self.clone(),
                key: key.to_owned(),
            },
        })
    }
}

struct Waiter {
    rx: watch::Receiver<u64>,
    _slot: SlotGuard,
}

#[async_trait::async_trait]
impl ReleaseWait for Waiter {
    async fn released(&mut self) {
        // An error means the sender is gone (the store closed): wake, and let the caller
        // find out on its next try.
        let _ = self.rx.changed().await;
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
