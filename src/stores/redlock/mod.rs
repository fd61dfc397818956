//! Redlock: one lock over N independent Redis masters (`redlock://h:p,h:p,h:p`).
//!
//! A lock is held when a majority of the masters — the quorum, N/2+1 — granted it, so it
//! survives the loss of up to (N−1)/2 of them: with 5 masters, two may be down. The masters
//! are independent servers (not replicas of each other, not a Cluster); use 3 or 5. The
//! algorithm is the one the Redis documentation calls *distlock*; @leverege/lock and
//! node-redlock implement it for Node.js.
//!
//! ```text
//! redlock://[user:pass@]host:port,host:port,host:port[/db][?options]
//! redlock+tls://…                                   (every node over TLS)
//! ```
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `node_timeout` | `250ms` | how long one node may take to answer before it counts as failed |
//! | `drift_factor` | `0.01` | the share of the ttl set aside for clock drift |
//! | `retry_delay` | `200ms` | pause between the tries of a waiting `acquire` … |
//! | `retry_jitter` | `100ms` | … varying by up to this much either way |
//! | `retry_count` | `-1` | retries after the first try; negative = until the retry timeout |
//! | `fences` | `true` | hand out fences (see "Fencing"); `false` saves each node about 40 % of its work per cycle, and gives no fences and no elections |
//! | `ca_file`, `connect_timeout`, `timeout` | | passed on to every node, as for `redis://` |
//!
//! The same settings are methods of [`RedlockBuilder`] (which win over the URL's).
//!
//! # When Redlock is the right choice — and when it is not
//!
//! Locks are taken for one of two reasons. **Efficiency**: the lock saves work — a report
//! is built once, not three times; an API is polled by one worker, not all of them. If two
//! holders overlap once in a long while, something is done twice and nobody is hurt.
//! **Correctness**: the lock protects data — two holders at once corrupt a file, double-book
//! a seat, spend money twice.
//!
//! Redlock suits the first: it keeps the lock through the loss of a minority of servers,
//! where a single Redis is a single point of failure. It is not enough for the second.
//! Martin Kleppmann's critique ("How to do distributed locking", 2016) shows why: a lease
//! that expires by the clock cannot tell its holder that it is over. A holder that pauses
//! (a garbage-collection stop, a swapped-out page, a slow network, a suspended VM) past its
//! validity still believes it holds the lock while another client legitimately takes it, and
//! both write. The defence is a *fencing token*: a number that grows with each acquisition,
//! sent with every write, so the protected resource rejects writes carrying an older one.
//! Redlock's safety also rests on timing assumptions — bounded network delay, bounded
//! process pauses, clocks that run at about the same rate — that a real network does not
//! promise. Salvatore Sanfilippo's reply argues these assumptions are reasonable in
//! practice; the disagreement is about what "safe" must mean. This store hands out fences
//! (below), under one more such assumption. Our advice: if a double holder would corrupt
//! something, make the resource check the fence — and prefer a store whose fences need no
//! assumption about clocks (PostgreSQL, MySQL, etcd, or a single Redis); use Redlock when
//! availability through server failures matters more.
//!
//! ## Fencing
//!
//! Every node keeps a fence counter per key (the Redis store's layout). An acquire's `MULTI`
//! on each node also bumps the counter and reads the node's `TIME`; the node's fence is the
//! larger of the two (the time in microseconds), and the lease's fence is the largest fence
//! among the nodes that granted it. A release sends the holding's fence to every node, and
//! each node that still has the holding sets its counter to it in the release's script (no
//! fence this node handed out is higher: no other holding of the key was granted there
//! since). So:
//!
//! - the next holder's quorum shares at least one node with the old holder's. **If that
//!   node took the release**, its counter is at or above the released fence, and the new
//!   fence is higher — no clock involved;
//! - **if it did not** (the holder paused or crashed, or its release did not reach that
//!   node), the old holding expired there first: the new holder took the key at least a ttl
//!   after the old one on that node, whose time has moved on by as much. The new fence is
//!   higher **as long as the nodes' clocks agree to within the lease's validity** (the ttl
//!   less the time the acquire took; NTP keeps clocks to milliseconds, ttls are seconds). A
//!   node that restarted empty takes its fences from its clock, so the same holds.
//!
//! So a resource that rejects writes with a fence below the highest it has seen turns away
//! the late writes of a holder that paused past its lease (Kleppmann's scenario), under that
//! one clock assumption, which single-server stores do not need. Like the Redis store's
//! fast path, a holding without a record (no metadata) does not show its fence through
//! `inspect` or `list` (`inspect_fence: false`); a recorded one does (below). `extend`
//! returns no fence. Leader elections work on this store, their terms being these fences.
//!
//! **The price, and `fences=false`.** Counting and reading `TIME` on each acquire and
//! setting the counter on each release make a node's work per acquire+release cycle 1.69×
//! what it is without (49,512 against 29,356 Redis instructions, BENCHMARKS.md "Redlock");
//! where the nodes' CPU bounds the rate, Redlock runs at up to that much less. `fences=false`
//! (or [`RedlockBuilder::fences`]) skips all of it: leases have no fence, the store declares
//! `fencing: false`, and elections are refused.
//!
//! **Mixed versions.** Processes of the version before fences on Redlock exclude this
//! version's holders as before (the lock key is still taken with `SET NX`), hand out no
//! fences and do not raise counters at release: with them in the fleet, a fence after their
//! releases rests on the clock assumption alone.
//!
//! ## No take-over
//!
//! Taking a held lock by force ([`Store::take_over`], `cadenas acquire --force`) must be one
//! atomic step, and N independent masters have none: a take-over applied node by node can
//! leave one holder on some nodes and the other on the rest, with no quorum for either, and
//! another client can win a majority in between. This store declares `take_over: false`
//! and answers `Unsupported`; `force_release` then `acquire` is the two-step substitute, and
//! another client may take the key between the two.
//!
//! ## No semaphores or read-write locks
//!
//! A group's count cannot be kept across a quorum of independent nodes: each node counts
//! only the holders it granted, so with 2 permits on three nodes, holders granted by nodes
//! A and B, B and C, A and C each have a majority while no node sees more than two: three
//! holders of two permits. Readers and a writer would exclude each other through their
//! quorums' shared node, as mutexes do, but a group's per-holder fences and the
//! writer-waiting marker are not reconciled across nodes. This store declares `semaphores`
//! and `shared_locks` false (`Unsupported`); hold them on one Redis, Sentinel or Cluster.
//!
//! ## Persistence and restarts
//!
//! A node that restarts without the keys it had (no persistence, or AOF with `appendfsync
//! everysec` losing the last second) can hand a lock it already gave to a second client: with
//! 5 nodes, a lock on nodes A, B, C is lost by C's restart, and D, E and the empty C make a new
//! majority. Either run every node with AOF and `appendfsync always`, or use *delayed
//! restarts* as the distlock page advises: keep a crashed node down for longer than the
//! longest ttl in use, so every lock it knew has expired before it votes again. For the same
//! reason this store does not support locks without ttl (`ttl_none: false`, acquiring one
//! fails with `Unsupported`): no restart delay covers a lock that never expires, and a grant
//! left behind on a minority of nodes by a failed try could never expire either.
//!
//! # How it works
//!
//! - **Acquire** sends the Redis store's acquire to every node at once (one `MULTI`:
//!   `SET NX GET PX`, the fence counter's `INCR`, `TIME`), each bounded by `node_timeout`. The lock is ours when a quorum granted it and the
//!   *validity* `ttl − elapsed − drift` is positive, with `drift = ttl × drift_factor + 2 ms`.
//!   Otherwise the grants of this try are released on every node that granted or did not
//!   answer, and the try reports the lock as held (by whoever most nodes named), or fails
//!   with an error naming the unreachable nodes when fewer than a quorum answered at all.
//!   The answer comes as soon as it is decided: one hung node does not slow an acquire
//!   down. When the lock is ours, requests still under way then complete in the background,
//!   so a lock taken on a quorum still reaches every node that answers. A *recorded*
//!   acquire (with metadata, or a candidate's in an election) is the exception: it writes
//!   each node's holding record (a script), waits for every node (each bounded by
//!   `node_timeout`), then tells every node the lease's fence for its record, so that
//!   `inspect`, `list` and election observers show the holder's own fence; until a node is
//!   told, its record says `0` and `inspect` reads again rather than show a node's fence.
//! - **`remaining_time`** is the validity: the lease the store reports is `ttl − drift`
//!   counted from when the request was sent (what [`Lease::ttl`] means), so a guard's
//!   `remaining_time` right after acquiring is `ttl − elapsed − drift`.
//! - **Release, extend, set_metadata** go to every node (a release with the holding's fence,
//!   which each node that releases it sets its counter to); each succeeds when a quorum confirms it (extend also needs a positive new validity). An extend that a quorum does
//!   not confirm answers "not owned", which the lock layer turns into `NotOwned` or the lost
//!   signal. When too many nodes fail to tell, the operation fails with an error.
//! - **Inspect and list** show the quorum's view: a lock held by the same owner on a quorum
//!   of nodes, its remaining time the moment fewer than a quorum would still hold it. `list`
//!   waits for every node (at least one second each); a lock held on a bare quorum that
//!   includes an unreachable node is missed.
//! - **Force release** removes the key on every node; it fails if fewer than a quorum answered.
//! - **Hand-off**: a release publishes on every node (the Redis store's scripts), and the store
//!   subscribes on every node (`notify: true`); a waiter wakes at the first message. Expiry
//!   publishes nothing: waiters fall back to polling, capped by the holder's remaining time.
//! - A key is never split across nodes: every node holds the whole lock, in the Redis
//!   store's layout (so each node can also be inspected with `redis-cli`).
//!
//! # Retries
//!
//! Waiting, retrying and the watchdog live in the lock layer, as for every store. This store
//! turns `retry_delay`, `retry_jitter` and `retry_count` into a [`Retry`] — a pause drawn
//! uniformly from `retry_delay ± retry_jitter`, and `retry_count + 1` tries (unlimited when
//! negative) — that [`Store::default_retry`] suggests and [`Locks`](crate::Locks) uses unless
//! its builder or the lock is given a policy of its own. With notifications the pause is only
//! the fall-back. node-redlock's `retryCount` defaults to 10; here the default is unlimited,
//! like every cadenas store: bound the wait with `Retry::timeout` or `retry_count`.
//!
//! # Cancel safety
//!
//! The requests of an operation run in the caller's task, all nodes at once; none gets a
//! task of its own unless it is still running when the outcome is known or the caller stops
//! waiting. Then a release, extend or metadata change finishes on a task, so a dropped one
//! still reaches every node. A dropped acquire gives back what it took: each node's request
//! still under way is the Redis store's cancel-safe acquire (dropped before its answer, it
//! releases exactly the value it wrote, after it on the same connection, so the release
//! cannot overtake it), and the grants that had answered are released on a task.

mod acquire;
mod options;
mod quorum;
mod records;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use self::acquire::{collect, finish, Grants, Unfinished};
use self::options::{NodeUrl, Settings};
pub use self::options::{
    RedlockBuilder, DEFAULT_DRIFT_FACTOR, DEFAULT_NODE_TIMEOUT, DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER,
};
use self::quorum::{failure, holder, outcome, timed, Answer, Outcome, Tally};
use crate::error::Result;
use crate::notify::ReleaseNotifier;
use crate::retry::Retry;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Lease, LockInfo, Store, StoreError, StoreErrorKind,
    Subscription,
};
use crate::stores::redis::RedisStore;
use crate::url::StoreUrl;

/// A lock store over N independent Redis masters; see the [module docs](self).
///
/// ```no_run
/// # async fn example() -> cadenas::Result<()> {
/// use cadenas::stores::redlock::RedlockStore;
/// let store = RedlockStore::connect("redlock://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379").await?;
/// assert_eq!(store.quorum(), 2);
/// let locks = cadenas::Locks::new(store);
/// # let _ = locks;
/// # Ok(()) }
/// ```
pub struct RedlockStore {
    nodes: Vec<Arc<RedisStore>>,
    names: Vec<String>,
    describe: String,
    settings: Settings,
    notifier: Arc<ReleaseNotifier>,
}

impl std::fmt::Debug for RedlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockStore")
            .field("store", &self.describe)
            .field("quorum", &self.quorum())
            .finish()
    }
}

impl RedlockStore {
    /// Opens `redlock://[user:pass@]host:port,host:port,…[/db]` (`redlock+tls://…` for TLS)
    /// with default settings and the URL's options (see the [module docs](self)).
    ///
    /// Nodes are connected on first use, so the store opens even while some are down; a
    /// malformed URL, a node listed twice or a bad option is a `Config` error.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is connected yet.
    pub async fn connect(url: &str) -> Result<RedlockStore> {
        RedlockBuilder::default().connect(url).await
    }

    /// Opens an already parsed URL (the lock layer has taken its own options).
    pub async fn from_url(url: StoreUrl) -> Result<RedlockStore> {
        RedlockBuilder::default().from_url(url).await
    }

    /// Settings beyond the URL's: node timeout, drift factor, retries.
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }

    pub(crate) async fn open(
        describe: String,
        urls: Vec<NodeUrl>,
        settings: Settings,
    ) -> Result<RedlockStore> {
        let notifier = ReleaseNotifier::new();
        let mut nodes = Vec::with_capacity(urls.len());
        let mut names = Vec::with_capacity(urls.len());
        for node in urls {
            nodes.push(Arc::new(
                RedisStore::lazy_node(&node.url, notifier.clone(), settings.fences).await?,
            ));
            names.push(node.name);
        }
        Ok(RedlockStore {
            nodes,
            names,
            describe,
            settings,
            notifier,
        })
    }

    /// How many nodes must agree: N/2+1.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// The nodes, as `host:port`.
    pub fn nodes(&self) -> &[String] {
        &self.names
    }

    /// How long one node may take to answer.
    pub fn node_timeout(&self) -> Duration {
        self.settings.node_timeout
    }

    /// What a lease of `ttl` sets aside for clock drift: `ttl × drift_factor + 2 ms`.
    pub fn drift(&self, ttl: Duration) -> Duration {
        self.settings.drift(ttl)
    }

    /// The retry policy of the `retry_*` options (what [`Store::default_retry`] answers).
    pub fn retry(&self) -> Retry {
        self.settings.retry()
    }

    /// Runs `op` on every node at once, each bounded by the node timeout, until `is_yes`
    /// answers decide a quorum (`until_all`: until every node answered). Requests still
    /// running once it is decided, or when the caller drops this future, finish on a task
    /// of their own.
    async fn on_all<T, F, Fut>(
        &self,
        op: F,
        is_yes: impl Fn(&T) -> bool,
        until_all: bool,
    ) -> (Tally, Vec<Answer<T>>)
    where
        T: Send + 'static,
        F: Fn(Arc<RedisStore>) -> Fut,
        Fut: Future<Output = std::result::Result<T, StoreError>> + Send + 'static,
    {
        let timeout = self.settings.node_timeout;
        let mut pending = Unfinished(
            self.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let fut = timed(timeout, op(n.clone()));
                    async move { (i, fut.await) }
                })
                .collect(),
        );
        let quorum = self.quorum();
        let mut answers: Vec<Answer<T>> = self.nodes.iter().map(|_| None).collect();
        collect(
            &mut pending.0,
            &mut answers,
            |_, _| {},
            |a| !until_all && Tally::of(a, &is_yes).decided(quorum),
        )
        .await;
        (Tally::of(&answers, is_yes), answers)
    }

    fn failure<T>(&self, answers: &[Answer<T>], what: &str) -> StoreError {
        failure(&self.names, answers, self.quorum(), what)
    }
}

fn no_ttl_none() -> StoreError {
    StoreError::new(
        StoreErrorKind::Unsupported,
        "Redlock does not support locks without ttl: give the lock a ttl",
    )
}

#[async_trait]
impl Store for RedlockStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn kind(&self) -> &'static str {
        crate::scheme::REDLOCK.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: self.settings.fences,
            notify: true,
            ttl_none: false,
            list: true,
            shared: true,
            expiry_watch: false,
            take_over: false,
            inspect_fence: false,
            shared_records: true,
            // See "No semaphores or read-write locks" above.
            semaphores: false,
            shared_locks: false,
        }
    }

    /// Cancel safe by itself: each node's request gives back what it took if dropped before
    /// its answer, and grants already answered are undone unless this future returned the
    /// lock (see the module docs).
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        let ttl = request.ttl.ok_or_else(no_ttl_none)?;
        let quorum = self.quorum();
        let granted = |a: &Acquire| matches!(a, Acquire::Acquired(_));
        let timeout = self.settings.node_timeout;
        let (key, owner): (Arc<str>, Arc<str>) = (request.key.into(), request.owner.into());
        let started = Instant::now();
        let mut grants = Grants::new(key.clone(), owner.clone(), timeout);
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| acquire::acquire_on(i, node.clone(), &request, &key, &owner, timeout))
            .collect();
        let mut answers: Vec<Answer<Acquire>> = self.nodes.iter().map(|_| None).collect();
        let fences = self.settings.fences;
        // Its nodes' records are to be told the lease's fence (see below).
        let recorded = fences && (request.recorded || request.metadata.is_some());
        // The highest of the granting nodes' fences (see "Fencing" above).
        let mut fence = None;
        collect(
            &mut pending,
            &mut answers,
            |i, answer| {
                if let Ok(Acquire::Acquired(lease)) = answer {
                    grants.add(self.nodes[i].clone());
                    fence = fence.max(lease.fence.filter(|_| fences));
                }
            },
            // A recorded holding hears every node (each bounded by the node timeout), so
            // that no grant, and no node's own fence in its record, comes after the fence
            // is known.
            |a| !recorded && Tally::of(a, granted).decided(quorum),
        )
        .await;
        let tally = Tally::of(&answers, granted);
        if let (true, true, Some(fence)) = (tally.yes >= quorum, recorded, fence) {
            // The nodes' records hold each node's own fence: they are told the lease's, so
            // that whichever quorum a reader hears shows it. The grants stay armed meanwhile.
            self.record_fence(&key, &owner, fence).await;
        }
        let elapsed = started.elapsed();
        let drift = self.settings.drift(ttl);
        if tally.yes >= quorum && elapsed + drift < ttl {
            // Nodes still answering keep their grants: the lock reaches every node it can.
            grants.keep();
            finish(pending);
            return Ok(Acquire::Acquired(Lease {
                fence,
                ttl: Some(ttl - drift),
            }));
        }
        // Not ours. Requests still under way are dropped, and each gives back exactly what
        // it took (by its attempt id: never an earlier lease of the same owner); the grants
        // that answered are released now.
        drop(pending);
        grants.undo().await;
        if tally.yes + tally.no >= quorum {
            // Held by someone, split between contenders, or granted too slowly: try again.
            Ok(Acquire::Held(holder(&answers)))
        } else {
            Err(self.failure(&answers, &format!("acquire '{}'", request.key)))
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.release_holding(key, owner, None).await
    }

    /// Each node that releases the holding sets its fence counter to `fence` in the same
    /// script (see "Fencing" above).
    async fn release_holding(
        &self,
        key: &str,
        owner: &str,
        fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        let (k, o) = (key.to_owned(), owner.to_owned());
        let (tally, answers) = self
            .on_all(
                |n| {
                    let (k, o) = (k.clone(), o.clone());
                    // Without fences (`fences=false`) the counter is left alone.
                    let fence = fence.filter(|_| self.settings.fences);
                    async move { n.release_raising(&k, &o, fence).await }
                },
                |released| *released,
                // Every node (each bounded by the node timeout): whoever looks next must find
                // the lock gone everywhere, not on a bare quorum.
                true,
            )
            .await;
        match outcome(tally, self.quorum()) {
            Outcome::Yes => Ok(true),
            Outcome::No => Ok(false),
            Outcome::Unknown => Err(self.failure(&answers, &format!("release '{key}'"))),
        }
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let ttl = ttl.ok_or_else(no_ttl_none)?;
        let (k, o) = (key.to_owned(), owner.to_owned());
        let started = Instant::now();
        let (tally, answers) = self
            .on_all(
                |n| {
                    let (k, o) = (k.clone(), o.clone());
                    async move { n.extend(&k, &o, Some(ttl)).await }
                },
                Option::is_some,
                false,
            )
            .await;
        let elapsed = started.elapsed();
        let drift = self.settings.drift(ttl);
        match outcome(tally, self.quorum()) {
            Outcome::Yes if elapsed + drift < ttl => Ok(Some(Lease {
                fence: None,
                ttl: Some(ttl - drift),
            })),
            Outcome::Yes | Outcome::No => Ok(None),
            Outcome::Unknown => Err(self.failure(&answers, &format!("extend '{key}'"))),
        }
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (k, o, m) = (
            key.to_owned(),
            owner.to_owned(),
            metadata.map(str::to_owned),
        );
        let (tally, answers) = self
            .on_all(
                |n| {
                    let (k, o, m) = (k.clone(), o.clone(), m.clone());
                    async move { n.set_metadata(&k, &o, m.as_deref()).await }
                },
                |set| *set,
                // Every node: a following inspect must read the new metadata.
                true,
            )
            .await;
        match outcome(tally, self.quorum()) {
            Outcome::Yes => Ok(true),
            Outcome::No => Ok(false),
            Outcome::Unknown => Err(self.failure(&answers, &format!("set metadata of '{key}'"))),
        }
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let k = key.to_owned();
        let (tally, answers) = self
            .on_all(
                |n| {
                    let k = k.clone();
                    async move { n.force_release(&k).await }
                },
                |removed| *removed,
                true,
            )
            .await;
        if tally.yes + tally.no < self.quorum() {
            return Err(self.failure(&answers, &format!("force release '{key}'")));
        }
        Ok(tally.yes > 0)
    }

    /// The quorum's view, read again while a recorded fence is on its way (`records`).
    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inspect_settled(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.list_quorum(prefix).await
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        // Registered first, so a release announced while the nodes subscribe is kept.
        let subscription = self.notifier.subscribe(key);
        let k = key.to_owned();
        let (tally, _) = self
            .on_all(
                |n| {
                    let k = k.clone();
                    async move { Ok(n.ensure_subscribed(&k).await) }
                },
                |confirmed| *confirmed,
                false,
            )
            .await;
        if tally.yes < self.quorum() {
            tracing::debug!(
                "{}: release notifications for '{key}' confirmed by {} nodes only; waiters may poll",
                self.describe,
                tally.yes
            );
        }
        Ok(Some(subscription))
    }

    fn default_retry(&self) -> Option<Retry> {
        Some(self.settings.retry())
    }

    async fn close(&self) -> Result<(), StoreError> {
        for node in &self.nodes {
            node.close().await?;
        }
        Ok(())
    }
}
