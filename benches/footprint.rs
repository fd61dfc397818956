//! Bytes per held lock in the memory store, and per-operation time with 1,000,000 locks held
//! against an empty store. Prints one line per figure.
//! `cargo bench --bench footprint`

use std::time::{Duration, Instant};

use cadenas::stores::memory::MemoryStore;
use cadenas::{AcquireRequest, Store};

const HELD: u32 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn cycles_per_sec(store: &MemoryStore, rounds: u32) -> f64 {
    let keys: Vec<String> = (0..1000).map(|i| format!("probe-{i}")).collect();
    let start = Instant::now();
    for r in 0..rounds {
        let key = &keys[(r % 1000) as usize];
        store
            .try_acquire(AcquireRequest::new(
                key,
                "01hzyxwvutsrqpnmkjhgfedcba",
                Some(Duration::from_secs(30)),
            ))
            .await
            .unwrap();
        store
            .release(key, "01hzyxwvutsrqpnmkjhgfedcba")
            .await
            .unwrap();
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let empty = MemoryStore::new();
        let mut empty_rates = Vec::new();
        for _ in 0..5 {
            empty_rates.push(cycles_per_sec(&empty, 2_000_000).await);
        }
        let before = rss_bytes();
        let full = MemoryStore::new();
        for i in 0..HELD {
            // Keys like a service's ("invoice:1234567"), owners as cadenas makes them.
            let key = format!("invoice:{i:07}");
            let owner = cadenas::new_owner();
            full.try_acquire(AcquireRequest::new(&key, &owner, Some(Duration::from_secs(3600))))
            .await
            .unwrap();
        }
        let after = rss_bytes();
        let mut full_rates = Vec::new();
        for _ in 0..5 {
            full_rates.push(cycles_per_sec(&full, 2_000_000).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (e, f) = (median(&mut empty_rates), median(&mut full_rates));
        println!("memory store, empty: {e:.0} acquire+release cycles/s (store level, median of 5)");
        println!("memory store, {HELD} held: {f:.0} cycles/s; per-op time {:.2}x the empty store", e / f);
        println!(
            "memory store: {:.0} bytes per held lock (RSS growth over {HELD} locks, 15-byte keys, 26-byte owners)",
            (after - before) as f64 / HELD as f64
        );
        assert_eq!(full.len(), HELD as usize);
    });
}
