//! The clean-up of a cancelled acquire: the Redis store's acquire is cancel safe by itself.

use super::conn::Conn;
use super::{keys, scripts, RedisStore};
use crate::notify::ReleaseNotifier;

/// An acquire request on its way: if its future is dropped before the answer (or the answer
/// was lost on the way), whatever the request took is given back in the background
/// ([`scripts::RELEASE_ATTEMPT`]: only a key still holding this request's own value).
pub(super) struct InFlight<'a> {
    store: &'a RedisStore,
    key: &'a str,
    value: &'a str,
    done: bool,
}

impl<'a> InFlight<'a> {
    /// A request for `key` that writes `value` (owner and attempt id).
    pub fn new(store: &'a RedisStore, key: &'a str, value: &'a str) -> Self {
        InFlight {
            store,
            key,
            value,
            done: false,
        }
    }

    /// The answer is in the caller's hands: nothing to clean up.
    pub fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (conn, notifier) = (self.store.conn(), self.store.notifier.clone());
        let describe = self.store.describe.clone();
        let (key, value) = (self.key.to_owned(), self.value.to_owned());
        runtime
            .spawn(async move { release_attempt(conn, &notifier, &describe, &key, &value).await });
    }
}

impl RedisStore {
    /// Releases `key` if, and only if, it still holds `value` (what one acquire request
    /// wrote). Failures are logged: the lock then ends with its ttl.
    pub(super) async fn release_attempt(&self, key: &str, value: &str) {
        release_attempt(self.conn(), &self.notifier, &self.describe, key, value).await
    }
}

async fn release_attempt(
    mut conn: Conn,
    notifier: &ReleaseNotifier,
    describe: &str,
    key: &str,
    value: &str,
) {
    {
        let mut script = scripts::RELEASE_ATTEMPT.key(key);
        script
            .key(keys::state_key(key))
            .key(keys::group_key(key))
            .arg(value);
        if let Some(channel) = keys::release_channel_arg(key) {
            script.arg(channel);
        }
        let released = script.invoke_async::<i64>(&mut conn).await;
        match released {
            Ok(1) => notifier.notify(key),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = %key, store = %describe, error = %e,
                "could not release after a cancelled or failed acquire; the lock expires with its ttl"),
        }
    }
}
