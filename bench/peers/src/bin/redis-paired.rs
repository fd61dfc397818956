//! cadenas against a hand-written redis-rs loop on the same Redis, in alternating short
//! slices (raw loop, the Redis store's own `try_acquire`/`release`, the whole lock API), so that both see the same machine load: the median of the per-pair ratios is
//! robust on a noisy machine where whole-run figures are not.
//!
//! `cargo run --release -p cadenas-peers --bin redis-paired -- [REDIS_URL] [PAIRS] [SLICE]`
//! (defaults: `redis://127.0.0.1:6379`, 40 pairs, `250ms`). Prints one JSON object.

use std::time::{Duration, Instant};

use cadenas::stores::redis::RedisStore;
use cadenas::{Acquire, AcquireRequest, Locks, Store};

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// `SET key owner NX PX 30000` + an `EVALSHA` owner-checked delete, one task.
async fn raw(
    con: &mut redis::aio::MultiplexedConnection,
    script: &redis::Script,
    keys: &[String],
    slice: Duration,
) -> f64 {
    let owner = cadenas::new_owner();
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < slice {
        let key = &keys[n % keys.len()];
        let ok: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(con)
            .await
            .expect("SET NX PX");
        assert!(ok.is_some(), "{key} was not free");
        let _: i64 = script
            .key(key)
            .arg(&owner)
            .invoke_async(con)
            .await
            .expect("release script");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `acquire` + `release` through the whole lock API, one task.
async fn ours(locks: &[cadenas::Lock], slice: Duration) -> f64 {
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < slice {
        let guard = locks[n % locks.len()].acquire().await.expect("acquire");
        guard.release().await.expect("release");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `try_acquire` + `release` on the store itself, below the lock layer, one task.
async fn store(store: &dyn Store, keys: &[String], slice: Duration) -> f64 {
    let owner = cadenas::new_owner();
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < slice {
        let key = &keys[n % keys.len()];
        let request = AcquireRequest::new(key, &owner, Some(Duration::from_secs(30)));
        match store.try_acquire(request).await.expect("try_acquire") {
            Acquire::Acquired(_) => {}
            Acquire::Held(h) => panic!("{key} was not free: {h:?}"),
        }
        assert!(store.release(key, &owner).await.expect("release"));
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or("redis://127.0.0.1:6379".into());
    let pairs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(40);
    let slice = args
        .get(2)
        .map(|s| humantime::parse_duration(s))
        .transpose()?
        .unwrap_or(Duration::from_millis(250));
    let ns = format!("paired-{}", &cadenas::new_owner()[..8]);
    let factory = Locks::connect(&format!("{url}?namespace={ns}")).await?;
    let locks: Vec<_> = (0..100).map(|i| factory.lock(&format!("k{i}"))).collect();
    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let script = redis::Script::new(RELEASE);
    let keys: Vec<String> = (0..100).map(|i| format!("{ns}:raw{i}")).collect();
    let direct = RedisStore::connect(&url).await?;
    let store_keys: Vec<String> = (0..100).map(|i| format!("{ns}:store{i}")).collect();
    let (mut raws, mut ourss, mut stores) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut store_ratios) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let r = raw(&mut con, &script, &keys, slice).await;
        let s = store(&direct, &store_keys, slice).await;
        let o = ours(&locks, slice).await;
        raws.push(r);
        stores.push(s);
        ourss.push(o);
        ratios.push(o / r);
        store_ratios.push(s / r);
    }
    // Remove what the run left: fence counters and expired-state records of our namespace.
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{ns}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !found.is_empty() {
            redis::cmd("DEL").arg(&found).exec_async(&mut con).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    println!(
        "{}",
        serde_json::json!({
            "redis": url,
            "pairs": pairs,
            "slice_ms": slice.as_millis() as u64,
            "raw_cycles_per_sec_median": median(raws),
            "store_cycles_per_sec_median": median(stores),
            "store_vs_raw_median_ratio": median(store_ratios),
            "cadenas_cycles_per_sec_median": median(ourss),
            "cadenas_vs_raw_median_ratio": median(ratios),
        })
    );
    Ok(())
}
