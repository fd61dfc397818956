//! Fencing: a holder that was paused past its lease must not overwrite newer work.
//!
//! ```text
//! cargo run --example fencing
//! ```
//!
//! A lease can end while its holder still runs (a GC pause, a stopped VM, a slow network):
//! the store gives the lock to someone else, and for a while two processes think they hold
//! it. The fence settles it. Every acquisition gets a number strictly greater than every
//! earlier one for that key; the protected resource remembers the highest fence it has seen
//! and refuses writes that carry a lower one.

use std::time::Duration;

use cadenas::Locks;
use tokio::sync::Mutex;

/// A resource that checks fences: a file, a row with a `fence` column, an object store
/// with conditional writes. Here, a value in memory.
#[derive(Default)]
struct Storage {
    highest_fence: Mutex<u64>,
    value: Mutex<String>,
}

impl Storage {
    /// Writes `value` if `fence` is not older than any fence seen before.
    async fn write(&self, fence: u64, value: &str) -> Result<(), String> {
        let mut highest = self.highest_fence.lock().await;
        if fence < *highest {
            return Err(format!(
                "refused a write with fence {fence}: fence {highest} has written since"
            ));
        }
        *highest = fence;
        *self.value.lock().await = value.to_owned();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> cadenas::Result<()> {
    let locks = Locks::connect("memory:?namespace=example-fencing").await?;
    let storage = Storage::default();

    // A takes the lock with a short lease, then stalls past it.
    let a = locks
        .lock("invoice:42")
        .with_ttl(Some(Duration::from_millis(200)))
        .acquire()
        .await?;
    let a_fence = a.fence().expect("the memory store hands out fences");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile the lease ran out and B took the lock, with a larger fence, and wrote.
    let b = locks.lock("invoice:42").acquire().await?;
    let b_fence = b.fence().expect("the memory store hands out fences");
    assert!(b_fence > a_fence);
    storage.write(b_fence, "paid by B").await.unwrap();

    // A wakes up and tries to write: the storage refuses it. A's guard knows too.
    let refused = storage.write(a_fence, "paid by A").await.unwrap_err();
    println!("A: {refused}");
    println!("A's guard says expired: {}", a.is_expired());
    println!("stored value: {:?}", *storage.value.lock().await);

    assert!(a.release().await.is_err(), "A no longer holds the lock");
    b.release().await?;
    Ok(())
}
