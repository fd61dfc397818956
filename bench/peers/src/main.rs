//! cadenas against a hand-written redis-rs loop and rslock 0.10, on the same Redis, in one run.
//!
//! `cargo run --release -p cadenas-peers -- [REDIS_URL] [SECONDS_PER_SAMPLE]`
//!
//! Prints one JSON object: one-task acquire+release cycles/s for each (median of 3 interleaved
//! samples), 64 tasks on distinct keys through one `Locks`, and hand-off latency on one key.

use std::time::{Duration, Instant};

use cadenas::Locks;
use redis::AsyncCommands;

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

async fn raw(url: &str, prefix: &str, time: Duration) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let script = redis::Script::new(RELEASE);
    let owner = cadenas::new_owner();
    let keys: Vec<String> = (0..1000).map(|i| format!("{prefix}raw-{i}")).collect();
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < time {
        let key = &keys[n % keys.len()];
        let ok: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(ok.is_some());
        let _: i64 = script
            .key(key)
            .arg(&owner)
            .invoke_async(&mut con)
            .await
            .unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn ours(locks: &Locks, tag: &str, time: Duration) -> f64 {
    let handles: Vec<_> = (0..1000)
        .map(|i| locks.lock(&format!("{tag}-{i}")))
        .collect();
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < time {
        let g = handles[n % handles.len()].acquire().await.unwrap();
        g.release().await.unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn rslock(url: &str, prefix: &str, time: Duration) -> f64 {
    let manager = rslock::LockManager::new(vec![url.to_owned()]);
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{prefix}rslock-{i}").into_bytes())
        .collect();
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed() < time {
        let key: &[u8] = &keys[n % keys.len()];
        let lock = manager.lock(key, Duration::from_secs(30)).await.unwrap();
        manager.unlock(&lock).await;
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or("redis://127.0.0.1:6379".into());
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let time = Duration::from_secs_f64(secs);
    let prefix = format!("peers-{}-", &cadenas::new_owner()[..8]);
    let locks = Locks::connect(&format!("{url}?namespace={}", prefix.trim_end_matches('-')))
        .await
        .unwrap();
    let (mut r, mut c, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        r.push(raw(&url, &prefix, time).await);
        c.push(ours(&locks, &format!("r{round}"), time).await);
        s.push(rslock(&url, &prefix, time).await);
    }
    let (raw1, ours1, rslock1) = (median(r), median(c), median(s));
    let bench = |tasks: usize| cadenas::cli::bench::BenchOptions {
        store: url.clone(),
        tasks,
        keys: 6400,
        duration: time * 3,
    };
    let many = cadenas::cli::bench::run(&bench(64)).await.unwrap();
    let one = cadenas::cli::bench::run(&bench(1)).await.unwrap();
    // Clean up everything the run made (cadenas' fence counters included).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{}*", prefix.trim_end_matches('-')))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        for k in keys {
            let _: () = con.del(&k).await.unwrap();
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
            "seconds_per_sample": secs,
            "one_task_cycles_per_sec": {
                "raw_redis_rs_set_nx_px_evalsha": raw1,
                "cadenas": ours1,
                "rslock_0_10": rslock1,
                "cadenas_vs_raw": ours1 / raw1,
                "cadenas_vs_rslock": ours1 / rslock1,
            },
            "cadenas_64_tasks_distinct_keys_cycles_per_sec": many.uncontended_cycles_per_sec,
            "cadenas_64_tasks_one_key_cycles_per_sec": many.contended_cycles_per_sec,
            "handoff_us": {
                "p50": one.handoff_p50_us, "p95": one.handoff_p95_us,
                "p99": one.handoff_p99_us, "max": one.handoff_max_us,
                "samples": one.handoff_samples,
            },
        })
    );
}
