//! Starting workers: processes (under libfaketime for `clock`, in a network namespace of
//! their own for `partition`) or, for the memory store, threads.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc::unbounded_channel;

use super::{Control, Event, Orchestrator, RawExit};
use crate::clock::{self, Spec};
use crate::netns::Netns;
use crate::proxy::Proxy;
use crate::worker::{Kill, Worker};

impl Orchestrator {
    pub(super) async fn spawn_process(
        &mut self,
        id: u32,
        seed: u64,
        budget: Option<u64>,
        replaces: Option<u32>,
    ) -> Result<(u32, Option<Arc<Netns>>, Vec<Proxy>)> {
        let mut url = self.env.worker_url(id).await?;
        let exe = std::env::current_exe().context("finding our own binary")?;
        let (mut cmd, netns, proxies) = match self.subnet {
            Some(subnet) => {
                let ns = Netns::create(self.env.tag(), subnet, id)?;
                let (through, proxies) = crate::env::proxy_hosts(&url, ns.host_addr).await?;
                url = through;
                let mut cmd = tokio::process::Command::new("ip");
                cmd.args(["netns", "exec", &ns.name]).arg(exe);
                (cmd, Some(Arc::new(ns)), proxies)
            }
            None => (tokio::process::Command::new(exe), None, Vec::new()),
        };
        if let Some((library, offset)) = &self.faketime {
            let file = if clock::host_clock(self.config.store) {
                self.dir.clock(None)
            } else {
                let file = self.dir.clock(Some(id));
                replaces
                    .and_then(|old| Spec::read(&self.dir.clock(Some(old))))
                    .unwrap_or(Spec::initial(self.config.store, id))
                    .write(&file)?;
                file
            };
            cmd.envs(clock::env(library, &file))
                .env("CADENAS_TORTURE_WALL_OFFSET", offset.to_string());
        }
        cmd.arg("worker")
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--id")
            .arg(id.to_string())
            .arg("--seed")
            .arg(seed.to_string());
        if let Some(b) = budget {
            cmd.arg("--iterations").arg(b.to_string());
        }
        let err = std::fs::File::create(self.dir.worker_err(id))?;
        cmd.env("CADENAS_TORTURE_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning a worker")?;
        // `ip netns exec` execs the worker in place: the pid is the worker's.
        let pid = child.id().context("the worker has no pid")?;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let raw = match child.wait().await {
                Ok(s) if s.success() => RawExit::Success,
                Ok(s) => match s.signal() {
                    Some(sig) => RawExit::Signal(sig),
                    None => RawExit::Other(format!("{s}")),
                },
                Err(e) => RawExit::Other(format!("wait failed: {e}")),
            };
            let _ = tx.send(Event::Exit(id, raw));
        });
        Ok((pid, netns, proxies))
    }

    pub(super) fn spawn_thread(
        &self,
        id: u32,
        seed: u64,
        budget: Option<u64>,
        locks: cadenas::Locks,
    ) -> Result<(u32, Control)> {
        let kill = Arc::new(Kill::default());
        let (pause, mut pauses) = unbounded_channel::<Duration>();
        let (config, dir, tx, k) = (
            self.config.clone(),
            self.dir.clone(),
            self.tx.clone(),
            kill.clone(),
        );
        std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let end = match rt {
                    Ok(rt) => rt.block_on(async {
                        // A pause blocks this runtime's only thread: the worker and its
                        // watchdog stop together, as a stopped process's would.
                        tokio::spawn(async move {
                            while let Some(d) = pauses.recv().await {
                                std::thread::sleep(d);
                            }
                        });
                        let w = Worker {
                            id,
                            seed,
                            iterations: budget,
                            config: &config,
                            dir: &dir,
                            kill: Some(k),
                            wall_offset_ms: None,
                            partitionable: false,
                        };
                        w.run(&locks).await
                    }),
                    Err(e) => Err(e.into()),
                };
                let _ = tx.send(Event::Exit(id, RawExit::Thread(end)));
            })?;
        Ok((0, Control::Thread { kill, pause }))
    }
}
