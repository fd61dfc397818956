//! The client half of `bench/redis-callgrind`: runs acquire+release cycles against one Redis,
//! one task, with a pause between the warm-up and the measured cycles so that the script can
//! zero the server's instruction counters there.
//!
//! `cargo run --release -p cadenas-peers --bin redis-callgrind-client -- MODE URL WARMUP CYCLES`
//!
//! Modes: `raw` (`SET key owner NX PX 30000` + an `EVALSHA` owner-checked delete, the loop
//! of `cadenas-peers cycles raw-redis`), `store` (the Redis store's `try_acquire` + `release`;
//! `store-records` the same with `records=true`),
//! `lock` (`Locks::lock(key).acquire()` + `release()`, the whole lock API), `rslock`
//! (rslock 0.10's `lock` + `unlock`; `lock` on a `redlock://` URL is a Redlock through the
//! lock API). Each cycle takes
//! the next of 100 keys, so fence counters exist after the warm-up as they do in a long run.
//! Floors of other layouts, for comparison: `native` (`MULTI` `SET NX PX` + `INCR`, then the
//! raw release), `native-record` (the same plus a `SET` of a record string in the `MULTI`),
//! `lua-min` (a script doing `SET NX PX` + `INCR`, then the raw release). With `CG_RELEASE`
//! set to a script's text, `native` releases with that script instead (`KEYS`: lock key,
//! a state key; `ARGV`: owner, a channel), to price the parts of a release one by one.
//!
//! Protocol on stdout/stdin: prints `warm` after the warm-up, waits for one line on stdin,
//! runs the cycles, prints `done`.

use std::io::BufRead;
use std::time::Duration;

use cadenas::stores::redis::RedisStore;
use cadenas::{Acquire, AcquireRequest, Locks, Store};

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
const TTL: Duration = Duration::from_secs(30);
const KEYS: usize = 100;

#[allow(clippy::large_enum_variant)] // one value per run
enum Driver {
    Raw {
        con: redis::aio::MultiplexedConnection,
        script: redis::Script,
        owner: String,
    },
    Store {
        store: RedisStore,
        owner: String,
    },
    Lock {
        locks: Vec<cadenas::Lock>,
    },
    /// rslock 0.10's `lock` + `unlock` (one node, or as many as the URLs name).
    Rslock {
        manager: rslock::LockManager,
    },
    /// Floors of layouts under consideration, not cadenas: `MULTI` `SET NX PX` + `INCR`
    /// (optionally + `SET` of a record string), then the raw loop's release.
    Native {
        con: redis::aio::MultiplexedConnection,
        script: redis::Script,
        owner: String,
        record: bool,
        /// A release script of `CG_RELEASE` (`KEYS`: lock, state; `ARGV`: owner, channel),
        /// to price the parts of a release one by one.
        custom_release: bool,
    },
    /// A script doing `SET NX PX` + `INCR`, then the raw loop's release.
    LuaMin {
        con: redis::aio::MultiplexedConnection,
        acquire: redis::Script,
        script: redis::Script,
        owner: String,
    },
}

impl Driver {
    async fn cycle(&mut self, keys: &[String], n: usize) {
        let i = n % KEYS;
        let key = &keys[i];
        match self {
            Driver::Raw { con, script, owner } => {
                let ok: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(&*owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .query_async(con)
                    .await
                    .expect("SET NX PX");
                assert!(ok.is_some(), "{key} was not free");
                let released: i64 = script
                    .key(key)
                    .arg(&*owner)
                    .invoke_async(con)
                    .await
                    .expect("release script");
                assert_eq!(released, 1);
            }
            Driver::Store { store, owner } => {
                let request = AcquireRequest::new(key, owner, Some(TTL));
                match store.try_acquire(request).await.expect("try_acquire") {
                    Acquire::Acquired(lease) => assert!(lease.fence.is_some()),
                    Acquire::Held(h) => panic!("{key} was not free: {h:?}"),
                }
                assert!(store.release(key, owner).await.expect("release"));
            }
            Driver::Native {
                con,
                script,
                owner,
                record,
                custom_release,
            } => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(&*owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .cmd("INCR")
                    .arg(format!("{key}:fence"));
                if *record {
                    pipe.cmd("SET")
                        .arg(format!("{key}:rec"))
                        .arg("0123456789abcdef 1764000000123456")
                        .arg("PX")
                        .arg(TTL.as_millis() as u64 + 60_000)
                        .ignore();
                }
                let (ok, _fence): (Option<String>, u64) =
                    pipe.query_async(con).await.expect("MULTI");
                assert!(ok.is_some(), "{key} was not free");
                let mut release = script.key(key);
                release.arg(&*owner);
                if *custom_release {
                    release
                        .key(format!("{key}:state"))
                        .arg(format!("{key}:released"));
                }
                let released: i64 = release.invoke_async(con).await.expect("release script");
                assert_eq!(released, 1);
            }
            Driver::LuaMin {
                con,
                acquire,
                script,
                owner,
            } => {
                let fence: Option<u64> = acquire
                    .key(key)
                    .key(format!("{key}:fence"))
                    .arg(&*owner)
                    .arg(TTL.as_millis() as u64)
                    .invoke_async(con)
                    .await
                    .expect("acquire script");
                assert!(fence.is_some(), "{key} was not free");
                let released: i64 = script
                    .key(key)
                    .arg(&*owner)
                    .invoke_async(con)
                    .await
                    .expect("release script");
                assert_eq!(released, 1);
            }
            Driver::Lock { locks } => {
                let guard = locks[i].acquire().await.expect("acquire");
                guard.release().await.expect("release");
            }
            Driver::Rslock { manager } => {
                let lock = manager
                    .lock(key.as_bytes(), TTL)
                    .await
                    .expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, url, warmup, cycles] = args.as_slice() else {
        eprintln!(
            "usage: redis_callgrind raw|store|store-records|lock|rslock|redlock|redlock-unfenced|native|native-record|lua-min URL WARMUP CYCLES"
        );
        std::process::exit(2);
    };
    let (warmup, cycles): (usize, usize) = (warmup.parse()?, cycles.parse()?);
    let ns = format!("cg-{}", &cadenas::new_owner()[..8]);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{ns}:k{i}")).collect();
    let mut driver = match mode.as_str() {
        "raw" => Driver::Raw {
            con: redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
            script: redis::Script::new(RELEASE),
            owner: cadenas::new_owner(),
        },
        "store" => Driver::Store {
            store: RedisStore::connect(url).await?,
            owner: cadenas::new_owner(),
        },
        "store-records" => Driver::Store {
            store: RedisStore::connect(&format!("{url}?records=true")).await?,
            owner: cadenas::new_owner(),
        },
        "lock" => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let locks = Locks::connect(&format!("{url}{sep}namespace={ns}")).await?;
            Driver::Lock {
                locks: (0..KEYS).map(|i| locks.lock(&format!("k{i}"))).collect(),
            }
        }
        // A one-node Redlock through the lock API: what each node of a Redlock spends per
        // cycle (`redlock-unfenced`: with `fences=false`).
        "redlock" | "redlock-unfenced" => {
            let node = url.trim_start_matches("redis://");
            let fences = mode == "redlock";
            let locks =
                Locks::connect(&format!("redlock://{node}?namespace={ns}&fences={fences}"))
                    .await?;
            Driver::Lock {
                locks: (0..KEYS).map(|i| locks.lock(&format!("k{i}"))).collect(),
            }
        }
        "rslock" => Driver::Rslock {
            manager: rslock::LockManager::new(vec![url.clone()]),
        },
        "native" | "native-record" => Driver::Native {
            con: redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
            script: redis::Script::new(
                &std::env::var("CG_RELEASE").unwrap_or_else(|_| RELEASE.to_owned()),
            ),
            owner: cadenas::new_owner(),
            record: mode == "native-record",
            custom_release: std::env::var_os("CG_RELEASE").is_some(),
        },
        "lua-min" => Driver::LuaMin {
            con: redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
            acquire: redis::Script::new(
                "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return nil end \
                 return redis.call('INCR', KEYS[2])",
            ),
            script: redis::Script::new(RELEASE),
            owner: cadenas::new_owner(),
        },
        other => return Err(format!("unknown mode {other}").into()),
    };
    for n in 0..warmup {
        driver.cycle(&keys, n).await;
    }
    println!("warm");
    std::io::stdin().lock().lines().next();
    for n in warmup..warmup + cycles {
        driver.cycle(&keys, n).await;
    }
    println!("done");
    Ok(())
}
