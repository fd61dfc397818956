//! The Redis store's take-over: one script ([`scripts::TAKE_OVER`]).

use redis::Value;

use super::acquire::{attempt_id, holding_value};
use super::conn::{bad_reply, op_error};
use super::{check_type, int, keys, opt_fence, opt_string, scripts, ttl_ms, RedisStore};
use crate::store::{AcquireRequest, Displaced, Lease, StoreError, TakeOver};

impl RedisStore {
    /// Runs the take-over script on the lock key and its derived keys (one slot).
    pub(super) async fn take_over_script(
        &self,
        r: &AcquireRequest<'_>,
    ) -> Result<TakeOver, StoreError> {
        let key = r.key;
        // Recorded like an acquire's, so the state hash has the same fields.
        let attempt = attempt_id();
        let reply: Vec<Value> = scripts::TAKE_OVER
            .key(key)
            .key(keys::state_key(key))
            .key(keys::fence_key(key))
            .key(keys::expired_key(key))
            .key(keys::group_key(key))
            .key(keys::writer_key(key))
            .arg(holding_value(r.owner, &attempt))
            .arg(ttl_ms(r.ttl))
            .arg(u8::from(r.metadata.is_some()))
            .arg(r.metadata.unwrap_or_default())
            .arg(&attempt)
            .arg(r.owner)
            .arg(u8::from(self.time_fences))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        check_type(key, &reply)?;
        if reply.first().map(|v| int(key, v)).transpose()? != Some(1) {
            return Err(bad_reply(key, "unknown take-over status"));
        }
        let displaced = opt_string(key, reply.get(2))?
            .map(|owner| {
                Ok::<_, StoreError>(Displaced {
                    owner,
                    fence: opt_fence(key, reply.get(3))?,
                })
            })
            .transpose()?;
        Ok(TakeOver {
            lease: Lease {
                fence: opt_fence(key, reply.get(1))?,
                ttl: r.ttl,
            },
            displaced,
        })
    }
}
