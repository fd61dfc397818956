//! The store's operations, each one conditional write or one strongly consistent read of
//! the lock item (list and the expiry watcher: one scan, then one conditional write per
//! expired record).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::errors::sdk_error;
use super::item::*;
use crate::notify::ReleaseNotifier;
use crate::store::{Acquire, AcquireRequest, Displaced, Lease, LockInfo, StoreError, TakeOver};

type Item = HashMap<String, AttributeValue>;

/// What the operations share.
pub(super) struct Inner {
    pub client: Client,
    pub table: String,
    pub describe: String,
    pub clock: Clock,
    pub notifier: std::sync::Arc<ReleaseNotifier>,
}

/// The update of a new holding: owner, attempt, expiry, metadata, and the next fence (one
/// more than the key's last, or than the clock in microseconds on a key without one).
fn holding_update(ttl: bool, metadata: bool) -> String {
    let mut set = vec![
        "#owner = :owner",
        "#attempt = :attempt",
        "#fence = if_not_exists(#fence, :start) + :one",
    ];
    let mut remove = Vec::new();
    if ttl {
        set.push("#expires_at = :expires_at")
    } else {
        remove.push("#expires_at")
    }
    if metadata {
        set.push("#metadata = :metadata")
    } else {
        remove.push("#metadata")
    }
    let mut update = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        update.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    update
}

/// Ends a holding, keeping the fence: Verrou sees a free key (expiry long past).
const RELEASE_UPDATE: &str = "SET #expires_at = :released REMOVE #owner, #attempt, #metadata";

/// A live holding: no expiry, or not yet past it.
const LIVE: &str = "(attribute_not_exists(#expires_at) OR #expires_at >= :now)";

/// What the lock layer's retries and the SDK's own retries need to tell their attempts
/// apart.
pub(super) fn new_attempt() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| i64::try_from(crate::duration::ttl_millis(t)).unwrap_or(i64::MAX / 4))
}

impl Inner {
    fn update(&self, key: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key)))
    }

    fn error<E, R>(&self, e: SdkError<E, R>, what: &str) -> StoreError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        sdk_error(e, &self.describe, what)
    }

    fn record(&self, key: &str, item: Option<&Item>) -> Result<Option<Record>, StoreError> {
        item.filter(|i| !i.is_empty())
            .map(|i| Record::parse(&self.describe, key, i))
            .transpose()
    }

    /// One conditional `UpdateItem`: takes a free, released or expired key. Held: the
    /// holder comes with the failed condition (`ReturnValuesOnConditionCheckFailure`), or,
    /// from emulators that do not send it, from one strongly consistent read.
    pub async fn acquire(
        &self,
        r: AcquireRequest<'_>,
        attempt: &str,
    ) -> Result<Acquire, StoreError> {
        let request = self
            .holding(r, attempt)
            .condition_expression("attribute_not_exists(#key) OR #expires_at < :now")
            .set_expression_attribute_names(names(&[
                KEY, OWNER, ATTEMPT, FENCE, EXPIRES_AT, METADATA,
            ]))
            .expression_attribute_values(":now", n(self.clock.now_ms()))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let old = match request.send().await {
            Ok(out) => {
                let new = self.record(r.key, out.attributes())?.unwrap_or_default();
                return Ok(Acquire::Acquired(Lease {
                    fence: new.fence,
                    ttl: r.ttl,
                }));
            }
            Err(e) => self.failed_condition(e, &format!("acquiring '{}'", r.key))?,
        };
        let old = match old {
            Some(item) => self.record(r.key, Some(&item))?,
            None => self.read(r.key).await?,
        };
        let Some(old) = old else {
            return Ok(Acquire::Held(Default::default()));
        };
        if old.attempt.as_deref() == Some(attempt) && old.owner.as_deref() == Some(r.owner) {
            // The SDK retried a write whose first try had succeeded: the lock is ours.
            return Ok(Acquire::Acquired(Lease {
                fence: old.fence,
                ttl: r.ttl,
            }));
        }
        Ok(Acquire::Held(old.holder(self.clock.now_ms())))
    }

    /// An `UpdateItem` writing the holding of `r` (condition and return values to add).
    fn holding(&self, r: AcquireRequest<'_>, attempt: &str) -> UpdateItemFluentBuilder {
        let expires_at = ttl_ms(r.ttl).map(|t| self.clock.now_ms().saturating_add(t));
        let mut request = self
            .update(r.key)
            .update_expression(holding_update(expires_at.is_some(), r.metadata.is_some()))
            .expression_attribute_values(":owner", s(r.owner))
            .expression_attribute_values(":attempt", s(attempt))
            .expression_attribute_values(":start", n(self.clock.now_us()))
            .expression_attribute_values(":one", n(1));
        if let Some(e) = expires_at {
            request = request.expression_attribute_values(":expires_at", n(e));
        }
        if let Some(m) = r.metadata {
            request = request.expression_attribute_values(":metadata", s(m));
        }
        request
    }

    /// One unconditional `UpdateItem` answering the item it replaced: the new fence is the
    /// old one plus one, as the update computed it.
    pub async fn take_over(&self, r: AcquireRequest<'_>) -> Result<TakeOver, StoreError> {
        let start = self.clock.now_us();
        let request = self
            .holding(r, &new_attempt())
            .expression_attribute_values(":start", n(start))
            .set_expression_attribute_names(names(&[OWNER, ATTEMPT, FENCE, EXPIRES_AT, METADATA]))
            .return_values(ReturnValue::AllOld);
        let out = request
            .send()
            .await
            .map_err(|e| self.error(e, &format!("taking '{}' over", r.key)))?;
        let old = self.record(r.key, out.attributes())?;
        let fence = old.as_ref().and_then(|o| o.fence).unwrap_or(start as u64) + 1;
        let now = self.clock.now_ms();
        let displaced = old.filter(|o| o.live(now)).map(|o| Displaced {
            owner: o.owner.unwrap_or_default(),
            fence: o.fence,
        });
        Ok(TakeOver {
            lease: Lease {
                fence: Some(fence),
                ttl: r.ttl,
            },
            displaced,
        })
    }

    /// Ends the holding of `owner` (live or expired), keeping the fence; `Ok(true)` when it
    /// was live. `attempt`: only the holding that this attempt wrote.
    pub async fn release(
        &self,
        key: &str,
        owner: &str,
        attempt: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut condition = "#owner = :owner".to_owned();
        let mut request = self
            .update(key)
            .expression_attribute_values(":owner", s(owner));
        if let Some(a) = attempt {
            condition.push_str(" AND #attempt = :mine");
            request = request.expression_attribute_values(":mine", s(a));
        }
        let request = request.condition_expression(condition);
        self.end(key, request, "releasing").await
    }

    /// Ends whatever holding there is; `Ok(true)` when it was live.
    pub async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let request = self
            .update(key)
            .condition_expression("attribute_exists(#owner)");
        self.end(key, request, "force-releasing").await
    }

    async fn end(
        &self,
        key: &str,
        request: UpdateItemFluentBuilder,
        what: &str,
    ) -> Result<bool, StoreError> {
        let answer = request
            .update_expression(RELEASE_UPDATE)
            .set_expression_attribute_names(names(&[OWNER, ATTEMPT, EXPIRES_AT, METADATA]))
            .expression_attribute_values(":released", n(RELEASED))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match answer {
            Ok(out) => self.record(key, out.attributes())?,
            Err(e) => {
                self.failed_condition(e, &format!("{what} '{key}'"))?;
                return Ok(false);
            }
        };
        self.notifier.notify(key);
        Ok(old.is_some_and(|o| o.live(self.clock.now_ms())))
    }

    /// Sets the expiry of a live holding of `owner`.
    pub async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let now = self.clock.now_ms();
        let mut request = self
            .update(key)
            .condition_expression(format!("#owner = :owner AND {LIVE}"))
            .set_expression_attribute_names(names(&[OWNER, EXPIRES_AT]))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        request = match ttl_ms(ttl) {
            Some(t) => request
                .update_expression("SET #expires_at = :expires_at")
                .expression_attribute_values(":expires_at", n(now.saturating_add(t))),
            None => request.update_expression("REMOVE #expires_at"),
        };
        match request.send().await {
            Ok(out) => {
                let new = self.record(key, out.attributes())?.unwrap_or_default();
                Ok(Some(Lease {
                    fence: new.fence,
                    ttl,
                }))
            }
            Err(e) => {
                self.failed_condition(e, &format!("extending '{key}'"))?;
                Ok(None)
            }
        }
    }

    /// Replaces the metadata of a live holding of `owner`.
    pub async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .update(key)
            .condition_expression(format!("#owner = :owner AND {LIVE}"))
            .set_expression_attribute_names(names(&[OWNER, EXPIRES_AT, METADATA]))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":now", n(self.clock.now_ms()));
        request = match metadata {
            Some(m) => request
                .update_expression("SET #metadata = :metadata")
                .expression_attribute_values(":metadata", s(m)),
            None => request.update_expression("REMOVE #metadata"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                self.failed_condition(e, &format!("setting the metadata of '{key}'"))?;
                Ok(false)
            }
        }
    }

    /// One strongly consistent `GetItem`: a read right after a write sees the write.
    pub async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(e, &format!("reading '{key}'")))?;
        self.record(key, out.item())
    }

    /// The live holding of `key`.
    pub async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.read(key).await?.filter(|r| r.live(now)).map(|r| {
            let remaining = r.remaining(now);
            r.info(key, remaining)
        }))
    }

    /// The items under `prefix` that `filter` (over `#owner`, `#expires_at`, `:now`) keeps,
    /// by one strongly consistent `Scan` (all its pages).
    async fn scan(
        &self,
        prefix: &str,
        filter: &str,
        now: i64,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let mut filter = filter.to_owned();
        let mut used = vec![OWNER, EXPIRES_AT];
        if !prefix.is_empty() {
            filter.push_str(" AND begins_with(#key, :prefix)");
            used.push(KEY);
        }
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression(&filter)
                .set_expression_attribute_names(names(&used))
                .expression_attribute_values(":now", n(now))
                .set_exclusive_start_key(start.take());
            if !prefix.is_empty() {
                request = request.expression_attribute_values(":prefix", s(prefix));
            }
            let out = request
                .send()
                .await
                .map_err(|e| self.error(e, &format!("listing locks under '{prefix}'")))?;
            for item in out.items() {
                let Some(AttributeValue::S(key)) = item.get(KEY) else {
                    continue;
                };
                // Someone else's item in the table is not a lock: leave it out.
                if let Ok(record) = Record::parse(&self.describe, key, item) {
                    found.push((key.clone(), record));
                }
            }
            match out.last_evaluated_key() {
                Some(next) if !next.is_empty() => start = Some(next.clone()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The live locks under `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let now = self.clock.now_ms();
        let found = self
            .scan(prefix, &format!("attribute_exists(#owner) AND {LIVE}"), now)
            .await?;
        Ok(found
            .into_iter()
            .map(|(key, r)| {
                let remaining = r.remaining(now);
                r.info(&key, remaining)
            })
            .collect())
    }

    /// Claims each expired holding under `prefix` with a write conditioned on the holding
    /// the scan saw (owner, expiry, attempt), so that one of several watchers wins it.
    pub async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let now = self.clock.now_ms();
        let expired = self
            .scan(
                prefix,
                "attribute_exists(#owner) AND #expires_at < :now",
                now,
            )
            .await?;
        let mut out = Vec::new();
        for (key, seen) in expired {
            let (Some(owner), Some(expires_at)) = (&seen.owner, seen.expires_at) else {
                continue;
            };
            let mut condition = "#owner = :owner AND #expires_at = :seen AND ".to_owned();
            let mut request = self
                .update(&key)
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":seen", n(expires_at));
            match &seen.attempt {
                Some(a) => {
                    condition.push_str("#attempt = :attempt");
                    request = request.expression_attribute_values(":attempt", s(a));
                }
                None => condition.push_str("attribute_not_exists(#attempt)"),
            }
            let answer = request
                .condition_expression(condition)
                .update_expression(RELEASE_UPDATE)
                .set_expression_attribute_names(names(&[OWNER, ATTEMPT, EXPIRES_AT, METADATA]))
                .expression_attribute_values(":released", n(RELEASED))
                .return_values(ReturnValue::AllOld)
                .send()
                .await;
            match answer {
                Ok(_) => out.push(seen.info(&key, Some(Duration::ZERO))),
                Err(e) => {
                    self.failed_condition(e, &format!("claiming expired '{key}'"))?;
                }
            }
        }
        Ok(out)
    }

    /// The item a failed condition answered (`None` when the server sent none), or the
    /// error if it was another one.
    fn failed_condition<R>(
        &self,
        e: SdkError<UpdateItemError, R>,
        what: &str,
    ) -> Result<Option<Item>, StoreError>
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match e {
            SdkError::ServiceError(s) if s.err().is_conditional_check_failed_exception() => {
                match s.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => Ok(c.item),
                    _ => Ok(None),
                }
            }
            e => Err(self.error(e, what)),
        }
    }
}
