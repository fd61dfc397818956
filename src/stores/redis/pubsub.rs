//! The store's one pub/sub connection: subscribes to the release channels of keys that
//! waiters in this process wait for, and hands each message to the [`ReleaseNotifier`].
//!
//! A background task owns the connection. It connects on the first subscription (a store
//! nobody waits on never opens it), reconnects with backoff when the connection drops —
//! trying each seed node in turn on a Cluster, asking the sentinels for the primary on
//! Sentinel — re-subscribes, and then wakes every waiter
//! (`notify_all`), since releases may have been missed meanwhile. Channels nobody waits for
//! any more are unsubscribed lazily, on the next subscription or every few seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};

use super::conn::Target;
use super::keys;
use crate::notify::ReleaseNotifier;

/// How long `subscribe` waits for the server's confirmation before the waiter falls back
/// to polling (which still works, at the poll delay).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct Request {
    key: String,
    done: oneshot::Sender<bool>,
}

/// Handle to the subscriber task; dropping it (with the store) ends the task.
#[derive(Debug)]
pub(super) struct Subscriber {
    requests: mpsc::UnboundedSender<Request>,
}

impl Subscriber {
    /// Starts the task (it connects on the first request).
    pub fn start(nodes: Vec<Target>, notifier: Arc<ReleaseNotifier>) -> Subscriber {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(nodes, notifier, rx));
        Subscriber { requests }
    }

    /// Makes sure releases of `key` are received from now on. `false` when the server did
    /// not confirm in time: waiters then poll.
    pub async fn ensure(&self, key: &str) -> bool {
        let (done, answer) = oneshot::channel();
        let request = Request {
            key: key.to_owned(),
            done,
        };
        if self.requests.send(request).is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(SUBSCRIBE_TIMEOUT, answer).await,
            Ok(Ok(true))
        )
    }
}

async fn run(
    nodes: Vec<Target>,
    notifier: Arc<ReleaseNotifier>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    // channel -> key, for every channel we are (or should be, after a reconnect) subscribed to.
    let mut channels: HashMap<String, String> = HashMap::new();
    let mut pending: Option<Request> = None;
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0usize;
    loop {
        if pending.is_none() && channels.is_empty() {
            // Nobody waits: connect only when someone does.
            match requests.recv().await {
                Some(r) => pending = Some(r),
                None => return,
            }
        }
        let node = &nodes[attempt % nodes.len()];
        attempt += 1;
        let pubsub = match connect(node).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("redis subscriber cannot connect: {e}");
                if let Some(r) = pending.take() {
                    let _ = r.done.send(false);
                }
                // Waiters poll meanwhile; stop trying when the store is gone.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    r = requests.recv() => match r {
                        Some(r) => pending = Some(r),
                        None => return,
                    },
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        channels.retain(|_, key| notifier.has_subscribers(key));
        let mut ok = true;
        for channel in channels.keys() {
            if sink.subscribe(channel).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        if attempt > 1 {
            // Releases may have been missed while we were away.
            notifier.notify_all();
        }
        backoff = Duration::from_millis(50);
        match serve(
            &mut sink,
            &mut stream,
            &notifier,
            &mut channels,
            &mut requests,
            pending.take(),
        )
        .await
        {
            Served::Closed => return,
            Served::Disconnected => {
                tracing::debug!("redis subscriber lost its connection; reconnecting");
                notifier.notify_all();
            }
        }
    }
}

/// A pub/sub connection to `node` (on Sentinel, to the primary the sentinels name now).
async fn connect(node: &Target) -> redis::RedisResult<redis::aio::PubSub> {
    node.client().await?.get_async_pubsub().await
}

enum Served {
    Closed,
    Disconnected,
}

async fn serve(
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    notifier: &ReleaseNotifier,
    channels: &mut HashMap<String, String>,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    mut pending: Option<Request>,
) -> Served {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        if let Some(request) = pending.take() {
            if !subscribe(sink, notifier, channels, request).await {
                return Served::Disconnected;
            }
        }
        tokio::select! {
            r = requests.recv() => match r {
                Some(r) => pending = Some(r),
                None => return Served::Closed,
            },
            message = stream.next() => match message {
                Some(message) => {
                    if let Ok(key) = std::str::from_utf8(message.get_payload_bytes()) {
                        notifier.notify(key);
                    }
                }
                None => return Served::Disconnected,
            },
            _ = sweep.tick() => {
                if !unsubscribe_idle(sink, notifier, channels).await {
                    return Served::Disconnected;
                }
            }
        }
    }
}

/// Subscribes to the channel of the requested key; `false` if the connection failed.
async fn subscribe(
    sink: &mut PubSubSink,
    notifier: &ReleaseNotifier,
    channels: &mut HashMap<String, String>,
    request: Request,
) -> bool {
    if !unsubscribe_idle(sink, notifier, channels).await {
        let _ = request.done.send(false);
        return false;
    }
    let channel = keys::release_channel(&request.key);
    if channels.contains_key(&channel) {
        let _ = request.done.send(true);
        return true;
    }
    let ok = sink.subscribe(&channel).await.is_ok();
    if ok {
        channels.insert(channel, request.key);
    }
    let _ = request.done.send(ok);
    ok
}

async fn unsubscribe_idle(
    sink: &mut PubSubSink,
    notifier: &ReleaseNotifier,
    channels: &mut HashMap<String, String>,
) -> bool {
    let idle: Vec<String> = channels
        .iter()
        .filter(|(_, key)| !notifier.has_subscribers(key))
        .map(|(channel, _)| channel.clone())
        .collect();
    for channel in idle {
        if sink.unsubscribe(&channel).await.is_err() {
            return false;
        }
        channels.remove(&channel);
    }
    true
}
