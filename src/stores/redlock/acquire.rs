//! One node's part of an acquire: its own task, so the request completes even when the
//! caller stops waiting, and its grant then stays or is undone as the caller decides.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::quorum::timed;
use super::RedlockStore;
use crate::store::{Acquire, AcquireRequest, Store, StoreError, StoreErrorKind};
use crate::stores::redis::RedisStore;

/// What becomes of the grants of an acquire: the caller decides once it has a quorum's
/// answers (or too many failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Pending,
    /// The lock is ours: late grants stay.
    Keep,
    /// Not ours: release grants, and on nodes that failed to answer too if `failed_too`.
    Undo {
        failed_too: bool,
    },
}

impl RedlockStore {
    /// Starts the acquire on one node, on its own task so that it completes even when the
    /// caller stops waiting: a grant then stays or is undone as the caller decides — undone
    /// if the caller went away first. Returns the task and a future of the node's answer.
    pub(super) fn acquire_on(
        &self,
        node: Arc<RedisStore>,
        request: AcquireRequest<'_>,
        ttl: Duration,
        mut decision: watch::Receiver<Decision>,
    ) -> (
        tokio::task::JoinHandle<()>,
        impl Future<Output = std::result::Result<Acquire, StoreError>>,
    ) {
        let timeout = self.settings.node_timeout;
        let key: Arc<str> = request.key.into();
        let owner: Arc<str> = request.owner.into();
        let metadata: Option<Arc<str>> = request.metadata.map(Into::into);
        let (answer, answered) = oneshot::channel();
        let task = tokio::spawn(async move {
            let request =
                AcquireRequest::new(&key, &owner, Some(ttl)).with_metadata(metadata.as_deref());
            let reply = timed(timeout, node.try_acquire(request)).await;
            let failed = reply.is_err();
            let maybe_granted = !matches!(reply, Ok(Acquire::Held(_)));
            let _ = answer.send(reply);
            if !maybe_granted {
                return;
            }
            let undo = match decision.wait_for(|d| *d != Decision::Pending).await {
                Ok(d) => match *d {
                    Decision::Undo { failed_too } => !failed || failed_too,
                    _ => false,
                },
                // The caller went away before deciding.
                Err(_) => true,
            };
            if undo {
                if let Err(e) = timed(timeout, node.release(&key, &owner)).await {
                    tracing::debug!(node = node.describe(), key = %key, error = %e.message,
                        "redlock: could not undo a grant; it expires with its ttl");
                }
            }
        });
        let reply = async move {
            answered.await.unwrap_or_else(|_| {
                Err(StoreError::new(
                    StoreErrorKind::Transient,
                    "the request task ended early",
                ))
            })
        };
        (task, reply)
    }
}
