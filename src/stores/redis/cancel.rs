//! The clean-up of a cancelled acquire: the Redis store's acquire is cancel safe by itself.

use super::{keys, scripts, RedisStore};

/// An acquire request on its way: if its future is dropped before the answer, whatever the
/// request took is given back in the background (see [`scripts::RELEASE_ATTEMPT`]).
pub(super) struct InFlight<'a> {
    pub store: &'a RedisStore,
    pub key: &'a str,
    pub owner: &'a str,
    pub attempt: &'a str,
    pub done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut conn = self.store.conn();
        let notifier = self.store.notifier.clone();
        let describe = self.store.describe.clone();
        let (key, owner, attempt) = (
            self.key.to_owned(),
            self.owner.to_owned(),
            self.attempt.to_owned(),
        );
        runtime.spawn(async move {
            let released = scripts::RELEASE_ATTEMPT
                .key(&key)
                .key(keys::state_key(&key))
                .arg(&owner)
                .arg(&attempt)
                .arg(keys::release_channel(&key))
                .arg(&key)
                .invoke_async::<i64>(&mut conn)
                .await;
            match released {
                Ok(1) => notifier.notify(&key),
                Ok(_) => {}
                Err(e) => tracing::warn!(key = %key, store = %describe, error = %e,
                    "could not release after a cancelled acquire; the lock expires with its ttl"),
            }
        });
    }
}
