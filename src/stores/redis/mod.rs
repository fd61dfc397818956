//! The Redis store: `redis://`, `rediss://` (TLS), `redis+cluster://` (Redis Cluster) and
//! `redis+sentinel://` (a primary and replicas watched by Redis Sentinel; `rediss+sentinel://`
//! with TLS).
//! Works with Redis-protocol servers that run Lua scripts: Redis ≥ 6.2, Valkey, KeyDB,
//! Dragonfly, Upstash.
//!
//! # Layout (compatible with Verrou)
//!
//! The lock for stored key `K` (namespace already applied by the lock layer) is the Redis
//! string `K`, with `PX` ttl or no expiry, set with `SET NX` — what Verrou's Redis store
//! does, so Node.js processes on `@verrou/core` and Rust processes on cadenas exclude each
//! other. Its value is the owner, a NUL and the id of the request that took it
//! (`owner\0attempt`; a value without a NUL, such as Verrou's, is all owner). Extra state
//! lives in derived keys, named in [`keys`] so that they share `K`'s Cluster slot:
//!
//! - `__cadenas:fence…K…` — the fence counter, an integer that **never expires**;
//! - `__cadenas:state…K…` — the holding's record, a hash (owner, fence, metadata), expiring
//!   [`EXPIRY_GRACE_MS`] after the lock (deleted with it on release). Written only when it is
//!   asked for: by an acquire with metadata or one that asks to be recorded (a leader
//!   election's campaign, whose term observers read), by `set_metadata`, by a take-over, and
//!   by every acquire of a store opened with `records=true` (below);
//! - `__cadenas:expired…K…` — the state of a holding that expired and whose key was taken
//!   over before an expiry watcher claimed it (kept for the rest of its grace);
//! - `__cadenas:released…K…` — the pub/sub channel on which releases are announced;
//! - `__cadenas:group…K…` and `__cadenas:writer…K…` — the group record of readers or permit
//!   holders, and a waiting writer's marker (below, "Semaphores and read-write locks").
//!
//! An acquire is one `MULTI`/`EXEC` of two native commands, `SET K value NX GET PX ttl` and
//! `INCR` of the fence counter (or one script when it writes the record); every other
//! operation is one Lua script (sent by `EVALSHA`, re-loaded transparently after `SCRIPT
//! FLUSH`). A key holding another type than a string — other than a group, a sorted set
//! beside its group record — is someone else's data: every operation answers a `Rejected`
//! error and writes nothing (an acquire may use up a fence number on it).
//!
//! # Semaphores and read-write locks
//!
//! The store holds semaphores ([`LockKind::Permits`](crate::LockKind::Permits)) and readers
//! ([`LockKind::Shared`](crate::LockKind::Shared)) on a single node, a Cluster and a
//! Sentinel service alike. Readers and the permit holders of a semaphore — a *group* — hold
//! the lock key `K` itself, as another Redis type: a **sorted set** of owners, each scored
//! by the millisecond (by the server's `TIME`) at which its own lease ends (`+inf`: never).
//! Beside it, the group record `__cadenas:group…K…` (a hash, same slot) keeps the kind
//! (`shared` or `permits`), the permit count N, and per holder its fence, the attempt id of
//! the request that took it and its metadata. `K` and its record expire together, when the
//! last lease ends. So the plain exclusive acquire stays the one `MULTI` above: its `SET NX
//! GET` finds a group's key taken (`WRONGTYPE`), and only then does a script say who holds
//! it. The details, script by script, are in `group_scripts`:
//!
//! - a reader's or permit holder's acquire is one script whatever N is (`ZCARD` counts the
//!   holders): it prunes the holders whose lease ended, refuses another N while a semaphore
//!   holds the key (`InvalidInput`, naming both counts), and takes the next fence from the
//!   key's one counter, the exclusive lock's, so fences increase across kinds;
//! - `release`, `extend` and `set_metadata` find the owner's holding in the sorted set;
//!   `inspect` and `list` show every live holder; `force_release` removes them all; a
//!   cancelled acquire's clean-up gives back only the holder with its own attempt id;
//! - every release of a group's holder announces itself on the release channel, so waiters
//!   (readers, permits, writers) are woken by notification; a holder that got in while room
//!   was left wakes the next waiter of its process;
//! - writers are preferred: an exclusive try with a writer-waiting lease that finds readers
//!   or permit holders records `__cadenas:writer…K…` (the writer's owner, expiring with that
//!   lease) unless another writer's live marker is there; a reader of another owner finds
//!   the key held while it lives, and the writer clears it when it takes the key. A writer
//!   that finds the key held by an exclusive holder records no marker, so that the plain
//!   mutex's wait stays what it was: the readers and writers waiting for that holder race
//!   for the key when it is released, and a writer that loses to readers records its marker
//!   at its next try;
//! - the expiry watcher reports the holdings of exclusive locks only: expired holders of a
//!   group are pruned by the scripts (or vanish with the key) without a record.
//!
//! A Verrou process cannot take `K` while a group holds it (its `SET NX` finds the key
//! taken), but anything else it does with the key then (its release, its extend) fails with
//! `WRONGTYPE`; the version before this one sees a group as someone else's data (`Rejected`)
//! the same way. Plain mutexes keep Verrou's layout exactly.
//!
//! # Records: `records=true`
//!
//! By default an acquire writes no record: Redis spends about a third of what a scripted
//! acquire that records costs (BENCHMARKS.md, "Redis server cost per cycle"), and the holder
//! gets its fence all the same. What reads records then has less to read: `inspect`,
//! `cadenas status` and `list` show the owner and the time left but no fence (`None`) for a
//! holding taken without one, a take-over's displaced holder comes without its fence, and
//! the expiry watcher answers `Unsupported` (it reports expired holdings from their
//! records). `redis://…?records=true` makes every acquire of that store write the record (a
//! script instead of the `MULTI`), so all of it works; for the expiry watcher, every client
//! that takes the keys it watches needs it. [`Capabilities::inspect_fence`] and
//! [`Capabilities::expiry_watch`] say which one a store is.
//!
//! # Fencing: cost and limits
//!
//! A fence is one more than the last one of its key (`INCR` on the fence counter key; an
//! acquire that found the key held used up a number too, so fences have gaps); a counter
//! that does not exist yet starts at the server's time in microseconds, so fences look like
//! `1764000000123456`. They increase strictly per key, and they keep increasing
//! when the counters are lost with the data: a counter created after the loss starts above
//! every fence handed out before, as long as a key was locked less than once per
//! microsecond on average and the server's clock does not step back. The counter is never
//! deleted: each key ever locked costs one small string key in Redis memory for good (about
//! 70 bytes plus the key's length). Deleting counters (`__cadenas:fence*`) is safe for
//! fences (the time start takes over) but buys little.
//!
//! Redis keeps data in memory. If the node restarts without persistence (or with `appendfsync
//! everysec`, losing up to a second), or a replica without the latest writes is promoted,
//! **locks held at that moment vanish** and a second holder may take the key. After a
//! restart that lost everything, fences go on above the old ones, so a resource that checks
//! fences rejects the old holder's writes; after a failover to a replica that missed the
//! last few writes, a counter that survived but lags can hand out a fence again. The old
//! holder notices at its next extend (its watchdog reports the lock as lost); the lock is
//! never re-established behind its back. Run with AOF `appendfsync always` (and `WAIT` on
//! replicas) when holders must not even briefly overlap. A Sentinel store does not repeat
//! fences after a failover (below); a replicated primary reached through `redis://` (a
//! hosted service's failover behind one address) can.
//!
//! # Sentinel
//!
//! `redis+sentinel://[user:pass@]host[:26379][,host:port…]/SERVICE[/db]` finds the primary
//! through the sentinels and follows failovers; what asynchronous replication means for a
//! lock, and why its fences are at least the server's time, is in [`sentinel`].
//!
//! # Cluster
//!
//! All keys of one lock are in one slot, so each script runs on one master. The connection
//! follows `MOVED` and `ASK` redirections and refreshes its slot map, so a lock survives the
//! resharding of its slot: `MIGRATE` moves the lock key and its derived keys together (same
//! slot), ttl included. While a slot is half migrated, a script whose keys are split
//! between the two nodes gets `TRYAGAIN` and the connection retries it, so operations on
//! that slot slow down (tested: eight tasks on four locks while their slot travels round
//! three masters six times, key by key: no error, never two holders, fences increasing). Releases are announced with plain `PUBLISH`, which Redis Cluster
//! broadcasts to every node, and the store's one subscriber connection listens on any node
//! (the next seed when it fails). Broadcasting costs cluster-bus traffic per release; it
//! keeps hand-off working across resharding without tracking slot owners. `list` scans every
//! master.
//!
//! # Expiry watcher
//!
//! [`Locks::watch_expiries`](crate::Locks::watch_expiries): the first sweep turns on the
//! server's `expired` keyspace events if they are off (`CONFIG SET notify-keyspace-events`
//! adding `Ex`; where `CONFIG` is not allowed, as on some hosted services, set it in the
//! server's configuration or the sweep answers `Unsupported`), and listens to them on a
//! connection of its own — on a Cluster, one per master, as the Cluster has them when the
//! watcher starts (restart the watcher after adding masters). Redis reports an expiry
//! when it actually deletes the key: at once when someone touches it, otherwise within about
//! 100 ms on a small key space, later on a large one. Each expired holding is reported by
//! one watcher, whichever process wins the claim; records older than [`EXPIRY_GRACE_MS`] are
//! gone. How: a holding's state hash outlives its lock key by the grace period (a release
//! deletes it, an expiry does not), an acquire that takes over such a key moves the old state
//! to the key's `__cadenas:expired…` record, and each sweep claims — deletes and reports — the
//! records of the keys whose `expired` events arrived, plus, on its first sweep and after the
//! event connection dropped, those a `SCAN` finds. A take-over ([`Store::take_over`], one
//! script) of a live lock deletes the displaced holding's state, so a holding that was taken
//! over is never reported as expired; one of an expired lock moves its state to the
//! expired-holding record, as an acquire does.
//!
//! # Mixed versions
//!
//! A rolling deploy may run this version beside the one before it on the same keys. Both
//! take the lock key with `SET NX` and count fences on the same counter, so the two exclude
//! each other and fences keep increasing whichever version takes a key
//! (`tests/redis_mixed_versions.rs` runs the previous version's scripts against this one).
//! What differs: this version writes `owner\0attempt` where the previous wrote the owner,
//! and no record by default. So the previous version's `inspect` and `cadenas status` show
//! this version's holders with the NUL and attempt id after the owner and without a fence;
//! the previous version cannot release or extend a holding this version took, even with the
//! same owner (a guard serialized by one and restored by the other, or `cadenas acquire`
//! and `cadenas release` run by different versions) — this version releases either's. A
//! holding the previous version took shows its fence here.
//!
//! # Hand-off
//!
//! `release` and `force_release` publish the key on its channel from inside their script.
//! [`Store::subscribe`] subscribes the store's single pub/sub connection to that channel
//! (confirmed before it returns) and wakes waiters through a [`ReleaseNotifier`]. Expiry
//! publishes nothing: waiters fall back to polling, capped by the holder's remaining ttl
//! that [`Store::try_acquire`] reports.

mod acquire;
mod cancel;
mod conn;
mod expiry;
mod group;
mod group_scripts;
pub mod keys;
mod pubsub;
mod release;
mod reply;
mod scan;
mod scripts;
pub mod sentinel;
mod take_over;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

#[cfg(feature = "redlock")]
pub(crate) use self::conn::OPTIONS;
use self::conn::{bad_reply, op_error, wrong_type, Conn, Settings, Target};
use self::pubsub::Subscriber;
use self::reply::{check_type, int, opt_fence, opt_string, remaining, ttl_ms};
use crate::error::{Error, Result};
use crate::notify::ReleaseNotifier;
use crate::store::{
    Acquire, AcquireRequest, Capabilities, Lease, LockInfo, Store, StoreError, Subscription,
};
use crate::url::StoreUrl;

/// A lock store on Redis (single node, TLS, Cluster or Sentinel).
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> cadenas::Result<()> {
/// use cadenas::stores::redis::RedisStore;
/// let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    conn: Conn,
    describe: String,
    cluster: bool,
    notifier: Arc<ReleaseNotifier>,
    subscriber: Subscriber,
    /// The node, a seed node of a Cluster (a template for the expiry feed's connections to
    /// its masters), or a Sentinel service's primary.
    seed: Target,
    /// `expired` events, from the first sweep of an expiry watcher on.
    expiry: tokio::sync::OnceCell<expiry::ExpiryFeed>,
    /// Prefix → the feed generation at which it was last scanned.
    scanned: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Every acquire writes the holding's record (`records=true`).
    records: bool,
    /// Acquires count fences (not on a Redlock node opened with `fences=false`).
    fences: bool,
    /// Every fence is at least the server's time in microseconds (Sentinel: a promoted
    /// replica's counter may lag, see "Sentinel" above; a Redlock node: its counter may lag
    /// behind the other nodes', see the Redlock store's "Fencing").
    time_fences: bool,
    /// A recorded holding's record says fence `0` until the Redlock store writes the
    /// lease's fence into it ([`RedisStore::record_fence`]): a Redlock node.
    fence_recorded_later: bool,
    /// The server takes `SET … NX GET` (Redis ≥ 7.0): the native acquire path.
    native: std::sync::atomic::AtomicBool,
    /// `key NUL owner` of the writer-waiting markers this store recorded for waiting
    /// writers: the writer clears its marker once it takes the key ([`group`]).
    markers: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How long the record of a holding (its state hash: owner, fence, metadata) outlives a lock
/// that expires without a release, so that an expiry watcher can still report it: one minute.
/// Expiry watchers must sweep more often than that (the default is every second).
pub const EXPIRY_GRACE_MS: u64 = 60_000;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.describe)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `redis://[user:pass@]host[:port][/db]`, `rediss://…` (TLS, certificates
    /// checked against the system's roots, or `?ca_file=PATH`), or
    /// `redis+cluster://[user:pass@]host:port,host:port,…` (`rediss+cluster://` with TLS), or
    /// `redis+sentinel://[user:pass@]host[:26379],…/SERVICE[/db]` ([`sentinel`]).
    ///
    /// Options: `ca_file` (PEM file of the CA to trust for TLS), `connect_timeout` (default
    /// 5s), `timeout` (per command, default 5s). Fails with a `Store` error of kind
    /// `Unavailable` when no server answers (refused, unknown host, TLS, password).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-open connection.
    pub async fn connect(url: &str) -> Result<RedisStore> {
        Self::open(Settings::parse(url)?).await
    }

    /// Connects to an already parsed URL (the lock layer has taken its own options).
    pub async fn from_url(url: StoreUrl) -> Result<RedisStore> {
        Self::open(Settings::from_url(url)?).await
    }

    /// Connects through an existing single-node `redis::Client` (for settings a URL cannot
    /// express, such as client certificates).
    pub async fn from_client(client: redis::Client) -> Result<RedisStore> {
        let info = client.get_connection_info();
        let describe = format!("redis://{}/{}", info.addr(), info.redis_settings().db());
        Self::open(Settings {
            describe,
            nodes: vec![client],
            sentinel: None,
            cluster: false,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            records: false,
        })
        .await
    }

    async fn open(settings: Settings) -> Result<RedisStore> {
        let conn = settings
            .connect()
            .await
            .map_err(|source| Error::store(&settings.describe, "connect", None, source))?;
        let notifier = ReleaseNotifier::new();
        let targets = match &conn {
            Conn::Sentinel(primary) => vec![Target::Primary(primary.clone())],
            _ => settings
                .nodes
                .into_iter()
                .map(|n| Target::Node(Box::new(n)))
                .collect(),
        };
        let seed = targets[0].clone();
        let time_fences = matches!(conn, Conn::Sentinel(_));
        let subscriber = Subscriber::start(targets, notifier.clone());
        Ok(RedisStore {
            conn,
            describe: settings.describe,
            cluster: settings.cluster,
            notifier,
            subscriber,
            seed,
            expiry: tokio::sync::OnceCell::new(),
            scanned: Default::default(),
            fences: true,
            // Sentinel's acquires are scripts that write the record anyway.
            records: settings.records || time_fences,
            time_fences,
            fence_recorded_later: false,
            native: true.into(),
            markers: Default::default(),
        })
    }

    /// One master of a Redlock (`redis://` or `rediss://` URL of a single node): connects
    /// on first use, so a node that is down does not stop the Redlock store from opening,
    /// and wakes waiters through the Redlock store's shared `notifier`. `fences`: its
    /// acquires count fences, at least its time (the Redlock store's `fences` option).
    #[cfg(feature = "redlock")]
    pub(crate) async fn lazy_node(
        url: &str,
        notifier: Arc<ReleaseNotifier>,
        fences: bool,
    ) -> Result<RedisStore> {
        let settings = Settings::parse(url)?;
        if settings.cluster || settings.sentinel.is_some() {
            return Err(Error::config(format!(
                "{}: a Redlock node is a single Redis master, not a Cluster or Sentinel service",
                settings.describe
            )));
        }
        let conn = settings
            .connect_lazy()
            .map_err(|source| Error::store(&settings.describe, "connect", None, source))?;
        let seed = Target::Node(Box::new(settings.nodes[0].clone()));
        let subscriber = Subscriber::start(vec![seed.clone()], notifier.clone());
        Ok(RedisStore {
            conn,
            describe: settings.describe,
            cluster: false,
            notifier,
            subscriber,
            seed,
            expiry: tokio::sync::OnceCell::new(),
            scanned: Default::default(),
            records: false,
            fences,
            time_fences: fences,
            fence_recorded_later: fences,
            native: true.into(),
            markers: Default::default(),
        })
    }

    /// Makes sure release messages of `key` reach the store's notifier; `false` when the
    /// server did not confirm the subscription in time.
    #[cfg(feature = "redlock")]
    pub(crate) async fn ensure_subscribed(&self, key: &str) -> bool {
        self.subscriber.ensure(key).await
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}

impl RedisStore {
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The nodes whose keyspace events the expiry watcher listens to: the node, or every
    /// master of a Cluster (as `CLUSTER SLOTS` lists them when the watcher starts).
    async fn event_nodes(&self) -> std::result::Result<Vec<Target>, StoreError> {
        let (Conn::Cluster(c), Target::Node(seed)) = (&self.conn, &self.seed) else {
            return Ok(vec![self.seed.clone()]);
        };
        let mut nodes = Vec::new();
        for master in scan::masters(&mut c.clone()).await? {
            let client =
                conn::client_at(seed, &master.host, master.port).map_err(|e| op_error(None, e))?;
            nodes.push(Target::Node(Box::new(client)));
        }
        Ok(nodes)
    }

    fn scanned_at(&self, prefix: &str) -> Option<u64> {
        let scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        scanned.get(prefix).copied()
    }

    async fn inspect_one(&self, key: &str) -> std::result::Result<Option<LockInfo>, StoreError> {
        let reply: Vec<Value> = scripts::INSPECT
            .key(key)
            .key(keys::state_key(key))
            .key(keys::group_key(key))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        check_type(key, &reply)?;
        match reply.first().map(|v| int(key, v)).transpose()? {
            Some(1) => {}
            Some(2) => return group::group_info(key, &reply),
            _ => return Ok(None),
        }
        let owner = opt_string(key, reply.get(1))?.ok_or_else(|| bad_reply(key, "no owner"))?;
        let pttl = reply.get(2).map(|v| int(key, v)).transpose()?.unwrap_or(-1);
        Ok(Some(LockInfo::new(
            key,
            owner,
            remaining(pttl),
            opt_fence(key, reply.get(3))?,
            opt_string(key, reply.get(4))?,
        )))
    }
}

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn kind(&self) -> &'static str {
        match &self.conn {
            Conn::Cluster(_) => crate::scheme::REDIS_CLUSTER.kind,
            Conn::Sentinel(_) => crate::scheme::REDIS_SENTINEL.kind,
            Conn::Single(_) => crate::scheme::REDIS.kind,
        }
    }

    /// Everything with `records=true`; without, no fences in inspect, list or a take-over's
    /// displaced holder, and no expiry watcher (they read the holding's record). Semaphores
    /// and read-write locks on every kind of deployment (single node, Cluster, Sentinel).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            inspect_fence: self.records,
            expiry_watch: self.records,
            ..Capabilities::ALL
        }
    }

    /// One `MULTI` (or, with metadata or `records=true`, one script). Cancel safe: if the
    /// future is dropped while the request is in flight, a clean-up releases the lock if, and
    /// only if, this very request took it.
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        self.acquire(request).await
    }

    /// One script; a displaced live holding is never reported by the expiry watcher.
    async fn take_over(&self, r: AcquireRequest<'_>) -> Result<crate::store::TakeOver, StoreError> {
        self.take_over_script(&r).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.release_raising(key, owner, None).await
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        let reply: Vec<Value> = scripts::EXTEND
            .key(key)
            .key(keys::state_key(key))
            .key(keys::group_key(key))
            .arg(owner)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        match reply.first().map(|v| int(key, v)).transpose()? {
            Some(1) => Ok(Some(Lease {
                fence: opt_fence(key, reply.get(1))?,
                ttl,
            })),
            Some(-1) => Err(wrong_type(key, "non-string")),
            _ => Ok(None),
        }
    }

    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        let status: i64 = scripts::SET_METADATA
            .key(key)
            .key(keys::state_key(key))
            .key(keys::group_key(key))
            .arg(owner)
            .arg(u8::from(metadata.is_some()))
            .arg(metadata.unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        if status == -1 {
            return Err(wrong_type(key, "non-string"));
        }
        Ok(status == 1)
    }

    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        let status: i64 = scripts::FORCE_RELEASE
            .key(key)
            .key(keys::state_key(key))
            .key(keys::group_key(key))
            .arg(keys::release_channel(key))
            .arg(key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| op_error(Some(key), e))?;
        if status == -1 {
            return Err(wrong_type(key, "non-string"));
        }
        if status == 1 {
            self.notifier.notify(key);
        }
        Ok(status == 1)
    }

    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inspect_one(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        let names = scan::lock_keys(&self.conn, prefix).await?;
        let infos = futures_util::future::join_all(names.iter().map(|k| self.inspect_one(k))).await;
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            match info {
                Ok(Some(info)) => out.push(info),
                // Released, expired or replaced by another type since the scan.
                Ok(None) => {}
                Err(e) if e.kind == crate::StoreErrorKind::Rejected => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Claims the records of expired holdings under `prefix`: those whose `expired` events
    /// arrived since the last sweep, and on a first sweep (or after the event connection
    /// dropped) those a `SCAN` finds.
    async fn reap_expired(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.reap(prefix).await
    }

    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        // Registered first, so a message that arrives right after the SUBSCRIBE is kept.
        let subscription = self.notifier.subscribe(key);
        if !self.subscriber.ensure(key).await {
            tracing::debug!(
                "{}: release notifications for '{key}' unavailable; waiters poll",
                self.describe
            );
        }
        Ok(Some(subscription))
    }
}
