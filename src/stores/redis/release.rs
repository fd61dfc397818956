//! Release with the released holding's fence, and the fence of a recorded holding: the two
//! writes a Redlock node needs besides the Redis store's own (see the Redlock store's
//! "Fencing"). The plain release is the first with no fence.

use super::conn::{op_error, wrong_type};
use super::{keys, scripts, RedisStore};
use crate::store::StoreError;

impl RedisStore {
    /// Writes `fence` into the record of `owner`'s holding of `key` (a Redlock acquire's
    /// recorded holding: [`scripts::RECORD_FENCE`]); `false` when `owner` does not hold it
    /// or it has no record.
    #[cfg(feature = "redlock")]
    pub(crate) async fn record_fence(
        &self,
        key: &str,
        owner: &str,
        fence: u64,
    ) -> Result<bool, StoreError> {
        let written: i64 = scripts::RECORD_FENCE
            .key(key)
            .key(keys::state_key(key))
            .arg(owner)
            .arg(fence)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        Ok(written == 1)
    }

    /// [`Store::release`](crate::Store::release), also setting the key's fence counter to `raise_to` (if given) in
    /// the same script when the holding is released: what a Redlock node does with the fence
    /// of the holding being released ([`scripts::RELEASE_RAISING`]).
    pub(crate) async fn release_raising(
        &self,
        key: &str,
        owner: &str,
        raise_to: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut script = match raise_to {
            None => scripts::RELEASE.key(key),
            Some(_) => scripts::RELEASE_RAISING.key(key),
        };
        script.key(keys::state_key(key));
        if raise_to.is_some() {
            script.key(keys::fence_key(key));
        }
        script.arg(owner);
        if let Some(fence) = raise_to {
            script.arg(keys::release_channel(key)).arg(fence);
        } else if let Some(channel) = keys::release_channel_arg(key) {
            script.arg(channel);
        }
        let status: i64 = match script.invoke_async(&mut self.conn()).await {
            Ok(status) => status,
            // Readers or permit holders hold the key (or someone else's data is there).
            Err(e) if e.code() == Some("WRONGTYPE") && raise_to.is_none() => {
                return self.group_release(key, owner).await
            }
            Err(e) if e.code() == Some("WRONGTYPE") => return Err(wrong_type(key, "non-string")),
            Err(e) => return Err(op_error(Some(key), e)),
        };
        if status == 1 {
            // Waiters in this process need not wait for the message to come back.
            self.notifier.notify(key);
        }
        Ok(status == 1)
    }
}
