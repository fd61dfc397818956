//! The faults the orchestrator injects, which stores each applies to, and the ones that are
//! carried out on servers and proxies (the ones on workers are in `orchestrator.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::netns::Netns;
use crate::proxy::Proxy;
use crate::record::{now_ns, Fault, RunDir, StoreKind};
use crate::servers::{EtcdCluster, RedisServer, SentinelTopology};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of a holder mid-section (thread workers: the guard is leaked and the worker
    /// ends): its lease must expire and another worker take the key.
    Kill,
    /// SIGSTOP of a holder for longer than the ttl, then SIGCONT (thread workers: their
    /// runtime thread blocks): it must be rejected by fence or learn that it lost the lease.
    Stop,
    /// Kill and restart of the tool's own redis-server (data lost), of one of a Redis
    /// Cluster's masters (its keys lost), or of 2 of Redlock's 5 nodes, kept down longer than
    /// the ttl (the delayed restart Redlock needs), or of one of etcd's 3 members (the leader
    /// half of the time; its data kept, as after a crash). On Sentinel, a failover: the
    /// primary killed, a replica promoted (without the writes it had not yet received), the
    /// old primary started again empty and resynced as a replica.
    Restart,
    /// `pg_terminate_backend` / MySQL `KILL` of a holder's connections.
    Connkill,
    /// The proxy drops every connection between workers and store.
    Drop,
    /// The proxy delays all traffic for a while.
    Delay,
    /// A step of ±10 s of a holder's wall clock (libfaketime; workers also run 1.5× fast or
    /// 0.5× slow); every worker's at once on stores whose clock is the clients' (SQLite,
    /// DynamoDB). See `clock.rs`.
    Clock,
    /// A holder cut off from the store (its network namespace's link down) for 1.5 × ttl,
    /// then healed, and kept in its section until then: it must have learnt `Lost`, and its
    /// late write is refused by fence. See `netns.rs`.
    Partition,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Restart,
        FaultKind::Connkill,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Clock,
        FaultKind::Partition,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Restart => "restart",
            FaultKind::Connkill => "connkill",
            FaultKind::Drop => "drop",
            FaultKind::Delay => "delay",
            FaultKind::Clock => "clock",
            FaultKind::Partition => "partition",
        }
    }

    pub fn needs_proxy(self) -> bool {
        matches!(self, FaultKind::Drop | FaultKind::Delay)
    }

    /// Whether the fault aims at one worker inside its critical section.
    pub fn targets_holder(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Stop
                | FaultKind::Connkill
                | FaultKind::Clock
                | FaultKind::Partition
        )
    }

    /// Whether `store` can take this fault (`own_servers`: the tool runs the Redis servers).
    pub fn applies_to(self, store: StoreKind, own_servers: bool) -> bool {
        use StoreKind::*;
        match self {
            FaultKind::Kill | FaultKind::Stop => true,
            FaultKind::Restart => {
                matches!(store, Redis | Cluster | Sentinel | Redlock | Etcd) && own_servers
            }
            FaultKind::Connkill => matches!(store, Postgres | Mysql),
            // Cluster and Sentinel clients learn the data nodes' addresses from the servers
            // (slot maps, the sentinels' answers), which a proxy in front of the URL's hosts
            // does not cover.
            FaultKind::Drop | FaultKind::Delay | FaultKind::Partition => {
                matches!(store, Redis | Redlock | Postgres | Mysql | Etcd | Dynamodb)
            }
            // Memory's holders are threads of the tool's own process: one clock for all.
            FaultKind::Clock => store != Memory,
        }
    }
}

/// Parses `--faults`: `all`, `none`, or a comma list of names.
pub fn parse(list: &str, store: StoreKind, own_servers: bool) -> Result<Vec<FaultKind>> {
    let list = list.trim();
    if list.is_empty() || list == "none" {
        return Ok(Vec::new());
    }
    if list == "all" {
        return Ok(FaultKind::ALL
            .into_iter()
            .filter(|f| f.applies_to(store, own_servers))
            .collect());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(kind) = FaultKind::ALL.into_iter().find(|f| f.name() == name) else {
            bail!("unknown fault '{name}': use kill, stop, restart, connkill, drop, delay, clock, partition, all or none");
        };
        if !kind.applies_to(store, own_servers) {
            bail!(
                "fault '{name}' does not apply to the {store:?} store{}",
                match (kind, store) {
                    (FaultKind::Restart, _) =>
                        " (restart needs --store redis, cluster, sentinel, redlock or etcd: servers the tool runs)",
                    (FaultKind::Clock, _) =>
                        " (memory's holders are threads of one process: they share one clock)",
                    (FaultKind::Partition | FaultKind::Drop | FaultKind::Delay, StoreKind::Cluster | StoreKind::Sentinel) =>
                        " (it works through proxies in front of the URL's hosts, and Cluster and Sentinel clients reach the data nodes the servers name, past the proxies)",
                    (FaultKind::Partition, _) =>
                        " (partition cuts a worker's network: it needs a store reached over TCP)",
                    _ => "",
                }
            );
        }
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

/// How long a stopped worker stays stopped: well past its ttl.
pub fn stop_time(ttl: Duration) -> Duration {
    ttl * 3 / 2 + Duration::from_millis(100)
}

/// Kills `servers`, keeps them down for `down`, starts them again (empty). Redis: a short
/// outage; Redlock: longer than the ttl, so every lease they knew has expired before they
/// vote again (a node back sooner could grant a lock a minority still holds).
pub async fn restart(servers: Vec<Arc<Mutex<RedisServer>>>, down: Duration) -> Result<Fault> {
    let t_start = now_ns();
    let ports: Vec<u16> = servers.iter().map(|s| s.lock().unwrap().port).collect();
    for s in &servers {
        s.lock().unwrap().kill();
    }
    tokio::time::sleep(down).await;
    for s in servers {
        tokio::task::spawn_blocking(move || s.lock().unwrap().try_restart())
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    Ok(Fault {
        kind: FaultKind::Restart.name().into(),
        worker: None,
        t_start,
        t_end: now_ns(),
        detail: format!("redis-server on port(s) {ports:?} down for {down:?}, restarted empty"),
    })
}

/// Kills member `member` of `cluster` (SIGKILL), keeps it down for `down`, starts it again
/// on its data; returns once it is healthy again.
pub async fn restart_member(
    cluster: Arc<Mutex<EtcdCluster>>,
    member: usize,
    leader: bool,
    down: Duration,
) -> Result<Fault> {
    let t_start = now_ns();
    let port = {
        let mut c = cluster.lock().unwrap();
        c.kill(member);
        c.port(member)
    };
    tokio::time::sleep(down).await;
    tokio::task::spawn_blocking(move || {
        let mut c = cluster.lock().unwrap();
        c.restart(member)?;
        c.wait_healthy()
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    let role = if leader { "leader" } else { "member" };
    Ok(Fault {
        kind: FaultKind::Restart.name().into(),
        worker: None,
        t_start,
        t_end: now_ns(),
        detail: format!("etcd {role} on port {port} killed, down for {down:?}, restarted"),
    })
}

/// How long a failover, and then the old primary's resync, may each take before the run
/// fails (test support panics past it; the panic becomes this fault's error).
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Fails the Sentinel topology's primary over: kills it (SIGKILL), waits until the sentinels
/// have promoted a replica, starts the old primary again (empty) and waits until the
/// sentinels have made it a replica of the new one, in sync, so that the next failover has
/// two replicas to choose from.
pub async fn failover(topology: Arc<Mutex<SentinelTopology>>) -> Result<Fault> {
    let t_start = now_ns();
    let detail = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut t = topology.lock().unwrap();
        let old = t.kill_primary();
        let new = t.wait_for_promotion(old, FAILOVER_LIMIT);
        let promoted_after = Duration::from_nanos(now_ns() - t_start);
        t.nodes[old].try_restart()?;
        t.wait_for_replica(old, FAILOVER_LIMIT);
        Ok(format!(
            "primary on port {} killed; port {} promoted after {promoted_after:?}; the old one restarted empty and resynced",
            t.nodes[old].port, t.nodes[new].port
        ))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the failover did not complete: {e}"))?
    .map_err(anyhow::Error::msg)?;
    Ok(Fault {
        kind: FaultKind::Restart.name().into(),
        worker: None,
        t_start,
        t_end: now_ns(),
        detail,
    })
}

/// Cuts worker `id` off while it holds a lease: asks it to stay in its section (its hold
/// file), waits until it says it is there (its `.held` file: in this section or, if this one
/// was past that point, its next), cuts its link for `time`, heals it, and lets it write.
pub async fn partition(ns: &Netns, dir: &RunDir, id: u32, time: Duration) -> Result<Fault> {
    let (hold, held) = (dir.hold(id), dir.held(id));
    std::fs::write(&hold, b"")?;
    let give_up = now_ns() + 5_000_000_000;
    while !held.exists() && now_ns() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught = held.exists();
    let t_start = now_ns();
    let cut = if caught { ns.cut() } else { Ok(()) };
    if caught && cut.is_ok() {
        tokio::time::sleep(time).await;
    }
    let healed = if caught { ns.heal() } else { Ok(()) };
    let t_end = now_ns();
    if caught {
        // The healed holder may now try its late write.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&held);
    let _ = std::fs::remove_file(&hold);
    cut.and(healed)?;
    Ok(Fault {
        kind: FaultKind::Partition.name().into(),
        worker: Some(id),
        t_start,
        t_end,
        detail: if caught {
            format!("cut off from the store ({}) for {time:?}", ns.name)
        } else {
            "not cut: the worker did not reach its section in 5 s".into()
        },
    })
}

/// Delays all proxied traffic by `delay` for `during`.
pub async fn delay(proxies: &[Proxy], delay: Duration, during: Duration) -> Fault {
    let t_start = now_ns();
    for p in proxies {
        p.set_delay(delay);
    }
    tokio::time::sleep(during).await;
    for p in proxies {
        p.set_delay(Duration::ZERO);
    }
    Fault {
        kind: FaultKind::Delay.name().into(),
        worker: None,
        t_start,
        t_end: now_ns(),
        detail: format!("every chunk delayed {delay:?} for {during:?}"),
    }
}

/// Drops every proxied connection.
pub fn drop_connections(proxies: &[Proxy]) -> Fault {
    let t = now_ns();
    let n: usize = proxies.iter().map(Proxy::drop_all).sum();
    Fault {
        kind: FaultKind::Drop.name().into(),
        worker: None,
        t_start: t,
        t_end: t,
        detail: format!("{n} connection(s) dropped"),
    }
}
