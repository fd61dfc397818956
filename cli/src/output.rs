//! What the CLI prints: status, list, and the waiting line on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::json;

use cadenas::{Error, Guard, HolderInfo, Lock, LockInfo, LockKind, Locks, Retry};

fn holder_json(h: &HolderInfo) -> serde_json::Value {
    json!({
        "owner": h.owner,
        "remaining_ms": h.remaining.map(|r| r.as_millis() as u64),
        "fence": h.fence,
        "metadata": h.metadata,
    })
}

/// A held key: the first holder's fields (as before holders were listed), its kind, the
/// semaphore's permit count, and every holder.
fn info_json(i: &LockInfo) -> serde_json::Value {
    json!({
        "key": i.key,
        "owner": i.owner,
        "remaining_ms": i.remaining.map(|r| r.as_millis() as u64),
        "fence": i.fence,
        "metadata": i.metadata,
        "kind": i.kind.name(),
        "permits": match i.kind {
            LockKind::Permits(n) => Some(n),
            _ => None,
        },
        "holders": i.holders.iter().map(holder_json).collect::<Vec<_>>(),
    })
}

fn remaining_text(r: Option<Duration>) -> String {
    match r {
        Some(r) => format!("expires in {}", cadenas::format_duration(r)),
        None => "never expires".into(),
    }
}

/// How a held key is held, in a few words: `held by OWNER, expires in 5s`, `held by 2
/// readers`, `3 of 4 permits held`.
fn held_text(i: &LockInfo) -> String {
    let n = i.holders.len();
    match i.kind {
        LockKind::Exclusive => format!("held by {}, {}", i.owner, remaining_text(i.remaining)),
        LockKind::Shared => format!("held by {n} reader{}", if n == 1 { "" } else { "s" }),
        LockKind::Permits(of) => format!("{n} of {of} permits held"),
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
        return Ok(if info.is_some() { 0 } else { 1 });
    }
    let Some(i) = &info else {
        println!("free");
        return Ok(1);
    };
    let line = |owner: &str, remaining: Option<Duration>, fence: Option<u64>| {
        let fence = fence.map(|f| format!(", fence {f}")).unwrap_or_default();
        format!("{owner}, {}{fence}", remaining_text(remaining))
    };
    if i.kind == LockKind::Exclusive {
        println!("locked by {}", line(&i.owner, i.remaining, i.fence));
        if let Some(m) = &i.metadata {
            println!("metadata: {m}");
        }
        return Ok(0);
    }
    let (title, each) = match i.kind {
        LockKind::Shared => ("shared", "reader"),
        _ => ("semaphore", "permit"),
    };
    println!("locked ({title}): {}", held_text(i));
    for h in &i.holders {
        println!("  {each} {}", line(&h.owner, h.remaining, h.fence));
        if let Some(m) = &h.metadata {
            println!("    metadata: {m}");
        }
    }
    Ok(0)
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
        // One line per holder; a reader's or permit's line ends in its kind.
        for i in &infos {
            let kind = match i.kind {
                LockKind::Exclusive => String::new(),
                LockKind::Shared => "\tshared".into(),
                LockKind::Permits(n) => format!("\tpermits {n}"),
            };
            let first = [HolderInfo::new(&i.owner, i.remaining, i.fence, None)];
            let holders = match i.kind {
                LockKind::Exclusive => &first[..],
                _ => &i.holders[..],
            };
            for h in holders {
                let fence = h.fence.map(|f| format!("\tfence {f}")).unwrap_or_default();
                println!(
                    "{}\t{}\t{}{fence}{kind}",
                    i.key,
                    h.owner,
                    remaining_text(h.remaining)
                );
            }
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
                    Ok(Some(i)) => held_text(&i),
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
