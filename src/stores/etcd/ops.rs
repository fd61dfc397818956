//! The etcd store's operations, each one transaction on the lock's keys (plus the lease
//! requests a holding needs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use super::layout::{self, Holding, Record};
use super::members::Members;
use crate::store::{
    Acquire, AcquireRequest, Displaced, Holder, Lease, LockInfo, StoreError, StoreErrorKind,
    TakeOver,
};

/// How long the marker of an ended holding lives (see the module docs, *Expiry watcher*).
pub(super) const ENDED_GRACE: Duration = Duration::from_secs(60);

/// How many times a take-over or force release tries again when the lock's keys changed
/// between its read and its transaction.
const RETRIES: usize = 100;

/// The part of the store that background tasks need too.
pub(super) struct Inner {
    pub members: Members,
    pub describe: String,
    /// The lease markers of ended holdings are attached to, and when it was granted.
    markers: std::sync::Mutex<Option<(i64, Instant)>>,
}

/// Whole seconds of a ttl, rounded up: etcd's leases count in seconds.
pub(super) fn lease_secs(ttl: Duration) -> i64 {
    let ms = ttl.as_millis().div_ceil(1000).max(1);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn rejected(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Rejected, message)
}

fn range(resp: &TxnOpResponse) -> &[KeyValue] {
    match resp {
        TxnOpResponse::Get(g) => g.kvs(),
        _ => &[],
    }
}

fn prefix_get(key: &str) -> TxnOp {
    TxnOp::get(layout::prefix(key), Some(GetOptions::new().with_prefix()))
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub fn new(members: Members, describe: String) -> Inner {
        Inner {
            members,
            describe,
            markers: std::sync::Mutex::new(None),
        }
    }

    /// The current member's client.
    pub async fn client(&self) -> Result<Client, StoreError> {
        self.members.client().await
    }

    /// A driver error as a [`StoreError`]; the next request goes to another member if this
    /// one may be the trouble.
    pub fn op_error(&self, doing: &str, e: etcd_client::Error) -> StoreError {
        let error = super::settings::op_error(doing, e);
        self.members.failed(&error);
        error
    }

    /// The holding keys of `key`, holder first, and the revision they were read at.
    pub async fn holdings(&self, key: &str) -> Result<(Vec<Holding>, i64), StoreError> {
        let resp = self
            .client()
            .await?
            .kv_client()
            .get(layout::prefix(key), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.op_error(&format!("reading lock '{key}'"), e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((layout::holdings(key, resp.kvs())?, revision))
    }

    /// A lease of `secs` seconds: its id and the ttl etcd granted (etcd raises ttls below
    /// its minimum).
    async fn grant(&self, key: &str, secs: i64) -> Result<(i64, i64), StoreError> {
        let g = self
            .client()
            .await?
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| self.op_error(&format!("granting a lease for lock '{key}'"), e))?;
        Ok((g.id(), g.ttl()))
    }

    /// Revokes `lease` in the background (the keys of a holding are already gone; this only
    /// frees the server from the lease).
    pub fn revoke_later(self: &Arc<Self>, lease: i64) {
        if lease == 0 {
            return;
        }
        let inner = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(client) = inner.client().await {
                    let _ = client.lease_client().revoke(lease).await;
                }
            });
        }
    }

    /// The lease for markers of ended holdings, granted anew once half of it has run out.
    pub async fn markers_lease(&self) -> Result<i64, StoreError> {
        let fresh = |at: Instant| at.elapsed() < ENDED_GRACE / 2;
        if let Some((id, at)) = *self.markers.lock().unwrap_or_else(|e| e.into_inner()) {
            if fresh(at) {
                return Ok(id);
            }
        }
        let secs = ENDED_GRACE.as_secs() as i64;
        let (id, _) = self.grant("(ended holdings)", secs).await?;
        *self.markers.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, Instant::now()));
        Ok(id)
    }

    /// The operations that end holding `name`: delete it, and (when it had a lease, so that
    /// an expiry watcher could take its deletion for an expiry) write its ended marker.
    async fn end_ops(&self, name: &[u8], leased: bool) -> Result<Vec<TxnOp>, StoreError> {
        let mut ops = vec![TxnOp::delete(name.to_vec(), None)];
        if leased {
            let lease = self.markers_lease().await?;
            ops.push(TxnOp::put(
                layout::ended_key(name),
                Vec::new(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        Ok(ops)
    }

    /// Ends holding `h` if it is still there: `Ok(false)` when it was not.
    async fn end(&self, key: &str, h: &Holding) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                h.name.clone(),
                CompareOp::Equal,
                h.revision,
            )])
            .and_then(self.end_ops(&h.name, h.lease != 0).await?);
        let resp = self
            .client()
            .await?
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.op_error(&format!("releasing lock '{key}'"), e))?;
        Ok(resp.succeeded())
    }

    /// Ends the holding key `name` of a cancelled acquire, whatever its revision (the name is
    /// the attempt's own), and revokes its lease. The ended marker is written whether the key
    /// was there or not: an acquire request still on its way is then refused by the server
    /// (its transaction requires the marker to be absent).
    pub async fn end_attempt(self: &Arc<Self>, name: Vec<u8>, lease: i64) {
        let ended = async {
            let txn = Txn::new().and_then(self.end_ops(&name, true).await?);
            self.client()
                .await?
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| self.op_error("releasing a cancelled acquire", e))?;
            if lease != 0 {
                let _ = self.client().await?.lease_client().revoke(lease).await;
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = ended.await {
            tracing::warn!(key = %String::from_utf8_lossy(&name), store = %self.describe, error = %e,
                "could not release after a cancelled acquire; the lock expires with its ttl");
        }
    }

    /// What a waiter learns about holder `h`: owner and time left on its lease.
    pub async fn holder(&self, key: &str, h: &Holding) -> Result<Holder, StoreError> {
        Ok(Holder {
            owner: Some(h.owner()),
            remaining: self.remaining(key, h).await?,
        })
    }

    /// Time left on `h`'s lease by the server's clock (`None` without lease). etcd counts it
    /// in whole seconds, rounded down; under one second it reports a quarter second.
    async fn remaining(&self, key: &str, h: &Holding) -> Result<Option<Duration>, StoreError> {
        if h.lease == 0 {
            return Ok(None);
        }
        let ttl = self
            .client()
            .await?
            .lease_client()
            .time_to_live(h.lease, None)
            .await
            .map_err(|e| self.op_error(&format!("reading the lease of lock '{key}'"), e))?
            .ttl();
        Ok(Some(match u64::try_from(ttl) {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => Duration::from_millis(250),
        }))
    }

    pub async fn info(&self, key: &str, h: &Holding) -> Result<LockInfo, StoreError> {
        Ok(LockInfo::new(
            key,
            h.owner(),
            self.remaining(key, h).await?,
            Some(h.fence()),
            h.metadata(),
        ))
    }

    /// The lease of a new holding (`0` without ttl), its key name and the ttl to report.
    async fn new_holding(
        &self,
        r: &AcquireRequest<'_>,
    ) -> Result<(i64, Vec<u8>, Record), StoreError> {
        let (lease, id, secs) = match r.ttl {
            Some(ttl) => {
                let secs = lease_secs(ttl);
                let (lease, _) = self.grant(r.key, secs).await?;
                (lease, lease as u64, secs)
            }
            None => (0, rand::random::<u64>(), 0),
        };
        let record = Record::new(r.owner, r.metadata, secs);
        Ok((lease, layout::holding_key(r.key, id), record))
    }

    /// One try to take `r.key`: see the module docs, *Acquire*. `attempt` learns the lease and
    /// key name before anything is written, for the clean-up of a cancelled call.
    pub async fn try_acquire(
        self: &Arc<Self>,
        r: &AcquireRequest<'_>,
        attempt: &mut super::Attempt,
    ) -> Result<Acquire, StoreError> {
        // A held lock costs a read, not writes: waiters retrying their tries must not load
        // the cluster's log (a lease grant and a transaction are each a Raft write).
        let (found, _) = self.holdings(r.key).await?;
        if let Some(h) = found.first() {
            return Ok(Acquire::Held(self.holder(r.key, h).await?));
        }
        let (lease, name, record) = self.new_holding(r).await?;
        attempt.arm(name.clone(), lease);
        let prefix = layout::prefix(r.key);
        let put = TxnOp::put(
            name.clone(),
            record.to_value(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let doing = || format!("acquiring lock '{}'", r.key);
        // Not cancelled meanwhile (see `end_attempt`).
        let live = || Compare::create_revision(layout::ended_key(&name), CompareOp::Equal, 0);
        // Free when nothing at all is under the prefix: put ours.
        let txn = Txn::new()
            .when([
                Compare::create_revision(prefix.clone(), CompareOp::Equal, 0).with_prefix(),
                live(),
            ])
            .and_then([put.clone()])
            .or_else([prefix_get(r.key)]);
        let mut kv = self.client().await?.kv_client();
        let resp = kv.txn(txn).await.map_err(|e| self.op_error(&doing(), e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(Acquire::Acquired(Lease {
                fence: Some(revision as u64),
                ttl: r.ttl,
            }));
        }
        let found = layout::holdings(r.key, range(&resp.op_responses()[0]))?;
        if let Some(h) = found.first() {
            attempt.disarm();
            self.revoke_later(lease);
            return Ok(Acquire::Held(self.holder(r.key, h).await?));
        }
        // Only keys of deeper locks (`key/a/…`) are under the prefix: put ours, then see
        // whether it is the lowest holding key, as etcd's lock recipe does.
        let txn = Txn::new()
            .when([
                Compare::create_revision(name.clone(), CompareOp::Equal, 0),
                live(),
            ])
            .and_then([put, prefix_get(r.key)]);
        let resp = kv.txn(txn).await.map_err(|e| self.op_error(&doing(), e))?;
        if !resp.succeeded() {
            return Err(rejected(format!(
                "lock '{}': the new holding key already exists (or the attempt was cancelled)",
                r.key
            )));
        }
        let found = layout::holdings(r.key, range(&resp.op_responses()[1]))?;
        let Some(mine) = found.iter().find(|h| h.name == name) else {
            return Err(rejected(format!(
                "lock '{}': the new holding key vanished",
                r.key
            )));
        };
        if found[0].name == name {
            return Ok(Acquire::Acquired(Lease {
                fence: Some(mine.fence()),
                ttl: r.ttl,
            }));
        }
        // Someone came first: take ours back.
        let mine = mine.clone();
        self.end(r.key, &mine).await?;
        attempt.disarm();
        self.revoke_later(lease);
        Ok(Acquire::Held(self.holder(r.key, &found[0]).await?))
    }

    /// The holding of `owner` on `key`, if it holds it.
    async fn owned(&self, key: &str, owner: &str) -> Result<Option<Holding>, StoreError> {
        let (found, _) = self.holdings(key).await?;
        Ok(found.into_iter().next().filter(|h| h.is_owned_by(owner)))
    }

    pub async fn release(self: &Arc<Self>, key: &str, owner: &str) -> Result<bool, StoreError> {
        let Some(h) = self.owned(key, owner).await? else {
            return Ok(false);
        };
        let ended = self.end(key, &h).await?;
        if ended {
            self.revoke_later(h.lease);
        }
        Ok(ended)
    }

    pub async fn extend(
        self: &Arc<Self>,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let Some(h) = self.owned(key, owner).await? else {
            return Ok(None);
        };
        let record = h.record.clone().expect("owned holdings are cadenas'");
        let doing = || format!("extending lock '{key}'");
        let secs = ttl.map_or(0, lease_secs);
        if secs != 0 && h.lease != 0 && record.lease_secs == secs {
            // Same ttl: keep the lease alive, then check that the key still hangs on it.
            let kept = self
                .client()
                .await?
                .lease_client()
                .keep_alive(h.lease)
                .await;
            match kept {
                Ok(_) => {}
                // The lease ran out (or was revoked).
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    return Ok(None)
                }
                Err(e) => return Err(self.op_error(&doing(), e)),
            }
            let resp = self
                .client()
                .await?
                .kv_client()
                .get(h.name.clone(), None)
                .await
                .map_err(|e| self.op_error(&doing(), e))?;
            let still = resp
                .kvs()
                .first()
                .is_some_and(|kv| kv.create_revision() == h.revision && kv.lease() == h.lease);
            return Ok(still.then_some(Lease {
                fence: Some(h.fence()),
                ttl,
            }));
        }
        // Another ttl (or none): a new lease, and the key moved onto it if it is still ours.
        let lease = match ttl {
            Some(_) => self.grant(key, secs).await?.0,
            None => 0,
        };
        let value = Record {
            lease_secs: secs,
            ..record
        }
        .to_value();
        let txn = Txn::new()
            .when([
                Compare::create_revision(h.name.clone(), CompareOp::Equal, h.revision),
                Compare::lease(h.name.clone(), CompareOp::Equal, h.lease),
            ])
            .and_then([TxnOp::put(
                h.name.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = self.client().await?.kv_client().txn(txn).await;
        let moved = match resp {
            Ok(resp) => resp.succeeded(),
            Err(e) => {
                self.revoke_later(lease);
                return Err(self.op_error(&doing(), e));
            }
        };
        if !moved {
            self.revoke_later(lease);
            return Ok(None);
        }
        self.revoke_later(h.lease);
        Ok(Some(Lease {
            fence: Some(h.fence()),
            ttl,
        }))
    }

    pub async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let Some(h) = self.owned(key, owner).await? else {
            return Ok(false);
        };
        let record = h.record.clone().expect("owned holdings are cadenas'");
        let value = Record {
            metadata: metadata.map(str::to_owned),
            ..record
        }
        .to_value();
        let txn = Txn::new()
            .when([Compare::create_revision(
                h.name.clone(),
                CompareOp::Equal,
                h.revision,
            )])
            .and_then([TxnOp::put(
                h.name.clone(),
                value,
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        let resp = self
            .client()
            .await?
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| self.op_error(&format!("setting the metadata of lock '{key}'"), e))?;
        Ok(resp.succeeded())
    }

    /// Removes the holder of `key` (not its waiters: a queued `concurrency.Mutex` waiter
    /// becomes the holder, as after a release). A holder of etcd's lock recipe keeps its
    /// lease, which its session may share with other locks.
    pub async fn force_release(self: &Arc<Self>, key: &str) -> Result<bool, StoreError> {
        for _ in 0..RETRIES {
            let (found, _) = self.holdings(key).await?;
            let Some(h) = found.into_iter().next() else {
                return Ok(false);
            };
            if self.end(key, &h).await? {
                if h.record.is_some() {
                    self.revoke_later(h.lease);
                }
                return Ok(true);
            }
        }
        Err(busy(key, "force-releasing"))
    }

    /// Deletes every holding key of `r.key` (holder and waiters) and puts ours, in one
    /// transaction conditioned on nothing under the prefix having changed since the read.
    pub async fn take_over(
        self: &Arc<Self>,
        r: &AcquireRequest<'_>,
    ) -> Result<TakeOver, StoreError> {
        let (lease, name, record) = self.new_holding(r).await?;
        let answer = self.take_over_with(r, lease, &name, &record).await;
        if answer.is_err() {
            self.revoke_later(lease);
        }
        answer
    }

    async fn take_over_with(
        self: &Arc<Self>,
        r: &AcquireRequest<'_>,
        lease: i64,
        name: &[u8],
        record: &Record,
    ) -> Result<TakeOver, StoreError> {
        let doing = || format!("taking over lock '{}'", r.key);
        let (mut found, mut read_at) = self.holdings(r.key).await?;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                // Other take-overs won the race: step aside a random moment, so that one
                // of the racers gets through each round.
                let most = 1u64 << attempt.min(5);
                let pause = rand::random::<u64>() % most;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let mut when =
                vec![
                    Compare::mod_revision(layout::prefix(r.key), CompareOp::Less, read_at + 1)
                        .with_prefix(),
                ];
            let mut ops = Vec::new();
            for h in &found {
                when.push(Compare::create_revision(
                    h.name.clone(),
                    CompareOp::Equal,
                    h.revision,
                ));
                ops.extend(
                    self.end_ops(&h.name, h.lease != 0 && h.record.is_some())
                        .await?,
                );
            }
            ops.push(TxnOp::put(
                name.to_vec(),
                record.to_value(),
                Some(PutOptions::new().with_lease(lease)),
            ));
            let txn = Txn::new()
                .when(when)
                .and_then(ops)
                .or_else([prefix_get(r.key)]);
            let resp = self
                .client()
                .await?
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| self.op_error(&doing(), e))?;
            if !resp.succeeded() {
                // The keys as they are now, for the next round.
                found = layout::holdings(r.key, range(&resp.op_responses()[0]))?;
                read_at = resp.header().map_or(0, |h| h.revision());
                continue;
            }
            for h in found.iter().filter(|h| h.record.is_some()) {
                self.revoke_later(h.lease);
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(TakeOver {
                lease: Lease {
                    fence: Some(revision as u64),
                    ttl: r.ttl,
                },
                displaced: found.first().map(|h| Displaced {
                    owner: h.owner(),
                    fence: Some(h.fence()),
                }),
            });
        }
        Err(busy(r.key, "taking over"))
    }

    pub async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let (found, _) = self.holdings(key).await?;
        match found.first() {
            Some(h) => Ok(Some(self.info(key, h).await?)),
            None => Ok(None),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let resp = self
            .client()
            .await?
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.op_error(&format!("listing locks under '{prefix}'"), e))?;
        // The holder of each lock: its holding key with the lowest create revision. Keys
        // that are not holdings (foreign data) are not locks and are left out.
        let mut holders: std::collections::BTreeMap<&str, Holding> = Default::default();
        for kv in resp.kvs() {
            let Some(lock) = layout::lock_of(kv.key()).filter(|l| l.starts_with(prefix)) else {
                continue;
            };
            let Ok(h) = layout::read(lock, kv) else {
                continue;
            };
            match holders.get(lock) {
                Some(old) if old.revision < h.revision => {}
                _ => {
                    holders.insert(lock, h);
                }
            }
        }
        let mut listed = Vec::with_capacity(holders.len());
        for (lock, h) in holders {
            listed.push(self.info(lock, &h).await?);
        }
        Ok(listed)
    }
}

fn busy(key: &str, doing: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Transient,
        format!("{doing} lock '{key}': its keys kept changing; try again"),
    )
}
