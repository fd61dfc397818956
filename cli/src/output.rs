//! What the CLI prints: status, list, and the waiting line on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::json;

use cadenas::{Error, Guard, Lock, LockInfo, Locks, Retry};

fn info_json(i: &LockInfo) -> serde_json::Value {
    json!({
        "key": i.key,
        "owner": i.owner,
        "remaining_ms": i.remaining.map(|r| r.as_millis() as u64),
        "fence": i.fence,
        "metadata": i.metadata,
    })
}

fn remaining_text(r: Option<Duration>) -> String {
    match r {
        Some(r) => format!("expires in {}", cadenas::format_duration(r)),
        None => "never expires".into(),
    }
}

/// `status KEY`: 0 locked, 1 free.
pub(super) async fn status(
    locks: Result<Locks, Error>,
    json: bool,
    key: &str,
) -> Result<u8, Error> {
    let locks = locks?;
    let info = locks.lock(key).inspect().await?;
    if json {
        let v = match &info {
            Some(i) => {
                let mut v = info_json(i);
                v["locked"] = json!(true);
                v
            }
            None => json!({ "key": key, "locked": false }),
        };
        println!("{v}");
    } else {
        match &info {
            Some(i) => {
                print!("locked by {}, {}", i.owner, remaining_text(i.remaining));
                if let Some(f) = i.fence {
                    print!(", fence {f}");
                }
                println!();
                if let Some(m) = &i.metadata {
                    println!("metadata: {m}");
                }
            }
            None => println!("free"),
        }
    }
    Ok(if info.is_some() { 0 } else { 1 })
}

/// `list PREFIX`.
pub(super) async fn list(
    locks: Result<Locks, Error>,
    json: bool,
    prefix: &str,
) -> Result<u8, Error> {
    let infos = locks?.list(prefix).await?;
    if json {
        let v: Vec<_> = infos.iter().map(info_json).collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for i in &infos {
            let fence = i.fence.map(|f| format!("\tfence {f}")).unwrap_or_default();
            println!(
                "{}\t{}\t{}{fence}",
                i.key,
                i.owner,
                remaining_text(i.remaining)
            );
        }
    }
    Ok(0)
}

/// Acquires; on a terminal, after a second of waiting, shows who holds the lock and for how
/// long, refreshed every second.
pub(super) async fn acquire_showing_holder(lock: &Lock, retry: &Retry) -> Result<Guard, Error> {
    if retry.get_attempts() == Some(1) {
        return lock.try_acquire().await;
    }
    let acquire = lock.acquire_with(retry);
    if !std::io::stderr().is_terminal() {
        return acquire.await;
    }
    tokio::pin!(acquire);
    let started = tokio::time::Instant::now();
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut shown = false;
    let result = loop {
        tokio::select! {
            r = &mut acquire => break r,
            _ = tick.tick() => {
                let holder = match lock.inspect().await {
                    Ok(Some(i)) => format!("held by {}, {}", i.owner, remaining_text(i.remaining)),
                    Ok(None) => "free, trying".into(),
                    Err(e) => format!("cannot inspect: {e}"),
                };
                eprint!(
                    "\r\x1b[2Kcadenas: waiting {} for lock '{}' ({holder})",
                    cadenas::format_duration(Duration::from_secs(started.elapsed().as_secs())),
                    lock.key()
                );
                shown = true;
            }
        }
    };
    if shown {
        eprint!("\r\x1b[2K");
    }
    result
}
