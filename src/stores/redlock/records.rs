//! What readers see: the fence a recorded acquire tells every node, and the quorum's view
//! that `inspect` and `list` read (see "Fencing" in the store's docs).

use std::time::Duration;

use tokio::time::Instant;

use super::quorum::{self, gather, quorum_view, timed, Answer, Tally};
use super::RedlockStore;
use crate::store::{LockInfo, Store, StoreError};

/// The least time `list` gives each node.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);

/// The holdings the nodes that answered reported.
fn held(answers: &[Answer<Option<LockInfo>>]) -> Vec<&LockInfo> {
    answers
        .iter()
        .filter_map(|a| {
            a.as_ref()
                .and_then(|r| r.as_ref().ok())
                .and_then(Option::as_ref)
        })
        .collect()
}

impl RedlockStore {
    /// Tells every node the fence of `owner`'s new recorded holding of `key` (see
    /// "Fencing" in the store's docs). A node that does not confirm it keeps `0` ("not
    /// known yet") in its record; a reader that hears a quorum of the holding's nodes hears
    /// one that confirmed, when a quorum did.
    pub(super) async fn record_fence(&self, key: &str, owner: &str, fence: u64) {
        let (k, o) = (key.to_owned(), owner.to_owned());
        let (tally, _) = self
            .on_all(
                |n| {
                    let (k, o) = (k.clone(), o.clone());
                    async move { n.record_fence(&k, &o, fence).await }
                },
                |written| *written,
                false,
            )
            .await;
        if tally.yes < self.quorum() {
            tracing::debug!(store = %self.describe, key = %key, confirmed = tally.yes,
                "redlock: fewer than a quorum confirmed the recorded fence; readers may see a lower one");
        }
    }

    /// [`Store::inspect`]: the quorum's view. A recorded holding whose nodes were not told
    /// its fence yet (every record of it says `0`: the moment between its grants and
    /// [`record_fence`](Self::record_fence)) is read again, for up to the node timeout;
    /// after that its fence shows as unknown (`None`).
    pub(super) async fn inspect_settled(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let deadline = Instant::now() + self.settings.node_timeout;
        loop {
            let (view, fence_pending) = self.inspect_once(key).await?;
            if !fence_pending || Instant::now() >= deadline {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// One read of `key` on every node: the quorum's view, and whether its fence is still
    /// to be recorded.
    async fn inspect_once(&self, key: &str) -> Result<(Option<LockInfo>, bool), StoreError> {
        let quorum = self.quorum();
        let futs = self
            .nodes
            .iter()
            .map(|n| timed(self.settings.node_timeout, n.inspect(key)))
            .collect();
        // Decided once an owner has a quorum, or no owner can reach one any more.
        let votes = |answers: &[Answer<Option<LockInfo>>]| {
            let infos = held(answers);
            let best = quorum::most_common(infos.iter().map(|i| &i.owner)).map_or(0, |(_, n)| n);
            let t = Tally::of(answers, |_| true);
            (best, t.failed + t.pending)
        };
        let answers = gather(futs, |a| {
            let (best, unsure) = votes(a);
            best >= quorum || best + unsure < quorum
        })
        .await;
        let (best, unsure) = votes(&answers);
        if best < quorum && best + unsure >= quorum {
            return Err(self.failure(&answers, &format!("inspect '{key}'")));
        }
        let infos = held(&answers);
        let view = quorum_view(key, &infos, quorum, self.settings.fences);
        let pending = view.as_ref().is_some_and(|v| {
            v.fence.is_none()
                && infos
                    .iter()
                    .any(|i| i.owner == v.owner && i.fence == Some(0))
        });
        Ok((view, pending))
    }

    /// [`Store::list`]: every node's list (each given at least [`LIST_TIMEOUT`]), and per
    /// key the view a quorum agrees on.
    pub(super) async fn list_quorum(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let timeout = self.settings.node_timeout.max(LIST_TIMEOUT);
        let futs = self
            .nodes
            .iter()
            .map(|n| timed(timeout, n.list(prefix)))
            .collect();
        let answers = gather(futs, |_| false).await;
        let lists: Vec<&Vec<LockInfo>> = answers
            .iter()
            .filter_map(|a| a.as_ref().and_then(|r| r.as_ref().ok()))
            .collect();
        let quorum = self.quorum();
        if lists.len() < quorum {
            return Err(self.failure(&answers, "list"));
        }
        let mut by_key: std::collections::BTreeMap<&str, Vec<&LockInfo>> = Default::default();
        for info in lists.into_iter().flatten() {
            by_key.entry(info.key.as_str()).or_default().push(info);
        }
        Ok(by_key
            .into_iter()
            .filter_map(|(key, infos)| quorum_view(key, &infos, quorum, self.settings.fences))
            .collect())
    }
}
