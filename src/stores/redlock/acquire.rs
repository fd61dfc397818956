//! Acquire on every node at once, in the caller's task: no task per node on the way.
//!
//! Each node's request is the Redis store's own acquire, which is cancel safe by itself (a
//! request dropped before its answer gives back exactly what it took, by its attempt id).
//! What this module adds is the part a quorum needs: grants that came back while the outcome
//! was still open are undone when the lock is not ours — or when the caller drops the acquire
//! before it is decided ([`Grants`]) — and requests still under way once the lock is ours
//! finish on a task of their own, so that the lock reaches every node that answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use super::quorum::{timed, Answer};
use crate::store::{Acquire, AcquireRequest, Store, StoreError};
use crate::stores::redis::RedisStore;

/// The nodes that granted this acquire so far, released on Drop unless disarmed: a caller
/// that stops waiting before the outcome is decided leaves nothing held.
pub(super) struct Grants {
    key: Arc<str>,
    owner: Arc<str>,
    timeout: Duration,
    nodes: Vec<Arc<RedisStore>>,
}

impl Grants {
    /// The grants of `owner`'s acquire of `key`, none yet.
    pub fn new(key: Arc<str>, owner: Arc<str>, timeout: Duration) -> Grants {
        Grants {
            key,
            owner,
            timeout,
            nodes: Vec::new(),
        }
    }

    /// `node` granted the lock.
    pub fn add(&mut self, node: Arc<RedisStore>) {
        self.nodes.push(node);
    }

    /// The lock is ours: the grants stay.
    pub fn keep(mut self) {
        self.nodes.clear();
    }

    /// The lock is not ours: releases every grant, on all nodes at once, and returns once
    /// each has answered (or timed out: that grant then ends with its ttl).
    pub async fn undo(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        let (key, owner, timeout) = (&*self.key, &*self.owner, self.timeout);
        let undos: FuturesUnordered<_> = nodes
            .iter()
            .map(|node| async move { undo_on(node, key, owner, timeout).await })
            .collect();
        undos.collect::<Vec<()>>().await;
    }
}

impl Drop for Grants {
    fn drop(&mut self) {
        if self.nodes.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let nodes = std::mem::take(&mut self.nodes);
        let (key, owner, timeout) = (self.key.clone(), self.owner.clone(), self.timeout);
        runtime.spawn(async move {
            for node in &nodes {
                undo_on(node, &key, &owner, timeout).await;
            }
        });
    }
}

async fn undo_on(node: &RedisStore, key: &str, owner: &str, timeout: Duration) {
    if let Err(e) = timed(timeout, node.release(key, owner)).await {
        tracing::debug!(node = node.describe(), key = %key, error = %e.message,
            "redlock: could not undo a grant; it expires with its ttl");
    }
}

/// One node's acquire of `key` for `owner`, owning what it needs (so that it can finish on
/// a task of its own), bounded by `timeout`; answers its node's index too.
pub(super) fn acquire_on(
    index: usize,
    node: Arc<RedisStore>,
    request: &AcquireRequest<'_>,
    key: &Arc<str>,
    owner: &Arc<str>,
    timeout: Duration,
) -> impl Future<Output = (usize, Result<Acquire, StoreError>)> + Send + 'static {
    let (key, owner) = (key.clone(), owner.clone());
    let metadata: Option<Arc<str>> = request.metadata.map(Into::into);
    let (ttl, recorded) = (request.ttl, request.recorded);
    async move {
        let request = AcquireRequest::new(&key, &owner, ttl)
            .with_metadata(metadata.as_deref())
            .with_recorded(recorded);
        (index, timed(timeout, node.try_acquire(request)).await)
    }
}

/// Collects the answers of `pending` (one future per node, each answering its index) into
/// `answers` until `decided` says the outcome is known or every node answered.
pub(super) async fn collect<T, F>(
    pending: &mut FuturesUnordered<F>,
    answers: &mut [Answer<T>],
    mut on_answer: impl FnMut(usize, &Result<T, StoreError>),
    decided: impl Fn(&[Answer<T>]) -> bool,
) where
    F: Future<Output = (usize, Result<T, StoreError>)>,
{
    while let Some((i, answer)) = pending.next().await {
        on_answer(i, &answer);
        answers[i] = Some(answer);
        if decided(answers) {
            return;
        }
    }
}

/// Lets the requests in `pending` finish: those already answered at once, the rest on a
/// task of their own (only if some are left).
pub(super) fn finish<F>(mut pending: FuturesUnordered<F>)
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    while let Some(Some(_)) = pending.next().now_or_never() {}
    if pending.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { while pending.next().await.is_some() {} });
    }
}

/// The requests of a writing operation (release, extend, …): whatever is still running when
/// this is dropped — decided early, or the caller went away — [`finish`]es.
pub(super) struct Unfinished<F>(pub FuturesUnordered<F>)
where
    F: Future + Send + 'static,
    F::Output: Send;

impl<F> Drop for Unfinished<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    fn drop(&mut self) {
        finish(std::mem::take(&mut self.0));
    }
}
