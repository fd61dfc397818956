//! The everyday lock: only one copy of a service runs the nightly job.
//!
//! ```text
//! cargo run --example basic
//! CADENAS_STORE=redis://127.0.0.1:6379 cargo run --example basic --features redis
//! ```
//!
//! Every copy of the service runs the same code; whoever takes the lock does the work, the
//! others find it taken and move on (or wait, with a retry policy).

use std::time::Duration;

use cadenas::{Error, Locks, Retry};

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let url = std::env::var("CADENAS_STORE").unwrap_or_else(|_| "memory:".into());
    let locks = Locks::connect(&format!("{url}?namespace=example-basic")).await?;

    // Try once: a second copy that finds the job running skips it.
    let job = locks
        .lock("nightly-report")
        .with_ttl(Some(Duration::from_secs(60)));
    let guard = job.try_acquire().await?;
    println!(
        "took {:?} (fence {:?}); the lease has {:?} left",
        guard.key(),
        guard.fence(),
        guard.remaining_time()
    );
    match locks.lock("nightly-report").try_acquire().await {
        Err(Error::AlreadyLocked { holder, .. }) => {
            println!("another copy sees it taken, held by {holder:?}: it skips the job")
        }
        other => panic!("the lock should be taken: {other:?}"),
    }
    guard.release().await?;

    // Wait for a turn, at most 5 s, trying again every 100 ms (or at once, on a store that
    // notifies releases).
    let retry = Retry::default()
        .timeout(Duration::from_secs(5))
        .delay(Duration::from_millis(100));
    let guard = locks
        .lock("nightly-report")
        .with_retry(retry)
        .acquire()
        .await?;
    println!("took it again, with a larger fence: {:?}", guard.fence());
    guard.release().await?;

    // Or all in one: acquire, run, release. If the lease ended while the closure ran, the
    // result is Err(Lost) rather than a silent success.
    let rows = locks
        .lock("nightly-report")
        .run(|_lost| async { 1_234 })
        .await?;
    println!("the report covered {rows} rows");

    locks.disconnect().await
}
