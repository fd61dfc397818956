//! Cancelled acquires under load: thousands of them, each dropped at a random point, and not
//! one lock left behind.

use std::time::Duration;

use super::Suite;
use crate::Locks;

/// [`Suite::cancellations`] acquires (default 2,000) of fresh keys, one after the other, each
/// with no ttl (five minutes on a store without `ttl_none`, so that a leftover shows as
/// one), each dropped at a random point: by a `tokio::time::timeout` of a random 0–3 ms, by a
/// `select!` whose other branch is ready after a random number of scheduler turns, or by
/// aborting the task that runs it after a random 0–3 ms. Those that come back with a guard
/// release it. Afterwards, once the clean-ups of the cancelled requests have run, no key is
/// held.
pub async fn cancelled_acquires_leave_nothing_held(suite: &Suite) {
    let locks = suite.client().await;
    let ttl = if locks.store().capabilities().ttl_none {
        None
    } else {
        Some(Duration::from_secs(300))
    };
    let prefix = suite.key("cancelled-");
    let keys: Vec<String> = (0..suite.cancellations)
        .map(|i| format!("{prefix}{i:05}"))
        .collect();
    let mut cancelled = 0;
    for key in &keys {
        cancelled += usize::from(!cancel_one(&locks, key, ttl).await);
    }
    let deadline = tokio::time::Instant::now() + suite.patience;
    loop {
        let held = held(&locks, &prefix, &keys).await;
        if held.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {} keys left held by {cancelled} cancelled acquires (of {}) after {:?} (ttl {ttl:?}), e.g. {:?}",
            locks.describe(),
            held.len(),
            keys.len(),
            suite.patience,
            &held[..held.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One acquire of `key`, dropped at a random point; `true` when it came back with a guard
/// (released at once).
async fn cancel_one(locks: &Locks, key: &str, ttl: Option<Duration>) -> bool {
    let lock = locks.lock(key).with_ttl(ttl);
    let within = Duration::from_micros(rand::random_range(0..=3_000));
    let got = match rand::random_range(0..3) {
        0 => tokio::time::timeout(within, lock.acquire()).await.ok(),
        1 => {
            let turns = rand::random_range(0..=20);
            tokio::select! {
                got = lock.acquire() => Some(got),
                () = turns_later(turns) => None,
            }
        }
        _ => {
            // Aborted from outside: the task may be dropped with its answer waiting unseen.
            let task = tokio::spawn(async move { lock.acquire().await });
            tokio::time::sleep(within).await;
            task.abort();
            task.await.ok()
        }
    };
    let Some(got) = got else {
        return false;
    };
    let guard = got.unwrap_or_else(|e| panic!("{}: acquire {key}: {e}", locks.describe()));
    guard.release().await.unwrap();
    true
}

/// The keys among `keys` (all under `prefix`) that are held.
async fn held(locks: &Locks, prefix: &str, keys: &[String]) -> Vec<String> {
    let describe = locks.describe();
    if locks.store().capabilities().list {
        // A slow emulator's scan can time out: the error says retrying may help, and a user
        // would retry, so the check does too (three tries).
        let mut tries = 1;
        let listed = loop {
            match locks.list(prefix).await {
                Err(e) if e.is_retryable() && tries < 3 => tries += 1,
                listed => break listed,
            }
        };
        let listed = listed.unwrap_or_else(|e| panic!("{describe}: list: {e}"));
        return listed.into_iter().map(|info| info.key).collect();
    }
    let mut held = Vec::new();
    for key in keys {
        let locked = locks.lock(key).is_locked().await;
        if locked.unwrap_or_else(|e| panic!("{describe}: inspect: {e}")) {
            held.push(key.clone());
        }
    }
    held
}

/// Ready after `turns` trips through the scheduler.
async fn turns_later(turns: usize) {
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
}
