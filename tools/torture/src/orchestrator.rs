//! `run`: sets up the store, spawns the workers, injects faults, respawns killed workers,
//! and records how every worker ended.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use crate::clock::{self, Spec};
use crate::env::StoreEnv;
use crate::faults::{self, FaultKind};
use crate::netns::{self, Netns};
use crate::proxy::Proxy;
use crate::record::{
    last_record, now_ns, read_jsonl, Exit, ExitHow, Fault, Jsonl, Rec, RunConfig, RunDir, StoreKind,
};
use crate::worker::{self, Kill};

mod spawn;

/// How a worker's process or thread ended, before we know whether we killed it.
enum RawExit {
    Success,
    Signal(i32),
    Other(String),
    Thread(Result<worker::End>),
}

enum Event {
    Exit(u32, RawExit),
    FaultDone(Result<Fault>, FaultKind),
    Resumed(u32),
}

enum Control {
    Process,
    Thread {
        kill: Arc<Kill>,
        pause: UnboundedSender<Duration>,
    },
}

struct Slot {
    pid: u32,
    budget: Option<u64>,
    control: Control,
    killed: bool,
    /// Fault `partition`: the worker's namespace, and the proxies on its host side (both
    /// removed when the slot is).
    netns: Option<Arc<Netns>>,
    _proxies: Vec<Proxy>,
}

pub struct Orchestrator {
    pub env: StoreEnv,
    pub config: RunConfig,
    pub dir: RunDir,
    pub faults: Vec<FaultKind>,
    pub fault_every: Duration,
    slots: BTreeMap<u32, Slot>,
    next_id: u32,
    stopped: HashSet<u32>,
    busy: HashSet<FaultKind>,
    deck: Vec<FaultKind>,
    in_flight: usize,
    rng: StdRng,
    tx: UnboundedSender<Event>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    fault_log: Jsonl,
    exit_log: Jsonl,
    memory: Option<cadenas::Locks>,
    /// Fault `clock`: libfaketime's preload library, and the host's wall clock minus `now_ns`.
    faketime: Option<(std::path::PathBuf, i64)>,
    /// Fault `partition`: the 10.X.0.0/16 of the workers' veth pairs.
    subnet: Option<u8>,
}

impl Orchestrator {
    pub fn new(
        env: StoreEnv,
        config: RunConfig,
        dir: RunDir,
        faults: Vec<FaultKind>,
        fault_every: Duration,
    ) -> Result<Orchestrator> {
        let (tx, rx) = unbounded_channel();
        let faketime = if faults.contains(&FaultKind::Clock) {
            if clock::host_clock(config.store) {
                Spec::initial(config.store, 0).write(&dir.clock(None))?;
            }
            Some((clock::library()?, clock::wall_offset_ms()))
        } else {
            None
        };
        let subnet = if faults.contains(&FaultKind::Partition) {
            netns::prepare()?;
            Some(netns::pick_subnet()?)
        } else {
            None
        };
        Ok(Orchestrator {
            faketime,
            subnet,
            rng: StdRng::seed_from_u64(config.seed),
            fault_log: Jsonl::append(&dir.faults())?,
            exit_log: Jsonl::append(&dir.exits())?,
            env,
            config,
            dir,
            faults,
            fault_every,
            slots: BTreeMap::new(),
            next_id: 1,
            stopped: HashSet::new(),
            busy: HashSet::new(),
            deck: Vec::new(),
            in_flight: 0,
            tx,
            rx,
            memory: None,
        })
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.config.ttl_ms)
    }

    /// Runs the workers to the end; every worker's end is in `exits.jsonl` afterwards. The
    /// store's surroundings are cleaned up (tables, users, servers) whatever happens.
    pub async fn run(mut self) -> Result<()> {
        let result = self.run_workers().await;
        if result.is_err() {
            // Workers still running would write on: end them first.
            let _ = self.end_hung();
        }
        let cleaned = self.env.teardown().await;
        result.and(cleaned)
    }

    async fn run_workers(&mut self) -> Result<()> {
        self.dir.write_config(&self.config)?;
        if self.env.kind == StoreKind::Memory {
            let locks = worker::connect(&self.config, "memory:").await?;
            worker::check_mode(&self.config, &locks)?;
            self.memory = Some(locks);
        } else {
            // One connection first: creates the tables before the workers race to.
            let url = self.env.worker_url(0).await?;
            let locks = worker::connect(&self.config, &url).await?;
            let declared = worker::check_mode(&self.config, &locks);
            locks.disconnect().await?;
            declared?;
        }
        for _ in 0..self.config.procs {
            self.spawn(self.config.iterations, None).await?;
        }
        let deadline = self
            .config
            .deadline_ns
            .map(|d| Instant::now() + Duration::from_nanos(d.saturating_sub(now_ns())));
        // Workers that have not finished this long after the deadline are hung.
        let hard = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1800))
            + Duration::from_secs(60).max(self.ttl() * 20);
        // SIGTERM, like Ctrl-C, ends the run through its cleanup (namespaces, tables, servers).
        let mut terminated =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut next_fault = Instant::now() + self.fault_gap();
        let mut pending = None;
        while !self.slots.is_empty() || self.in_flight > 0 {
            let finishing = deadline.is_some_and(|d| Instant::now() >= d);
            let faulting = !self.faults.is_empty() && !finishing && !self.slots.is_empty();
            tokio::select! {
                ev = self.rx.recv() => self.handle(ev.expect("we hold a sender"), finishing).await?,
                _ = tokio::time::sleep_until(next_fault), if faulting => {
                    // Each kind waits for its chance (a holder in its section, the previous
                    // restart or delay over), so every kind gets injected.
                    let kind = *pending.get_or_insert_with(|| self.next_fault_kind());
                    if self.inject(kind).await? {
                        pending = None;
                        next_fault = Instant::now() + self.fault_gap();
                    } else {
                        next_fault = Instant::now() + Duration::from_millis(20);
                    }
                }
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
                _ = terminated.recv() => anyhow::bail!("terminated (SIGTERM)"),
                _ = tokio::time::sleep_until(hard) => {
                    self.end_hung()?;
                    break;
                }
            }
        }
        Ok(())
    }

    fn fault_gap(&mut self) -> Duration {
        let base = self.fault_every.as_millis() as u64;
        Duration::from_millis(self.rng.random_range(base / 2..=base * 3 / 2))
    }

    /// Starts a worker; `replaces`: the killed worker it takes the place of, whose wall clock
    /// it keeps (a process restarted on a host runs on that host's clock, stepped or not).
    async fn spawn(&mut self, budget: Option<u64>, replaces: Option<u32>) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let seed = self.config.seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (pid, control, netns, proxies) = match &self.memory {
            Some(locks) => {
                let (pid, control) = self.spawn_thread(id, seed, budget, locks.clone())?;
                (pid, control, None, Vec::new())
            }
            None => {
                let (pid, netns, proxies) = self.spawn_process(id, seed, budget, replaces).await?;
                (pid, Control::Process, netns, proxies)
            }
        };
        self.slots.insert(
            id,
            Slot {
                pid,
                budget,
                control,
                killed: false,
                netns,
                _proxies: proxies,
            },
        );
        Ok(())
    }

    async fn handle(&mut self, ev: Event, finishing: bool) -> Result<()> {
        match ev {
            Event::Resumed(id) => {
                self.stopped.remove(&id);
            }
            Event::FaultDone(fault, kind) => {
                self.in_flight -= 1;
                self.busy.remove(&kind);
                self.fault_log.write(&fault?)?;
            }
            Event::Exit(id, raw) => {
                let Some(slot) = self.slots.remove(&id) else {
                    return Ok(());
                };
                let how = match raw {
                    RawExit::Success | RawExit::Thread(Ok(worker::End::Finished)) => {
                        ExitHow::Finished
                    }
                    RawExit::Signal(9) | RawExit::Thread(Ok(worker::End::Killed))
                        if slot.killed =>
                    {
                        ExitHow::KilledByUs
                    }
                    RawExit::Signal(s) => {
                        ExitHow::Failed(format!("killed by signal {s}{}", self.stderr_tail(id)))
                    }
                    RawExit::Other(s) => ExitHow::Failed(format!("{s}{}", self.stderr_tail(id))),
                    RawExit::Thread(Ok(worker::End::Killed)) => {
                        ExitHow::Failed("ended as killed, but we did not kill it".into())
                    }
                    RawExit::Thread(Err(e)) => ExitHow::Failed(format!("{e:#}")),
                };
                self.exit_log.write(&Exit {
                    worker: id,
                    pid: slot.pid,
                    how: how.clone(),
                })?;
                if how == ExitHow::KilledByUs && !finishing {
                    let begun = read_jsonl::<Rec>(&self.dir.worker_log(id))?
                        .iter()
                        .filter(|r| matches!(r, Rec::Begin { .. }))
                        .count() as u64;
                    match slot.budget.map(|b| b.saturating_sub(begun)) {
                        Some(0) => {}
                        left => self.spawn(left, Some(id)).await?,
                    }
                }
            }
        }
        Ok(())
    }

    fn stderr_tail(&self, id: u32) -> String {
        let text = std::fs::read_to_string(self.dir.worker_err(id)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "; stderr: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    /// The kinds come from a shuffled deck, reshuffled when empty: every kind once per round.
    fn next_fault_kind(&mut self) -> FaultKind {
        if self.deck.is_empty() {
            self.deck = self.faults.clone();
            self.deck.shuffle(&mut self.rng);
        }
        self.deck.pop().expect("only called with faults enabled")
    }

    /// Injects one fault; `false` if it cannot now: it needs a holder and none is in its
    /// section, or the previous fault of its kind (a restart, a delay) still runs.
    async fn inject(&mut self, kind: FaultKind) -> Result<bool> {
        if self.busy.contains(&kind) {
            return Ok(false);
        }
        let target = if kind.targets_holder() {
            match self.pick_holder() {
                Some(id) => Some(id),
                None => return Ok(false),
            }
        } else {
            None
        };
        let ttl = self.ttl();
        let t = now_ns();
        let record = |detail: String| Fault {
            kind: kind.name().into(),
            worker: target,
            t_start: t,
            t_end: now_ns(),
            detail,
        };
        match (kind, target) {
            (FaultKind::Kill, Some(id)) => {
                let slot = self.slots.get_mut(&id).expect("picked from slots");
                slot.killed = true;
                match &slot.control {
                    Control::Process => signal(slot.pid, Signal::SIGKILL)?,
                    Control::Thread { kill, .. } => kill.fire(),
                }
                let f = record(format!("pid {}", slot.pid));
                self.fault_log.write(&f)?;
            }
            (FaultKind::Stop, Some(id)) => {
                let slot = &self.slots[&id];
                let (pid, time) = (slot.pid, faults::stop_time(ttl));
                match &slot.control {
                    Control::Process => signal(pid, Signal::SIGSTOP)?,
                    Control::Thread { pause, .. } => {
                        let _ = pause.send(time);
                    }
                }
                self.stopped.insert(id);
                self.in_flight += 1;
                let thread = matches!(slot.control, Control::Thread { .. });
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(time).await;
                    let resumed = if thread {
                        Ok(())
                    } else {
                        signal(pid, Signal::SIGCONT)
                    };
                    let fault = resumed.map(|()| Fault {
                        kind: kind.name().into(),
                        worker: Some(id),
                        t_start: t,
                        t_end: now_ns(),
                        detail: format!("stopped for {time:?}"),
                    });
                    let _ = tx.send(Event::Resumed(id));
                    let _ = tx.send(Event::FaultDone(fault, kind));
                });
            }
            (FaultKind::Connkill, Some(id)) => {
                let name = self.env.conn_name(id);
                let admin = self
                    .env
                    .admin
                    .as_ref()
                    .context("connkill needs a SQL store")?;
                let n = admin.lock().await.kill_connections(&name).await?;
                let f = record(format!("{n} connection(s) of {name} killed"));
                self.fault_log.write(&f)?;
            }
            (FaultKind::Clock, Some(id)) => {
                let host = clock::host_clock(self.config.store);
                let file = self.dir.clock((!host).then_some(id));
                let now = Spec::read(&file).unwrap_or(Spec::initial(self.config.store, id));
                let next = now.stepped(self.rng.random_bool(0.5));
                next.write(&file)?;
                let whose = if host {
                    "every worker's".to_owned()
                } else {
                    format!("worker {id}'s")
                };
                let f = record(format!(
                    "{whose} wall clock stepped from {} to {}",
                    now.text(),
                    next.text()
                ));
                self.fault_log.write(&f)?;
            }
            (FaultKind::Partition, Some(id)) => {
                let ns = self.slots[&id]
                    .netns
                    .clone()
                    .context("a partitioned worker runs in a namespace")?;
                self.stopped.insert(id);
                self.in_flight += 1;
                let (dir, tx) = (self.dir.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let fault = faults::partition(&ns, &dir, id, faults::stop_time(ttl)).await;
                    let _ = tx.send(Event::Resumed(id));
                    let _ = tx.send(Event::FaultDone(fault, kind));
                });
            }
            (FaultKind::Drop, _) => {
                let f = faults::drop_connections(&self.env.proxies);
                self.fault_log.write(&f)?;
            }
            (FaultKind::Restart, _) if self.env.sentinel.is_some() => {
                let topology = self.env.sentinel.clone().expect("checked");
                self.start_task(kind, faults::failover(topology));
            }
            (FaultKind::Restart, _) if self.env.etcd.is_some() => {
                let cluster = self.env.etcd.clone().expect("checked");
                let (leader, members) = {
                    let c = cluster.lock().unwrap();
                    (c.leader(), c.len())
                };
                // The leader half of the time, else any member.
                let (member, is_leader) = match leader {
                    Some(l) if self.rng.random_bool(0.5) => (l, true),
                    _ => {
                        let m = self.rng.random_range(0..members);
                        (m, Some(m) == leader)
                    }
                };
                let down = Duration::from_millis(self.rng.random_range(50..300));
                self.start_task(
                    kind,
                    faults::restart_member(cluster, member, is_leader, down),
                );
            }
            (FaultKind::Restart, _) => {
                let servers = self.env.restart_targets(&mut self.rng);
                let down = if self.env.kind == StoreKind::Redlock {
                    ttl + Duration::from_millis(500)
                } else {
                    Duration::from_millis(self.rng.random_range(50..300))
                };
                self.start_task(kind, faults::restart(servers, down));
            }
            (FaultKind::Delay, _) => {
                let ms = ttl.as_millis() as u64;
                let delay = Duration::from_millis(self.rng.random_range(20..=(ms * 3 / 5).max(21)));
                let during = Duration::from_millis(self.rng.random_range(ms..=ms * 2));
                let p = self.env.proxies.clone();
                self.start_task(
                    kind,
                    async move { Ok(faults::delay(&p, delay, during).await) },
                );
            }
            _ => unreachable!("holder faults always have a target"),
        }
        Ok(true)
    }

    fn start_task(
        &mut self,
        kind: FaultKind,
        task: impl std::future::Future<Output = Result<Fault>> + Send + 'static,
    ) {
        self.busy.insert(kind);
        self.in_flight += 1;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Event::FaultDone(task.await, kind));
        });
    }

    /// A worker inside its critical section, not stopped nor killed, at random.
    fn pick_holder(&mut self) -> Option<u32> {
        let holders: Vec<u32> = self
            .slots
            .iter()
            .filter(|(id, s)| !s.killed && !self.stopped.contains(id))
            .filter(|(id, _)| {
                matches!(
                    last_record(&self.dir.worker_log(**id)),
                    Some(Rec::Begin { .. })
                )
            })
            .map(|(id, _)| *id)
            .collect();
        holders.choose(&mut self.rng).copied()
    }

    /// Ends workers that did not finish in time; each is a failure.
    fn end_hung(&mut self) -> Result<()> {
        for (id, slot) in std::mem::take(&mut self.slots) {
            match &slot.control {
                Control::Process => {
                    let _ = signal(slot.pid, Signal::SIGCONT);
                    let _ = signal(slot.pid, Signal::SIGKILL);
                }
                Control::Thread { kill, .. } => kill.fire(),
            }
            self.exit_log.write(&Exit {
                worker: id,
                pid: slot.pid,
                how: ExitHow::Failed("did not finish in time (hung); killed".into()),
            })?;
        }
        Ok(())
    }
}

fn signal(pid: u32, sig: Signal) -> Result<()> {
    match kill(Pid::from_raw(pid as i32), sig) {
        // Already gone (it finished as we aimed): nothing to do.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("sending {sig} to {pid}")),
    }
}
