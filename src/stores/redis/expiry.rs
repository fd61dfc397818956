//! The expiry watcher on Redis: Redis deletes expired keys by itself, so instead of sweeping
//! the key space we listen to its `expired` keyspace events, and claim the record each
//! expired holding leaves behind.
//!
//! - Every holding's state hash outlives its lock key by [`EXPIRY_GRACE_MS`]; a release
//!   deletes it, an expiry does not. An acquire that takes over a key whose previous holding
//!   ended without release moves that state to the key's expired-holding record.
//! - On the first [`reap_expired`](crate::Store::reap_expired) the store turns on `expired`
//!   events if the server has them off (`CONFIG SET notify-keyspace-events`, adding `Ex`) and
//!   subscribes to `__keyevent@DB__:expired` on a connection of its own. Each event's key goes
//!   to a bounded queue.
//! - Each sweep takes the queued keys under its prefix (plus, on its first sweep and after a
//!   reconnect, whatever records a `SCAN` finds, for expiries whose events it missed) and runs
//!   one claim script per key, which deletes the records it returns: of several processes
//!   racing, exactly one reports each expiry.
//!
//! [`EXPIRY_GRACE_MS`]: super::EXPIRY_GRACE_MS

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use redis::Value;

use super::conn::{bad_reply, op_error, Conn, Target};
use super::reply::{opt_fence, opt_string};
use super::{keys, scan, scripts, RedisStore};
use crate::store::{LockInfo, StoreError, StoreErrorKind};

/// Keys kept between two sweeps at most; the oldest are dropped beyond (and found again by
/// the next catch-up scan, which a drop triggers).
const QUEUE_LIMIT: usize = 100_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Queue {
    keys: VecDeque<String>,
    /// Bumped whenever events may have been missed (a (re)subscription, a dropped key):
    /// sweeps then scan once more.
    generation: u64,
}

/// The `expired` events of one Redis database, queued for sweeps.
pub(super) struct ExpiryFeed {
    queue: Arc<Mutex<Queue>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ExpiryFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for ExpiryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryFeed").finish_non_exhaustive()
    }
}

impl ExpiryFeed {
    /// Turns `expired` events on where needed and subscribes on each of `nodes` (the node,
    /// every master of a Cluster, or a Sentinel service's primary — on Sentinel, after a
    /// failover, on the promoted replica too); returns once every subscription is confirmed.
    pub async fn start(nodes: Vec<Target>) -> Result<ExpiryFeed, StoreError> {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let mut feed = ExpiryFeed {
            queue,
            tasks: Vec::new(),
        };
        for node in nodes {
            let (ready, subscribed) = oneshot::channel();
            feed.tasks
                .push(tokio::spawn(listen(node, feed.queue.clone(), ready)));
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, subscribed).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                _ => return Err(timed_out()),
            }
        }
        Ok(feed)
    }

    /// The current generation: a sweep that scanned at this generation has seen every expiry
    /// the feed might have missed.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Takes the queued keys that start with `prefix`.
    pub fn take(&self, prefix: &str) -> Vec<String> {
        let mut q = self.lock();
        let mut taken = Vec::new();
        for key in std::mem::take(&mut q.keys) {
            if key.starts_with(prefix) {
                taken.push(key);
            } else {
                q.keys.push_back(key);
            }
        }
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn timed_out() -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        "could not subscribe to expiry events in time",
    )
}

/// Makes sure the server publishes `expired` keyevents (flags `E` and `x`, or `A`).
async fn enable_events(conn: &mut redis::aio::MultiplexedConnection) -> Result<(), StoreError> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await
        .map_err(|e| unsupported(&e.to_string()))?;
    let flags = reply.get(1).cloned().unwrap_or_default();
    let has_expired = flags.contains('x') || flags.contains('A');
    if flags.contains('E') && has_expired {
        return Ok(());
    }
    let mut wanted = flags.clone();
    if !wanted.contains('E') {
        wanted.push('E');
    }
    if !has_expired {
        wanted.push('x');
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async::<()>(conn)
        .await
        .map_err(|e| unsupported(&e.to_string()))?;
    tracing::info!(
        "turned on Redis expiry events (notify-keyspace-events {wanted}) for the expiry watcher"
    );
    Ok(())
}

fn unsupported(why: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unsupported,
        format!(
            "the expiry watcher needs Redis keyspace events for expired keys, and they are off \
             here and could not be turned on ({why}): set `notify-keyspace-events Ex` in the \
             server's configuration"
        ),
    )
}

/// Connects to `node`, makes sure it publishes expiry events (a promoted replica may not)
/// and subscribes to them.
async fn subscribe(node: &Target) -> Result<redis::aio::PubSub, StoreError> {
    let client = node.client().await.map_err(|e| op_error(None, e))?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| op_error(None, e))?;
    enable_events(&mut conn).await?;
    let db = client.get_connection_info().redis_settings().db();
    let channel = format!("__keyevent@{db}__:expired");
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, subscribed)
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| op_error(None, e))
}

/// The listening task: (re)connects, subscribes, queues every expired lock key.
async fn listen(
    node: Target,
    queue: Arc<Mutex<Queue>>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    let mut dropped = 0u64;
    loop {
        let pubsub = match subscribe(&node).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::debug!("redis expiry feed cannot subscribe: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Events may have been missed while we were not subscribed.
        queue.lock().unwrap_or_else(|e| e.into_inner()).generation += 1;
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        let mut stream = pubsub.into_on_message();
        while let Some(message) = stream.next().await {
            let name = message.get_payload_bytes();
            if keys::is_derived(name) {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.keys.len() >= QUEUE_LIMIT {
                q.keys.pop_front();
                q.generation += 1;
                dropped += 1;
                if dropped == 1 {
                    tracing::warn!(
                        "redis expiry feed: more than {QUEUE_LIMIT} expired keys between two \
                         sweeps; the next sweep scans for what was dropped"
                    );
                }
            }
            q.keys.push_back(name.to_owned());
        }
        tracing::debug!("redis expiry feed lost its connection; reconnecting");
    }
}

/// The lock keys under `prefix` whose ended holdings left a record, found by `SCAN` (on the
/// node, or on every master of a Cluster).
pub(super) async fn scan_records(conn: &Conn, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for kind in ["state", "expired"] {
        let pattern = format!("{}{kind}*", keys::DERIVED_PREFIX);
        for name in scan::scan_all(conn, &pattern, "hash").await? {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            if let Some(key) = keys::lock_key_of(name, kind) {
                if key.starts_with(prefix) {
                    found.push(key.to_owned());
                }
            }
        }
    }
    Ok(found)
}

impl RedisStore {
    /// [`Store::reap_expired`](crate::Store::reap_expired): claims the records of expired
    /// holdings under `prefix`: those whose `expired` events arrived since the last sweep,
    /// and on a first sweep (or after the event connection dropped) those a `SCAN` finds.
    /// The holders of groups (readers, permits) leave no such record and are not reported.
    pub(super) async fn reap(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        if !self.records {
            return Err(StoreError::new(
                crate::StoreErrorKind::Unsupported,
                format!(
                    "{}: the expiry watcher reads the records of holdings, which this store does not write; open it (and every client of these keys) with records=true in the URL",
                    self.describe
                ),
            ));
        }
        let feed = self
            .expiry
            .get_or_try_init(|| async { ExpiryFeed::start(self.event_nodes().await?).await })
            .await?;
        let generation = feed.generation();
        let mut candidates = feed.take(prefix);
        let scanned = self.scanned_at(prefix);
        if scanned != Some(generation) {
            candidates.extend(scan_records(&self.conn, prefix).await?);
            self.scanned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(prefix.to_owned(), generation);
        }
        candidates.sort();
        candidates.dedup();
        let mut out = Vec::new();
        for key in candidates {
            let reply: Vec<Value> = scripts::CLAIM_EXPIRED
                .key(&key)
                .key(keys::state_key(&key))
                .key(keys::expired_key(&key))
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| op_error(Some(&key), e))?;
            for record in reply.chunks(3) {
                let owner =
                    opt_string(&key, record.first())?.ok_or_else(|| bad_reply(&key, "no owner"))?;
                out.push(LockInfo::new(
                    key.as_str(),
                    owner,
                    Some(Duration::ZERO),
                    opt_fence(&key, record.get(1))?,
                    opt_string(&key, record.get(2))?,
                ));
            }
        }
        Ok(out)
    }
}
