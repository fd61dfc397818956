//! `cadenas exec KEY -- CMD`: hold a lock while a command runs.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use super::{prepare, HoldArgs, EXIT_LOST};
use cadenas::Error;

pub(super) async fn run(
    hold: HoldArgs,
    kill_after: &str,
    extend_every: Option<&str>,
    key: &str,
    command: &[String],
) -> Result<u8, Error> {
    let kill_after = cadenas::parse_duration("kill-after", kill_after)?;
    let extend_every = extend_every
        .map(|every| cadenas::parse_duration("extend-every", every))
        .transpose()?;
    let force = hold.force;
    let (lock, retry) = prepare(hold, key).await?;
    // The watchdog runs whenever there is a ttl: the lease lives exactly as long as CMD.
    let lock = match extend_every {
        Some(every) => lock.with_auto_extend_every(every),
        None => lock.with_auto_extend(true),
    };
    // Signals that arrive while we wait for the lock just stop the wait (nothing to forward).
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let guard = tokio::select! {
        g = super::force::take(&lock, &retry, force) => g?,
        _ = sigint.recv() => return Ok(130),
        _ = sigterm.recv() => return Ok(143),
    };

    let (program, rest) = command
        .split_first()
        .ok_or_else(|| crate::invalid("command", "no command given after --"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .env("CADENAS_KEY", guard.key())
        .env("CADENAS_OWNER", guard.owner());
    match guard.fence() {
        Some(f) => cmd.env("CADENAS_FENCE", f.to_string()),
        None => cmd.env_remove("CADENAS_FENCE"),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            eprintln!("cadenas: cannot run {program:?}: {e}");
            // The shell's codes: 127 not found, 126 not executable.
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };

    let lost = guard.lost_signal();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            e = lost.wait() => {
                eprintln!("cadenas: {e}; stopping the command (SIGTERM, then SIGKILL after {})",
                    cadenas::format_duration(kill_after));
                stop(&mut child, kill_after).await;
                let _ = guard.release().await;
                return Ok(EXIT_LOST);
            }
            _ = sigint.recv() => forward(&child, nix::sys::signal::Signal::SIGINT),
            _ = sigterm.recv() => forward(&child, nix::sys::signal::Signal::SIGTERM),
        }
    };
    let status = status
        .map_err(|e| crate::invalid("command", format!("waiting for {program:?} failed: {e}")));
    // Release whatever happened to the command; a lease lost at the very end still counts.
    let released = guard.release().await;
    let status = status?;
    if let Err(e) = released {
        if matches!(e, Error::NotOwned { .. }) {
            eprintln!("cadenas: lock '{key}' was lost before the command finished");
            return Ok(EXIT_LOST);
        }
        eprintln!("cadenas: {e}");
    }
    Ok(exit_code(status))
}

fn signal_error(e: std::io::Error) -> Error {
    Error::Config {
        message: format!("cannot install signal handlers: {e}"),
    }
}

fn forward(child: &Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// SIGTERM, then SIGKILL if the command is still running after `grace`.
async fn stop(child: &mut Child, grace: Duration) {
    forward(child, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => 1,
    }
}
