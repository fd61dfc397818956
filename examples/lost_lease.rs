//! Reacting to a lost lease: stop the work the moment the lock is no longer ours.
//!
//! ```text
//! cargo run --example lost_lease
//! ```
//!
//! With `auto_extend`, a watchdog keeps the lease alive while the guard is held. If the lease
//! is gone anyway (an operator force-released it, the store lost it, the watchdog could not
//! reach the store before the lease ran out), `Guard::lost` resolves and the work should
//! stop: something else may now hold the lock.

use std::time::Duration;

use cadenas::{EventKind, Locks};

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let locks = Locks::connect("memory:?namespace=example-lost").await?;
    let mut events = locks.events();

    let guard = locks
        .lock("compactor")
        .with_ttl(Some(Duration::from_secs(3)))
        .with_auto_extend(true)
        .acquire()
        .await?;

    // An operator takes the lock away after a while (`cadenas release --force compactor`).
    let operator = locks.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        operator.lock("compactor").force_release().await
    });

    let mut batches = 0u32;
    let outcome = tokio::select! {
        lost = guard.lost() => Err(lost),
        () = async {
            loop {
                batches += 1; // compact one batch
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => Ok(()),
    };
    match outcome {
        Err(lost) => println!("stopped after {batches} batches: {lost}"),
        Ok(()) => unreachable!("the work loops until the lease is lost"),
    }

    // The events tell the same story, in order: acquired, extended…, lost.
    while let Ok(event) = events.try_recv() {
        println!("event: {:?} (fence {:?})", event.kind, event.fence);
        if event.kind == EventKind::Lost {
            break;
        }
    }
    // The guard is gone with the lease: releasing it says so.
    println!("release: {:?}", guard.release().await.err());
    Ok(())
}
