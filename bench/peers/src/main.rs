//! The Rust peers and raw ceilings `bench/compare` measures cadenas against, one measurement
//! per run, printed as one JSON line.
//!
//! ```text
//! cadenas-peers cycles  PEER URL[,URL…] TASKS SECONDS   acquire+release cycles/s, TASKS tasks
//!                                                       on their own keys
//! cadenas-peers handoff PEER URL[,URL…] SECONDS         release → blocked waiter holds it, µs
//! ```
//!
//! Peers: `raw-redis` (a redis-rs loop: `SET NX PX`, `EVALSHA` release; cycles only), `rslock`
//! (rslock 0.10), `redlock-rs` (redlock 2.0), `mysql-advisory` (`GET_LOCK`/`RELEASE_LOCK`),
//! `pg-advisory` (`pg_try_advisory_lock`/`pg_advisory_unlock`; blocking `pg_advisory_lock` for
//! the hand-off), `pg-lease` and `mysql-lease` (the SQL stores' own lease-mode statements,
//! as the store sends them, on the store's own pool, in a bare sqlx loop without the lock
//! layer: the ceiling of a durable lease row; cycles only). Several URLs = the Redlock peers
//! on several masters. Keys start with a random
//! prefix printed as `prefix`; the peers delete their locks, so nothing stays behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadenas_test_support::with_query;
use serde_json::json;

const TTL: Duration = Duration::from_secs(30);

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn usage() -> ! {
    eprintln!("usage: cadenas-peers cycles PEER URLS TASKS SECONDS | handoff PEER URLS SECONDS");
    eprintln!("peers: raw-redis rslock redlock-rs mysql-advisory pg-advisory pg-lease mysql-lease");
    std::process::exit(2)
}

/// Runs `tasks` copies of `cycle(task, n)` for `time`; cycles per second.
async fn cycles<F, Fut>(tasks: usize, time: Duration, cycle: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let cycle = Arc::new(cycle);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (cycle, stop, done) = (cycle.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    cycle(t, n).await;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let (n, secs) = (
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    for h in handles {
        h.await.unwrap();
    }
    n as f64 / secs
}

/// The waiter of a polling peer finds the lock held at a random point of its poll period.
fn random_hold(poll: Duration) -> Duration {
    Duration::from_millis(2) + poll.mul_f64(rand::random::<f64>())
}

/// Hand-off samples (µs) taken for a while, at least 5.
struct Samples {
    until: Instant,
    us: Vec<f64>,
}

impl Samples {
    fn new(time: Duration) -> Samples {
        Samples {
            until: Instant::now() + time,
            us: Vec::new(),
        }
    }

    fn more(&self) -> bool {
        Instant::now() < self.until || self.us.len() < 5
    }

    fn push(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
    }

    fn sorted(mut self) -> Vec<f64> {
        self.us.sort_by(|a, b| a.partial_cmp(b).unwrap());
        self.us
    }
}

async fn raw_redis(url: &str, prefix: &str, tasks: usize, time: Duration) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let con = client.get_multiplexed_async_connection().await.unwrap();
    let script = Arc::new(redis::Script::new(RELEASE));
    let prefix = prefix.to_owned();
    cycles(tasks, time, move |t, n| {
        let (mut con, script) = (con.clone(), script.clone());
        let (key, owner) = (
            format!("{prefix}raw-{t}-{}", n % 1000),
            format!("owner-{t}"),
        );
        async move {
            let ok: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(TTL.as_millis() as u64)
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(ok.is_some());
            let released: i64 = script
                .key(&key)
                .arg(&owner)
                .invoke_async(&mut con)
                .await
                .unwrap();
            assert_eq!(released, 1);
        }
    })
    .await
}

async fn rslock_cycles(urls: &[String], prefix: &str, tasks: usize, time: Duration) -> f64 {
    let manager = rslock::LockManager::new(urls.to_vec());
    let prefix = prefix.to_owned();
    cycles(tasks, time, move |t, n| {
        let manager = manager.clone();
        let key = format!("{prefix}rslock-{t}-{}", n % 1000).into_bytes();
        async move {
            let lock = manager.lock(&key[..], TTL).await.unwrap();
            manager.unlock(&lock).await;
        }
    })
    .await
}

async fn rslock_handoff(urls: &[String], prefix: &str, time: Duration) -> Vec<f64> {
    let manager = rslock::LockManager::new(urls.to_vec());
    let key = format!("{prefix}rslock-handoff").into_bytes();
    let mut samples = Samples::new(time);
    while samples.more() {
        let held = manager.lock(&key[..], TTL).await.unwrap();
        let waiter = {
            let (m, k) = (manager.clone(), key.clone());
            tokio::spawn(async move {
                let lock = m.acquire_no_guard(&k[..], TTL).await.unwrap();
                (Instant::now(), lock)
            })
        };
        // rslock sleeps a random 0–200 ms between tries.
        tokio::time::sleep(random_hold(Duration::from_millis(200))).await;
        let released_at = Instant::now();
        manager.unlock(&held).await;
        let (got_at, got) = waiter.await.unwrap();
        manager.unlock(&got).await;
        samples.push(got_at.duration_since(released_at));
    }
    samples.sorted()
}

/// redlock 2.0 is synchronous: its tasks are threads.
fn redlock_rs_cycles(urls: &[String], prefix: &str, tasks: usize, time: Duration) -> f64 {
    let rl = Arc::new(redlock::RedLock::new(urls.to_vec()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..tasks)
        .map(|t| {
            let (rl, stop, done, prefix) =
                (rl.clone(), stop.clone(), done.clone(), prefix.to_owned());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}redlock-{t}-{}", n % 1000);
                    let lock = rl
                        .lock(key.as_bytes(), TTL.as_millis() as usize)
                        .unwrap()
                        .expect("a free key is taken");
                    rl.unlock(&lock);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let (n, secs) = (
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / secs
}

fn redlock_rs_handoff(urls: &[String], prefix: &str, time: Duration) -> Vec<f64> {
    let rl = Arc::new(redlock::RedLock::new(urls.to_vec()));
    let key = format!("{prefix}redlock-handoff");
    let ttl = TTL.as_millis() as usize;
    let mut samples = Samples::new(time);
    while samples.more() {
        let held = rl.lock(key.as_bytes(), ttl).unwrap().unwrap();
        let waiter = {
            let (rl, key) = (rl.clone(), key.clone());
            std::thread::spawn(move || loop {
                // `lock` tries 3 times, up to 200 ms apart (the crate's defaults), then gives up.
                if let Some(l) = rl.lock(key.as_bytes(), ttl).unwrap() {
                    let got_at = Instant::now();
                    rl.unlock(&l);
                    return got_at;
                }
            })
        };
        std::thread::sleep(random_hold(Duration::from_millis(200)));
        let released_at = Instant::now();
        rl.unlock(&held);
        let got_at = waiter.join().unwrap();
        samples.push(got_at.duration_since(released_at));
    }
    samples.sorted()
}

/// The SQL statements of a server's own named locks: try to take, wait for, release (each
/// binds the name and returns 1 on success).
struct SqlLocks {
    try_lock: &'static str,
    wait_lock: &'static str,
    unlock: &'static str,
}

const MYSQL: SqlLocks = SqlLocks {
    try_lock: "SELECT GET_LOCK(?, 0)",
    wait_lock: "SELECT GET_LOCK(?, 30)",
    unlock: "SELECT RELEASE_LOCK(?)",
};

const POSTGRES: SqlLocks = SqlLocks {
    try_lock: "SELECT pg_try_advisory_lock(hashtext($1))::int::int8",
    wait_lock: "SELECT 1::int8 FROM (SELECT pg_advisory_lock(hashtext($1))) AS waited",
    unlock: "SELECT pg_advisory_unlock(hashtext($1))::int::int8",
};

async fn query_one(sql: &'static str, key: String, con: &mut sqlx::AnyConnection) {
    let ok: i64 = sqlx::query_scalar(sql)
        .bind(key)
        .fetch_one(con)
        .await
        .unwrap();
    assert_eq!(ok, 1, "{sql}");
}

/// Each task takes and releases its own named lock on its own connection.
async fn sql_cycles(url: &str, sql: SqlLocks, prefix: &str, tasks: usize, time: Duration) -> f64 {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(tasks as u32)
        .connect(url)
        .await
        .unwrap();
    let prefix = prefix.to_owned();
    cycles(tasks, time, move |t, _| {
        let (pool, key) = (pool.clone(), format!("{prefix}{t}"));
        async move {
            let mut c = pool.acquire().await.unwrap();
            query_one(sql.try_lock, key.clone(), &mut c).await;
            query_one(sql.unlock, key, &mut c).await;
        }
    })
    .await
}

/// The server's own blocking wait (`GET_LOCK(name, 30)`, `pg_advisory_lock`), woken by the
/// holder's release.
async fn sql_handoff(url: &str, sql: SqlLocks, prefix: &str, time: Duration) -> Vec<f64> {
    use sqlx::Connection;
    let key = format!("{prefix}handoff");
    let mut holder = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut waiter = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut samples = Samples::new(time);
    while samples.more() {
        query_one(sql.try_lock, key.clone(), &mut holder).await;
        let k = key.clone();
        let task = tokio::spawn(async move {
            query_one(sql.wait_lock, k, &mut waiter).await;
            (Instant::now(), waiter)
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let released_at = Instant::now();
        query_one(sql.unlock, key.clone(), &mut holder).await;
        let got_at;
        (got_at, waiter) = task.await.unwrap();
        query_one(sql.unlock, key.clone(), &mut waiter).await;
        samples.push(got_at.duration_since(released_at));
    }
    samples.sorted()
}

/// The PostgreSQL store's lease-mode acquire and release statements in a bare loop on the
/// store's pool (each task its own 1,000 keys, as `cadenas bench`); the table is dropped at
/// the end.
async fn pg_lease_cycles(url: &str, prefix: &str, tasks: usize, time: Duration) -> f64 {
    use cadenas::stores::postgres::PostgresStore;
    let table = format!("{}lease", prefix.replace('-', "_"));
    let store = PostgresStore::connect(&with_query(url, &format!("table={table}")))
        .await
        .unwrap();
    let pool = store.pool().clone();
    let s = store.lease_statements().expect("a lease-mode store");
    let sql: Arc<[String; 4]> =
        Arc::new([s.acquire, s.release, s.lock_class, s.channel].map(str::to_owned));
    let rate = cycles(tasks, time, move |t, n| {
        let (pool, sql) = (pool.clone(), sql.clone());
        let (key, owner) = (format!("k{t}-{}", n % 1000), format!("peer-{t:022}"));
        async move {
            let took: Option<(Option<i64>, Option<String>, Option<i64>)> = sqlx::query_as(&sql[0])
                .bind(&key)
                .bind(&owner)
                .bind(Some(TTL.as_millis() as i64))
                .bind(None::<String>)
                .bind(&sql[2])
                .fetch_optional(&pool)
                .await
                .unwrap();
            assert!(
                matches!(took, Some((Some(_), None, _))),
                "{key} was not free"
            );
            let released = sqlx::query(&sql[1])
                .bind(&key)
                .bind(&owner)
                .bind(&sql[3])
                .fetch_all(&pool)
                .await
                .unwrap();
            assert_eq!(released.len(), 1, "{key} was not released");
        }
    })
    .await;
    let drop =
        format!("DROP TABLE IF EXISTS \"{table}\", \"{table}_holders\"; DROP SEQUENCE IF EXISTS \"{table}_fence_seq\"");
    sqlx::raw_sql(&drop).execute(store.pool()).await.unwrap();
    rate
}

/// The MySQL store's lease-mode acquire (one transaction: draw the fence, take) and release
/// in a bare loop on the store's pool (each task its own 1,000 keys, as `cadenas bench`); the
/// tables are dropped at the end.
async fn mysql_lease_cycles(url: &str, prefix: &str, tasks: usize, time: Duration) -> f64 {
    use cadenas::stores::mysql::MySqlStore;
    let table = format!("{}lease", prefix.replace('-', "_"));
    let store = MySqlStore::connect(&with_query(url, &format!("table={table}")))
        .await
        .unwrap();
    let pool = store.pool().clone();
    let s = store.lease_statements().expect("a lease-mode store");
    let sql: Arc<[String; 3]> = Arc::new([s.draw_fence, s.take, s.release].map(str::to_owned));
    let returns_row = s.release_returns_row;
    let rate = cycles(tasks, time, move |t, n| {
        let (pool, sql) = (pool.clone(), sql.clone());
        let (key, owner) = (format!("k{t}-{}", n % 1000), format!("peer-{t:022}"));
        async move {
            let mut tx = pool.begin().await.unwrap();
            let fence = sqlx::query(&sql[0])
                .bind(&key)
                .execute(&mut *tx)
                .await
                .unwrap()
                .last_insert_id();
            let took = sqlx::query(&sql[1])
                .bind(&key)
                .bind(&owner)
                .bind(Some(TTL.as_millis() as i64))
                .bind(fence)
                .bind(None::<String>)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(took.last_insert_id(), fence, "{key} was not free");
            let release = sqlx::query(&sql[2]).bind(&key).bind(&owner);
            let released = match returns_row {
                true => release.fetch_optional(&pool).await.unwrap().is_some(),
                false => release.execute(&pool).await.unwrap().rows_affected() == 1,
            };
            assert!(released, "{key} was not released");
        }
    })
    .await;
    let drop = format!("DROP TABLE IF EXISTS `{table}`, `{table}_fences`, `{table}_holders`");
    sqlx::raw_sql(&drop).execute(store.pool()).await.unwrap();
    rate
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, peer, urls) = match &args[..] {
        [mode, peer, urls, ..] => (mode.as_str(), peer.as_str(), urls),
        _ => usage(),
    };
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let num = |i: usize| -> f64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let prefix = format!("cadenas-peers-{:08x}-", rand::random::<u32>());
    let out = match mode {
        "cycles" => {
            let (tasks, time) = (num(3) as usize, Duration::from_secs_f64(num(4)));
            let rate = match peer {
                "raw-redis" => raw_redis(&urls[0], &prefix, tasks, time).await,
                "rslock" => rslock_cycles(&urls, &prefix, tasks, time).await,
                "redlock-rs" => {
                    let (urls, prefix) = (urls.clone(), prefix.clone());
                    tokio::task::spawn_blocking(move || {
                        redlock_rs_cycles(&urls, &prefix, tasks, time)
                    })
                    .await
                    .unwrap()
                }
                "mysql-advisory" => sql_cycles(&urls[0], MYSQL, &prefix, tasks, time).await,
                "pg-advisory" => sql_cycles(&urls[0], POSTGRES, &prefix, tasks, time).await,
                "pg-lease" => pg_lease_cycles(&urls[0], &prefix, tasks, time).await,
                "mysql-lease" => mysql_lease_cycles(&urls[0], &prefix, tasks, time).await,
                _ => usage(),
            };
            json!({ "peer": peer, "tasks": tasks, "cycles_per_sec": rate, "prefix": prefix })
        }
        "handoff" => {
            let time = Duration::from_secs_f64(num(3));
            let samples = match peer {
                "rslock" => rslock_handoff(&urls, &prefix, time).await,
                "redlock-rs" => {
                    let (urls, prefix) = (urls.clone(), prefix.clone());
                    tokio::task::spawn_blocking(move || redlock_rs_handoff(&urls, &prefix, time))
                        .await
                        .unwrap()
                }
                "mysql-advisory" => sql_handoff(&urls[0], MYSQL, &prefix, time).await,
                "pg-advisory" => sql_handoff(&urls[0], POSTGRES, &prefix, time).await,
                _ => usage(),
            };
            json!({ "peer": peer, "handoff_us": samples, "prefix": prefix })
        }
        _ => usage(),
    };
    println!("{out}");
}
