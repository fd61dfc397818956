//! What readers see of a holding: the fence a recorded acquire tells every node, and the
//! quorum's view that `inspect` reads (see "Fencing" in the store's docs).

use super::quorum::{self, gather, quorum_view, timed, Answer, Tally};
use super::RedlockStore;
use crate::store::{LockInfo, Store, StoreError};

impl RedlockStore {
    /// Tells every node the fence of `owner`'s new recorded holding of `key` (see
    /// "Fencing" in the store's docs). A node that does not confirm it keeps `0` ("not known yet") in its
    /// record; a reader that hears a quorum of the holding's nodes hears one that confirmed,
    /// when a quorum did.
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

    /// One read of `key` on every node: the quorum's view, and whether its fence is still
    /// to be recorded (see [`Store::inspect`] here).
    pub(super) async fn inspect_once(
        &self,
        key: &str,
    ) -> Result<(Option<LockInfo>, bool), StoreError> {
        let quorum = self.quorum();
        let futs = self
            .nodes
            .iter()
            .map(|n| timed(self.settings.node_timeout, n.inspect(key)))
            .collect();
        // Decided once an owner has a quorum, or no owner can reach one any more.
        let votes = |answers: &[Answer<Option<LockInfo>>]| {
            let infos: Vec<&LockInfo> = answers
                .iter()
                .filter_map(|a| {
                    a.as_ref()
                        .and_then(|r| r.as_ref().ok())
                        .and_then(Option::as_ref)
                })
                .collect();
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
        let infos: Vec<&LockInfo> = answers
            .iter()
            .filter_map(|a| {
                a.as_ref()
                    .and_then(|r| r.as_ref().ok())
                    .and_then(Option::as_ref)
            })
            .collect();
        let view = quorum_view(key, &infos, quorum, self.settings.fences);
        let pending = view.as_ref().is_some_and(|v| {
            v.fence.is_none()
                && infos
                    .iter()
                    .any(|i| i.owner == v.owner && i.fence == Some(0))
        });
        Ok((view, pending))
    }
}
