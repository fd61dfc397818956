//! The `partition` fault: each worker process runs in a network namespace of its own
//! (`ip netns`), joined to the host by a veth pair on a private /30. The worker reaches the
//! store through proxies the orchestrator binds on the host side of its pair; taking that
//! side down (`ip link set DEV down`) cuts the worker off — its packets go nowhere, its TCP
//! connections stall without a reset, as in a real partition — and taking it up heals it.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`. Namespaces are named
//! `cadenas-torture-PID-TAG-wID` and deleted (with their veth pair) when their [`Netns`] is
//! dropped, on panic too; a run killed with SIGKILL leaves them behind, and the next run
//! deletes those whose PID is gone.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

const PREFIX: &str = "cadenas-torture-";

/// One worker's namespace and veth pair.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    host_dev: String,
    /// The host side's address: where the worker's proxies listen.
    pub host_addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| {
        "fault `partition` needs iproute2's `ip` (Debian: apt-get install iproute2)".to_string()
    })?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}; fault `partition` needs root (network namespaces and veth pairs)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Checks that namespaces can be made here, and removes those of runs that are gone.
pub fn prepare() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "fault `partition` needs root: it makes a network namespace and a veth pair per \
             worker (`ip netns add`, `ip link add … type veth`); run as root, or leave \
             `partition` out of --faults"
        );
    }
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("fault `partition` needs iproute2's `ip` (Debian: apt-get install iproute2)")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
    Ok(())
}

/// A /16 in 10.0.0.0/8 that no interface of the host uses: the run's workers' /30s.
pub fn pick_subnet() -> Result<u8> {
    let out = Command::new("ip").args(["-o", "-4", "addr"]).output()?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    for _ in 0..64 {
        let b: u8 = rand::random_range(100..=250);
        if !used.contains(&format!(" 10.{b}.")) {
            return Ok(b);
        }
    }
    bail!("no free 10.X.0.0/16 for the workers' veth pairs")
}

impl Netns {
    /// Makes worker `id`'s namespace, its veth pair on 10.`subnet`.x.y/30, and brings it up.
    pub fn create(tag: &str, subnet: u8, id: u32) -> Result<Netns> {
        if id >= 16_384 {
            bail!("too many workers for one /16 of veth pairs");
        }
        let base = id * 4;
        let addr = |host: u32| {
            Ipv4Addr::new(
                10,
                subnet,
                (base >> 8) as u8,
                (base & 0xff) as u8 + host as u8,
            )
        };
        let ns = Netns {
            name: format!("{PREFIX}{}-{tag}-w{id}", std::process::id()),
            host_dev: format!("c{tag}{id}h"),
            host_addr: addr(1),
        };
        let ns_dev = format!("c{tag}{id}n");
        ip(&["netns", "add", &ns.name])?;
        // From here on, Drop deletes what was made.
        let host = format!("{}/30", ns.host_addr);
        let inner = format!("{}/30", addr(2));
        ip(&[
            "link",
            "add",
            &ns.host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &ns_dev,
            "netns",
            &ns.name,
        ])?;
        ip(&["addr", "add", &host, "dev", &ns.host_dev])?;
        ip(&["link", "set", &ns.host_dev, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &inner, "dev", &ns_dev])?;
        ip(&["-n", &ns.name, "link", "set", &ns_dev, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cuts the worker off (its side of the link loses carrier; nothing is reset).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.host_dev, "down"])
    }

    /// Heals the cut.
    pub fn heal(&self) -> Result<()> {
        ip(&["link", "set", &self.host_dev, "up"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair's inner side, and with it the host side.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "cadenas-torture: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}
