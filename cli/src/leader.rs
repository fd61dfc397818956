//! `cadenas leader NAME`: who leads an election; `--watch`: a line per change.

use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use cadenas::{Election, Error, Leader, LeaderChange, Locks};

/// The candidate identity `leader` looks as: it never campaigns.
const OBSERVER: &str = "cadenas-leader";

fn leader_json(name: &str, l: &Leader) -> serde_json::Value {
    json!({
        "name": name,
        "leader": true,
        "candidate": l.candidate,
        "term": l.term,
        "value": l.value,
        "remaining_ms": l.remaining.map(|r| r.as_millis() as u64),
    })
}

fn leader_text(l: &Leader) -> String {
    let mut s = l.candidate.clone();
    if let Some(t) = l.term {
        s.push_str(&format!(", term {t}"));
    }
    match l.remaining {
        Some(r) => s.push_str(&format!(
            ", lease ends in {}",
            cadenas::format_duration(Duration::from_millis(r.as_millis() as u64))
        )),
        None => s.push_str(", lease never ends"),
    }
    if let Some(v) = &l.value {
        s.push_str(&format!(", value {v}"));
    }
    s
}

/// `leader NAME`: 0 someone leads, 1 no one; `--watch` runs until SIGINT or SIGTERM (0).
pub(super) async fn run(
    locks: Result<Locks, Error>,
    json: bool,
    watch: bool,
    poll_interval: &str,
    name: &str,
) -> Result<u8, Error> {
    let poll = cadenas::parse_duration("poll-interval", poll_interval)?;
    let election = locks?.election(name, OBSERVER).with_poll_interval(poll);
    if watch {
        return watch_changes(&election, json).await;
    }
    let leader = election.leader().await?;
    match (&leader, json) {
        (Some(l), true) => println!("{}", leader_json(name, l)),
        (None, true) => println!("{}", json!({ "name": name, "leader": false })),
        (Some(l), false) => println!("leader {}", leader_text(l)),
        (None, false) => println!("no leader"),
    }
    Ok(if leader.is_some() { 0 } else { 1 })
}

/// One line per change until SIGINT or SIGTERM. A store error before the first line ends
/// the command; later ones are reported on stderr and the watch goes on.
async fn watch_changes(election: &Election, json: bool) -> Result<u8, Error> {
    let signal_error = |e: std::io::Error| Error::Config {
        message: format!("cannot install signal handlers: {e}"),
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut observer = election.observe();
    let mut first = true;
    loop {
        let change = tokio::select! {
            c = observer.next() => c,
            _ = sigint.recv() => return Ok(0),
            _ = sigterm.recv() => return Ok(0),
        };
        match change {
            Ok(change) => println!("{}", change_line(election.name(), &change, json)),
            Err(e) if first || !e.is_retryable() => return Err(e),
            Err(e) => eprintln!("cadenas: {e}; still watching"),
        }
        first = false;
    }
}

fn change_line(name: &str, change: &LeaderChange, json: bool) -> String {
    let (kind, leader) = match change {
        LeaderChange::Elected(l) => ("elected", Some(l)),
        LeaderChange::Proclaimed(l) => ("proclaimed", Some(l)),
        LeaderChange::Vacant => ("vacant", None),
        _ => ("changed", None),
    };
    match (json, leader) {
        (true, Some(l)) => {
            let mut v = leader_json(name, l);
            v["change"] = json!(kind);
            v.to_string()
        }
        (true, None) => json!({ "name": name, "leader": false, "change": kind }).to_string(),
        (false, Some(l)) => format!("{kind} {}", leader_text(l)),
        (false, None) => "vacant: no leader".into(),
    }
}
