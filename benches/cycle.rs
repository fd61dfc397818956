//! The cost of one acquire+release cycle through the lock API on the memory store, for
//! instruction counts: a fixed number of cycles in one function that callgrind can count
//! alone (`--toggle-collect=*measured_cycles*`), then the rate of a timed run.
//!
//! ```text
//! cargo bench --bench cycle                      # cycles/s of a 2 s run
//! valgrind --tool=callgrind --toggle-collect='*measured_cycles*' \
//!     target/release/deps/cycle-<hash> --cycles 100000   # instructions ÷ 100,000
//! ```
//!
//! The loop is `cadenas bench`'s uncontended phase: one task, 1,000 keys in turn under a
//! namespace, a 30 s ttl, `Lock::acquire` then `Guard::release`. `--subscriber` installs a
//! tracing subscriber at `warn`, as the `cadenas` binary does; without it none is set.

use std::time::{Duration, Instant};

use cadenas::{Lock, Locks};

fn lock_handles() -> Vec<Lock> {
    let locks = Locks::builder()
        .namespace("cadenas-bench-cycle")
        .ttl(Some(Duration::from_secs(30)))
        .build(cadenas::stores::memory::MemoryStore::new())
        .unwrap();
    (0..1000).map(|i| locks.lock(&format!("k0-{i}"))).collect()
}

async fn cycle(lock: &Lock) {
    let guard = lock.acquire().await.unwrap();
    guard.release().await.unwrap();
}

#[inline(never)]
fn measured_cycles(rt: &tokio::runtime::Runtime, handles: &[Lock], n: usize) {
    rt.block_on(async {
        for i in 0..n {
            cycle(&handles[i % handles.len()]).await;
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cycles = args
        .iter()
        .position(|a| a == "--cycles")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse::<usize>().expect("--cycles N"));
    if args.iter().any(|a| a == "--subscriber") {
        // As the `cadenas` binary does: a subscriber that keeps `warn` and up.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handles = lock_handles();
    // Warm up: every key once, so the map and the allocator are in their steady state.
    measured_cycles(&rt, &handles, 0);
    rt.block_on(async {
        for lock in &handles {
            cycle(lock).await;
        }
    });
    match cycles {
        Some(n) => {
            measured_cycles(&rt, &handles, n);
            println!("{n} cycles");
        }
        None => {
            let mut rates = Vec::new();
            for _ in 0..5 {
                let n = 400_000;
                let started = Instant::now();
                measured_cycles(&rt, &handles, n);
                rates.push(n as f64 / started.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "memory, lock API, one task: median {:.0} cycles/s (best {:.0}) of 5 runs of 400,000",
                rates[2], rates[4]
            );
        }
    }
}
