//! The etcd store's watches: release notifications for waiters (one watch per key waited
//! for in this process) and the expiry feed of the expiry watcher (one watch per prefix).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchStream,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::layout::{self, Record};
use super::ops::{Inner, ENDED_GRACE};
use crate::notify::ReleaseNotifier;
use crate::store::{LockInfo, ReleaseWait, StoreError, StoreErrorKind, Subscription};

const READY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Expired holdings kept between two sweeps at most.
const QUEUE_LIMIT: usize = 100_000;

/// A watch on `prefix` (deletions only) from `start` (0: now), confirmed by etcd.
async fn open(
    inner: &Inner,
    prefix: &[u8],
    start: i64,
    prev_kv: bool,
) -> Result<WatchStream, StoreError> {
    let failed = |e| inner.op_error("watching", e);
    let mut options = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    if start > 0 {
        options = options.with_start_revision(start);
    }
    if prev_kv {
        options = options.with_prev_key();
    }
    let client = inner.client().await?;
    let watching = client
        .watch_client()
        .watch(prefix.to_vec(), Some(options))
        .await;
    let mut stream = watching.map_err(failed)?;
    // The first answer confirms the watch: from then on no deletion is missed.
    match stream.message().await.map_err(failed)? {
        Some(r) if r.created() && !r.canceled() => Ok(stream),
        Some(r) => Err(failed(etcd_client::Error::WatchError(format!(
            "watch refused: {}",
            r.cancel_reason()
        )))),
        None => Err(failed(etcd_client::Error::WatchError(
            "watch closed".into(),
        ))),
    }
}

/// The live release watches of a store, by lock key.
#[derive(Debug, Default)]
pub(super) struct Watches {
    by_key: Mutex<HashMap<String, Weak<KeyWatch>>>,
}

/// One running watch; stopped when the last subscription using it is dropped.
#[derive(Debug)]
struct KeyWatch(JoinHandle<()>);

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A subscription: the in-process notifier's, kept together with the watch that feeds it.
struct Wait {
    inner: Subscription,
    _watch: Arc<KeyWatch>,
}

#[async_trait::async_trait]
impl ReleaseWait for Wait {
    async fn released(&mut self) {
        self.inner.released().await
    }

    fn pass_on(&mut self) {
        self.inner.pass_on()
    }

    fn ahead(&self) -> usize {
        self.inner.ahead()
    }

    fn observe(&mut self) {
        self.inner.observe()
    }
}

impl Watches {
    /// Subscribes to releases of `key`: deletions of its holding keys, seen by a watch that
    /// is active before this returns.
    pub async fn subscribe(
        &self,
        store: &Arc<Inner>,
        notifier: &Arc<ReleaseNotifier>,
        key: &str,
    ) -> Result<Subscription, StoreError> {
        let inner = notifier.subscribe(key);
        let existing = self.lock().get(key).and_then(Weak::upgrade);
        let watch = match existing {
            Some(w) => w,
            None => {
                let (ready, started) = oneshot::channel();
                let task = tokio::spawn(releases(
                    store.clone(),
                    key.to_owned(),
                    notifier.clone(),
                    ready,
                ));
                let watch = Arc::new(KeyWatch(task));
                match tokio::time::timeout(READY_TIMEOUT, started).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => return Err(e),
                    _ => {
                        return Err(StoreError::new(
                            StoreErrorKind::Unavailable,
                            format!("watching lock '{key}' did not start in time"),
                        ))
                    }
                }
                let mut by_key = self.lock();
                by_key.retain(|_, w| w.strong_count() > 0);
                by_key.insert(key.to_owned(), Arc::downgrade(&watch));
                watch
            }
        };
        Ok(Subscription::new(Wait {
            inner,
            _watch: watch,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<KeyWatch>>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task of one release watch: wakes a waiter of `key` per deleted holding key, and
/// resumes after a lost connection from where it was.
async fn releases(
    inner: Arc<Inner>,
    key: String,
    notifier: Arc<ReleaseNotifier>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let prefix = layout::prefix(&key);
    let mut ready = Some(ready);
    let mut next = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut stream = match open(&inner, &prefix, next, false).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        backoff = Duration::from_millis(50);
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() {
                // Compacted past where we were: releases may have been missed.
                notifier.notify_all();
                next = 0;
                break;
            }
            if let Some(h) = resp.header() {
                next = h.revision() + 1;
            }
            for event in resp.events() {
                let direct = event
                    .kv()
                    .is_some_and(|kv| layout::lock_of(kv.key()) == Some(key.as_str()));
                if event.event_type() == EventType::Delete && direct {
                    notifier.notify(&key);
                }
            }
        }
    }
}

/// An expired holding seen by an expiry feed, not yet claimed.
struct Expired {
    name: Vec<u8>,
    info: LockInfo,
    seen: Instant,
}

/// The expiry feeds of a store, by prefix.
#[derive(Default)]
pub(super) struct Feeds {
    by_prefix: tokio::sync::Mutex<HashMap<String, Feed>>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds").finish_non_exhaustive()
    }
}

struct Feed {
    queue: Arc<Mutex<VecDeque<Expired>>>,
    /// The revision of the last deletion the feed has queued or passed over.
    seen: tokio::sync::watch::Receiver<i64>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feeds {
    /// Claims and returns the holdings under `prefix` that ended by expiry, seen since the
    /// store was opened at revision `opened` (the first call starts the feed from there).
    pub async fn reap(
        &self,
        inner: &Arc<Inner>,
        opened: i64,
        prefix: &str,
    ) -> Result<Vec<LockInfo>, StoreError> {
        let (queue, mut seen) = {
            let mut feeds = self.by_prefix.lock().await;
            match feeds.get(prefix) {
                Some(feed) if !feed.task.is_finished() => (feed.queue.clone(), feed.seen.clone()),
                _ => {
                    let feed = start(inner.clone(), prefix, opened).await?;
                    let found = (feed.queue.clone(), feed.seen.clone());
                    feeds.insert(prefix.to_owned(), feed);
                    found
                }
            }
        };
        // Every deletion up to now reaches the queue before the sweep reads it: a deletion
        // of our own under the prefix marks "now", and the feed sees deletions in order.
        let now = mark(inner, prefix).await?;
        let caught_up = tokio::time::timeout(READY_TIMEOUT, seen.wait_for(|r| *r >= now))
            .await
            .is_ok_and(|r| r.is_ok());
        if !caught_up {
            tracing::debug!(prefix = %prefix, "the expiry feed lags; this sweep reports what it has");
        }
        let taken: Vec<Expired> = queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let mut reaped = Vec::new();
        for expired in taken {
            // The markers of holdings that ended otherwise live at least this long.
            if expired.seen.elapsed() > ENDED_GRACE / 2 {
                tracing::debug!(key = %expired.info.key, "expiry seen too long ago to claim");
                continue;
            }
            if claim(inner, &expired.name).await? {
                reaped.push(expired.info);
            }
        }
        reaped.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(reaped)
    }

    pub async fn stop(&self) {
        self.by_prefix.lock().await.clear();
    }
}

/// Writes the ended marker of holding `name` unless one exists: `true` for the one claim
/// that wrote it. A release, force release or take-over wrote it already.
async fn claim(inner: &Arc<Inner>, name: &[u8]) -> Result<bool, StoreError> {
    let marker = layout::ended_key(name);
    let lease = inner.markers_lease().await?;
    let txn = Txn::new()
        .when([Compare::create_revision(
            marker.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            marker,
            Vec::new(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = inner
        .client()
        .await?
        .kv_client()
        .txn(txn)
        .await
        .map_err(|e| inner.op_error("claiming an expired lock", e))?;
    Ok(resp.succeeded())
}

/// The key a sweep writes and deletes under `prefix` to learn that its feed caught up: after
/// a NUL and with a `/`, it is no lock's holding key and no lock's name.
fn mark_key(prefix: &str) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(b"\0cadenas/sweep");
    k
}

/// Writes and deletes the mark under `prefix`; the revision of the deletion.
async fn mark(inner: &Arc<Inner>, prefix: &str) -> Result<i64, StoreError> {
    let mut kv = inner.client().await?.kv_client();
    let key = mark_key(prefix);
    let failed = |e| inner.op_error("marking an expiry sweep", e);
    kv.put(key.clone(), Vec::new(), None)
        .await
        .map_err(failed)?;
    let deleted = kv.delete(key, None).await.map_err(failed)?;
    Ok(deleted.header().map_or(0, |h| h.revision()))
}

async fn start(inner: Arc<Inner>, prefix: &str, opened: i64) -> Result<Feed, StoreError> {
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let (ready, started) = oneshot::channel();
    let (progress, seen) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(expiries(
        inner,
        prefix.to_owned(),
        opened + 1,
        (queue.clone(), progress),
        ready,
    ));
    let feed = Feed { queue, seen, task };
    match tokio::time::timeout(READY_TIMEOUT, started).await {
        Ok(Ok(Ok(()))) => Ok(feed),
        Ok(Ok(Err(e))) => Err(e),
        _ => Err(StoreError::new(
            StoreErrorKind::Unavailable,
            "watching for expired locks did not start in time",
        )),
    }
}

/// The task of one expiry feed: queues every deleted cadenas holding key under `prefix` that
/// had a lease. Whether it expired is decided by the claim.
async fn expiries(
    inner: Arc<Inner>,
    prefix: String,
    mut next: i64,
    (queue, progress): (
        Arc<Mutex<VecDeque<Expired>>>,
        tokio::sync::watch::Sender<i64>,
    ),
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut stream = match open(&inner, prefix.as_bytes(), next, true).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        backoff = Duration::from_millis(50);
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() {
                tracing::warn!(prefix = %prefix, "etcd compacted the history the expiry watcher \
                    needed; expiries before revision {} are not reported", resp.compact_revision());
                next = resp.compact_revision();
                break;
            }
            if let Some(h) = resp.header() {
                next = next.max(h.revision() + 1);
            }
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let mut last = 0;
            for event in resp.events() {
                last = event.kv().map_or(last, |kv| kv.mod_revision());
                if event.event_type() != EventType::Delete {
                    continue;
                }
                let Some(prev) = event.prev_kv() else {
                    continue;
                };
                let Some(lock) = layout::lock_of(prev.key()).filter(|l| l.starts_with(&prefix))
                else {
                    continue;
                };
                let Ok(record) = serde_json::from_slice::<Record>(prev.value()) else {
                    continue;
                };
                if prev.lease() == 0 {
                    continue;
                }
                if q.len() >= QUEUE_LIMIT {
                    q.pop_front();
                }
                q.push_back(Expired {
                    name: prev.key().to_vec(),
                    info: LockInfo::new(
                        lock,
                        record.owner,
                        Some(Duration::ZERO),
                        Some(prev.create_revision() as u64),
                        record.metadata,
                    ),
                    seen: Instant::now(),
                });
            }
            drop(q);
            progress.send_if_modified(|seen| {
                let newer = last > *seen;
                *seen = (*seen).max(last);
                newer
            });
        }
    }
}
