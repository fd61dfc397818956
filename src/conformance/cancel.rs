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
    let mut pause = Duration::from_millis(20);
    loop {
        // The cancelled requests run on to their end after their callers left, and a slow
        // server answers them first: a check that times out behind them says retrying may
        // help, and a user would retry, so the check does until its deadline.
        let why = match held(&locks, &prefix, &keys).await {
            Ok(held) if held.is_empty() => return,
            Ok(held) => format!(
                "{} keys left held by {cancelled} cancelled acquires (of {}), e.g. {:?}",
                held.len(),
                keys.len(),
                &held[..held.len().min(5)]
            ),
            Err(e) if e.is_retryable() => format!("the check still fails: {e}"),
            Err(e) => panic!("{}: checking what is held: {e}", locks.describe()),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {why} after {:?} (ttl {ttl:?})",
            locks.describe(),
            suite.patience,
        );
        // A list is a scan on some stores: asking less often leaves a busy server the time
        // to run the clean-ups.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
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
async fn held(locks: &Locks, prefix: &str, keys: &[String]) -> Result<Vec<String>, crate::Error> {
    if locks.store().capabilities().list {
        let listed = locks.list(prefix).await?;
        return Ok(listed.into_iter().map(|info| info.key).collect());
    }
    let mut held = Vec::new();
    for key in keys {
        if locks.lock(key).is_locked().await? {
            held.push(key.clone());
        }
    }
    Ok(held)
}

/// Ready after `turns` trips through the scheduler.
async fn turns_later(turns: usize) {
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
}
