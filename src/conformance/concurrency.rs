//! Many holders: contention, hand-off, cancellation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{eventually, Suite};
use crate::{Error, Retry};

/// `contenders` tasks (default 64) on one key, over two clients, with a counter of holders
/// that must never exceed 1.
pub async fn contention(suite: &Suite) {
    let clients = [suite.client().await, suite.client().await];
    let key = suite.key("contention");
    let inside = Arc::new(AtomicUsize::new(0));
    let sections = Arc::new(AtomicUsize::new(0));
    let rounds = 3;
    let mut tasks = Vec::new();
    for i in 0..suite.contenders {
        let locks = clients[i % 2].clone();
        let (key, inside, sections) = (key.clone(), inside.clone(), sections.clone());
        let patience = suite.patience * 3;
        tasks.push(tokio::spawn(async move {
            let retry = Retry::default()
                .timeout(patience)
                .delay(Duration::from_millis(10));
            for _ in 0..rounds {
                let g = locks
                    .lock(&key)
                    .with_ttl(Some(Duration::from_secs(30)))
                    .with_retry(retry.clone())
                    .acquire()
                    .await
                    .expect("every contender gets its turn");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(now, 1, "two holders of one lock at once");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                sections.fetch_add(1, Ordering::SeqCst);
                g.release().await.expect("the holder releases its own lock");
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    assert_eq!(sections.load(Ordering::SeqCst), suite.contenders * rounds);
}

/// On a notifying store a waiter gets the lock as soon as it is released, not after its poll
/// delay (set here to far longer than the check allows).
pub async fn hand_off(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    if !b.store().capabilities().notify {
        return;
    }
    let key = suite.key("handoff");
    for (holder, waiter) in [(&a, &b), (&a, &a)] {
        let g = holder
            .lock(&key)
            .with_ttl(Some(Duration::from_secs(60)))
            .acquire()
            .await
            .unwrap();
        let lock = waiter.lock(&key).with_retry(
            Retry::default()
                .delay(Duration::from_secs(300))
                .timeout(Duration::from_secs(300)),
        );
        let waiting = tokio::spawn(async move { lock.acquire().await });
        // Let the waiter make its first try and subscribe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        g.release().await.unwrap();
        let got = tokio::time::timeout(suite.patience, waiting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: a waiter was not woken by the release (it would have polled after 300s)",
                    a.describe()
                )
            })
            .unwrap()
            .unwrap();
        got.release().await.unwrap();
    }
}

/// Dropping `acquire` at any point leaves nothing held.
pub async fn cancelled_acquire_leaves_nothing_held(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("cancel");
    // Cancelled while waiting for a held lock.
    let g = a.lock(&key).acquire().await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), b.lock(&key).acquire()).await;
    assert!(r.is_err(), "the waiter was still waiting");
    g.release().await.unwrap();
    let g = a
        .lock(&key)
        .try_acquire()
        .await
        .expect("the cancelled waiter holds nothing");
    g.release().await.unwrap();
    // Cancelled at every point of an acquire of a free lock.
    for micros in [0u64, 1, 10, 50, 100, 200, 500, 1000, 2000, 5000] {
        let lock = b.lock(&key);
        let _ = tokio::time::timeout(Duration::from_micros(micros), lock.acquire()).await;
        eventually(suite, "a cancelled acquire's lock is released", || {
            let l = a.lock(&key);
            async move { !l.is_locked().await.unwrap() }
        })
        .await;
    }
    // A cancelled request may still be on its way to the store after the lock looked free
    // above; its clean-up follows it. The lock must become free for good.
    eventually(suite, "a cancelled acquire left the lock held", || {
        let l = a.lock(&key).with_retry(Retry::once());
        async move {
            match l.acquire().await {
                Ok(g) => {
                    g.release().await.unwrap();
                    true
                }
                Err(Error::Timeout { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}
