//! Holder safety against real stores: a dropped guard logs and frees its lock, a store that
//! goes away fires the lost signal before the lease would expire, and the expiry watcher run
//! by three OS processes reports each expiry exactly once.
//!
//! The three watcher processes are this test binary run again with `--exact
//! expiry_watcher_child --ignored`: the `expiry_watcher_child` test does nothing unless the
//! parent set `CADENAS_WATCH_CHILD_URL`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cadenas::{EventKind, Locks};
use tokio::time::Instant;

fn random(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() >> 16)
}

use cadenas_test_support::captured::Captured;

use cadenas_test_support::process::wait_until_async as wait_until;

async fn dropped_guard_logs_and_frees(url: &str) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let locks = Locks::connect(url).await.unwrap();
    let key = random("dropped-");
    let guard = locks.lock(&key).acquire().await.unwrap();
    let owner = guard.owner().to_owned();
    drop(guard);
    let lock = locks.lock(&key);
    wait_until(
        "the dropped guard's lock is free",
        Duration::from_secs(20),
        || {
            let lock = lock.clone();
            async move { !lock.is_locked().await.unwrap() }
        },
    )
    .await;
    let text = logs.text();
    let warn = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("dropped without release"))
        .unwrap_or_else(|| panic!("no warning about the dropped guard in:\n{text}"));
    assert!(warn.contains(&key), "{warn}");
    // Spans carry the key, the store and a hashed owner, never the owner id itself.
    assert!(text.contains("cadenas.acquire"), "{text}");
    assert!(text.contains("outcome"), "{text}");
    assert!(
        !text.contains(&owner),
        "the owner id leaked into the logs:\n{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_guard_logs_a_warning_and_frees_the_lock_memory() {
    dropped_guard_logs_and_frees("memory:").await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "current_thread")]
async fn dropped_guard_logs_a_warning_and_frees_the_lock_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    dropped_guard_logs_and_frees(&url).await;
}

#[cfg(feature = "redis")]
use cadenas_test_support::redis::{RedisCluster, RedisServer};

/// Kill the Redis server under a guard with auto_extend: the lost signal fires before the
/// lease would have expired, and it is logged once.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fires_the_lost_signal_before_the_lease_expires() {
    let mut server = RedisServer::start();
    let url = format!("{}?timeout=500ms&connect_timeout=500ms", server.url());
    let locks = Locks::connect(&url).await.unwrap();
    let mut events = locks.events();
    let ttl = Duration::from_secs(3);
    let guard = locks
        .lock("going-away")
        .with_ttl(Some(ttl))
        .with_auto_extend(true)
        .acquire()
        .await
        .unwrap();
    // Let the watchdog extend once so we know it is running.
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(matches!(first, Ok(Ok(ref e)) if e.kind == EventKind::Acquired));
    let extended = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(matches!(extended, Ok(Ok(ref e)) if e.kind == EventKind::Extended));
    // The lease the store holds ends at the latest `remaining_time` from now.
    let expires = Instant::now() + guard.remaining_time().unwrap();
    server.kill();
    let lost = tokio::time::timeout(Duration::from_secs(20), guard.lost()).await;
    let at = Instant::now();
    assert!(matches!(lost, Ok(cadenas::Error::Lost { .. })), "{lost:?}");
    assert!(
        at < expires,
        "the lost signal fired {:?} after the lease would have expired",
        at - expires
    );
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Lost).count(),
        1,
        "{kinds:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(15), guard.release()).await;
}

/// Run by the parent test as a separate process: watches `CADENAS_WATCH_CHILD_PREFIX` on
/// `CADENAS_WATCH_CHILD_URL` every 10 ms and prints `REAPED key fence` for each expiry it
/// wins, until its standard input closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of expiry_watcher_*; does nothing when run alone"]
async fn expiry_watcher_child() {
    let Ok(url) = std::env::var("CADENAS_WATCH_CHILD_URL") else {
        return;
    };
    let prefix = std::env::var("CADENAS_WATCH_CHILD_PREFIX").unwrap();
    let locks = Locks::connect(&url).await.unwrap();
    let mut events = locks.events();
    let _watcher = locks
        .watch_expiries(&prefix, Duration::from_millis(10))
        .unwrap();
    let (tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
        let _ = tx.send(());
    });
    println!("READY");
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) if e.kind == EventKind::Reaped => {
                    println!("REAPED {} {:?}", e.key, e.fence);
                }
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            },
            _ = &mut stdin_closed => break,
        }
    }
}

struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn spawn_watcher(url: &str, prefix: &str) -> Watcher {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "expiry_watcher_child",
            "--ignored",
            "--nocapture",
        ])
        .env("CADENAS_WATCH_CHILD_URL", url)
        .env("CADENAS_WATCH_CHILD_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Watcher { child, lines }
}

fn reaped(w: &Watcher) -> Vec<String> {
    w.lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("REAPED ").map(str::to_owned))
        .collect()
}

/// Three processes watch one namespace while 40 short leases expire: every expiry is
/// reported, and by exactly one process.
async fn three_watchers_report_each_expiry_once(url: &str) {
    let prefix = random("exp-");
    let watchers: Vec<Watcher> = (0..3).map(|_| spawn_watcher(url, &prefix)).collect();
    let ready = || {
        watchers
            .iter()
            .all(|w| w.lines.lock().unwrap().iter().any(|l| l == "READY"))
    };
    wait_until("the watchers are ready", Duration::from_secs(60), || {
        let r = ready();
        async move { r }
    })
    .await;
    let locks = Locks::connect(url).await.unwrap();
    let mut expected = HashMap::new();
    for i in 0..40 {
        let key = format!("{prefix}{i:02}");
        let g = locks
            .lock(&key)
            .with_ttl(Some(Duration::from_millis(100 + 10 * i)))
            .acquire()
            .await
            .unwrap();
        expected.insert(key, format!("{:?}", g.fence()));
        g.leak();
    }
    // A released lock and a live one are never reported.
    let released = format!("{prefix}released");
    locks
        .lock(&released)
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let live = locks
        .lock(&format!("{prefix}live"))
        .with_ttl(Some(Duration::from_secs(60)))
        .acquire()
        .await
        .unwrap();
    let total = || watchers.iter().map(|w| reaped(w).len()).sum::<usize>();
    let want = expected.len();
    wait_until("every expiry is reported", Duration::from_secs(60), || {
        let n = total();
        async move { n >= want }
    })
    .await;
    // Several more sweeps of every watcher, for a duplicate to show up if there were one.
    let sweeps_done = Instant::now() + Duration::from_millis(300);
    wait_until(
        "a few more sweeps ran",
        Duration::from_secs(5),
        || async move { Instant::now() >= sweeps_done },
    )
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut winners = 0;
    for mut w in watchers {
        drop(w.child.stdin.take());
        let status = w.child.wait().unwrap();
        assert!(status.success(), "a watcher process failed: {status}");
        let mine = reaped(&w);
        winners += usize::from(!mine.is_empty());
        for line in mine {
            let (key, fence) = line.split_once(' ').unwrap();
            assert_eq!(expected.get(key).map(String::as_str), Some(fence), "{line}");
            *seen.entry(key.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {twice:?}");
    assert_eq!(seen.len(), expected.len(), "every expiry reported once");
    eprintln!(
        "{url}: {} expiries, reported by {winners} of 3 processes",
        seen.len()
    );
    assert!(locks
        .lock(&format!("{prefix}live"))
        .is_locked()
        .await
        .unwrap());
    live.release().await.unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watcher_in_three_processes_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    three_watchers_report_each_expiry_once(&url).await;
}

/// On Redis the watchers listen to keyspace events, which a fresh server has off: the first
/// sweep turns them on. The watcher reads the holdings' records: `records=true`.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watcher_in_three_processes_redis() {
    let server = RedisServer::start();
    three_watchers_report_each_expiry_once(&format!("{}?records=true", server.url())).await;
}

/// On a Cluster each watcher listens to every master.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watcher_in_three_processes_redis_cluster() {
    let cluster = RedisCluster::start(3);
    three_watchers_report_each_expiry_once(&format!("{}?records=true", cluster.url())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watcher_in_three_processes_postgres() {
    let base = cadenas_test_support::postgres::base_url();
    let table = random("cadenas_watch_");
    let url = format!("{base}?table={table}");
    if let Err(e) = Locks::connect(&url).await {
        panic!("PostgreSQL is not reachable at {base}: {e}. Start it or set CADENAS_TEST_POSTGRES_URL.");
    }
    three_watchers_report_each_expiry_once(&url).await;
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    for s in [
        format!("DROP TABLE IF EXISTS \"{table}\""),
        format!("DROP TABLE IF EXISTS \"{table}_holders\""),
        format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""),
    ] {
        sqlx::query(&s).execute(&pool).await.unwrap();
    }
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watcher_in_three_processes_mariadb() {
    let base = cadenas_test_support::mysql::base_url();
    let table = random("cadenas_watch_");
    let url = format!("{base}?table={table}");
    if let Err(e) = Locks::connect(&url).await {
        panic!("MySQL/MariaDB is not reachable at {base}: {e}. Start it or set CADENAS_TEST_MYSQL_URL.");
    }
    three_watchers_report_each_expiry_once(&url).await;
    let pool = sqlx::MySqlPool::connect(&base).await.unwrap();
    for t in [
        table.clone(),
        format!("{table}_fences"),
        format!("{table}_holders"),
    ] {
        sqlx::query(&format!("DROP TABLE IF EXISTS `{t}`"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
