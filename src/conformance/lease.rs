//! The guard's view of a lease never outlives the store's.

use std::time::Duration;

use super::Suite;

/// Leases of 2.9 ms (a ttl with a sub-millisecond fraction, which a store must round up, not
/// down): as long as the guard's [`remaining_time`](crate::Guard::remaining_time), read after
/// the store answered, is more than 1 ms (the resolution of the stores' clocks), the store
/// still holds the lock. A store that truncated the ttl to 2 ms would let the guard believe in
/// a lease the store had already ended. A store that cannot grant a lease this short (Redlock
/// sets 2 ms aside for clock drift, and answers "held") is not checked.
pub async fn lease_outlives_the_guard(suite: &Suite) {
    let locks = suite.client().await;
    let ttl = Duration::from_micros(2_900);
    let resolution = Duration::from_millis(1);
    for round in 0..20 {
        // A fresh key each round: the leases are left to expire.
        let key = suite.key(&format!("sub-ms-ttl-{round}"));
        let guard = match locks.lock(&key).with_ttl(Some(ttl)).try_acquire().await {
            Ok(guard) => guard,
            Err(crate::Error::AlreadyLocked { .. }) => continue,
            Err(e) => panic!("{}: {e}", locks.describe()),
        };
        loop {
            let locked = locks.lock(&key).is_locked().await.unwrap();
            let left = guard.remaining_time().expect("a lease with a ttl");
            if left <= resolution {
                break;
            }
            assert!(
                locked,
                "{}: the store ended a lease of {ttl:?} while the guard had {left:?} left",
                locks.describe()
            );
        }
        guard.leak();
    }
}
