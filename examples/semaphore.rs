//! A semaphore and a read-write lock: at most three workers in the section at once, and
//! readers that share a key while a writer waits its turn.
//!
//! Run with `cargo run --example semaphore`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let locks = cadenas::Locks::memory();

    // Ten workers, three permits: never more than three inside.
    let inside = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..10 {
        let (locks, inside) = (locks.clone(), inside.clone());
        workers.push(tokio::spawn(async move {
            let permit = locks.semaphore("partner-api", 3).acquire().await?;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(now <= 3);
            println!(
                "worker {worker} in (fence {:?}, {now} inside)",
                permit.fence()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            permit.release().await
        }));
    }
    for w in workers {
        w.await.expect("a worker panicked")?;
    }

    // Two readers share the config; the writer waits for both, then has it alone.
    let r1 = locks.read("config").acquire().await?;
    let r2 = locks.read("config").acquire().await?;
    println!(
        "{} readers hold the config",
        locks.read("config").holders().await?.len()
    );
    let writer = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.write("config").acquire().await })
    };
    r1.release().await?;
    r2.release().await?;
    let w = writer.await.expect("the writer panicked")?;
    println!("the writer holds the config with fence {:?}", w.fence());
    w.release().await?;
    Ok(())
}
