//! What the PostgreSQL and MySQL/MariaDB helpers ([`crate::postgres`], [`crate::mysql`])
//! share: random table names, tables dropped at the end of a test, and store calls written
//! over any [`Store`].

use std::time::{Duration, Instant};

use cadenas::store::{Acquire, AcquireRequest, Store};

/// A 60 s lease: longer than any test.
pub const LONG: Option<Duration> = Some(Duration::from_secs(60));

/// `prefix_` and 16 random hex digits: a table nobody else uses.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// The fence of an acquisition; panics if the key was held.
pub fn fence_of(a: Acquire) -> u64 {
    match a {
        Acquire::Acquired(lease) => lease.fence.expect("the store fences"),
        Acquire::Held(h) => panic!("expected to acquire, held by {h:?}"),
    }
}

/// Tries until acquired (for [`LONG`]) or `limit` passes; returns the fence.
pub async fn acquire_within<S: Store + ?Sized>(
    store: &S,
    key: &str,
    owner: &str,
    limit: Duration,
) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        match store
            .try_acquire(AcquireRequest::new(key, owner, LONG))
            .await
            .unwrap()
        {
            Acquire::Acquired(l) => return l.fence.unwrap(),
            Acquire::Held(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Acquire::Held(h) => panic!("still held after {limit:?}: {h:?}"),
        }
    }
}

/// Which server a [`Cleanup`] runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    Postgres,
    Mysql,
}

/// Drops the test's tables (and sequences) when the test ends, even if it panicked.
pub struct Cleanup {
    pub(crate) dialect: Dialect,
    pub(crate) url: String,
    /// The statements run on Drop.
    pub statements: Vec<String>,
}

impl Cleanup {
    /// The statements run on `url` on Drop, through a runtime of their own (Drop may run
    /// inside or outside one), on one connection whose lock waits are bounded: Drop blocks
    /// the test's runtime, so a transaction a task of that runtime left open (a guard's
    /// release in the background) would make a `DROP TABLE` wait forever. After
    /// [`LOCK_WAIT`] the statement fails and the test goes on (its table left behind).
    fn run(dialect: Dialect, url: String, statements: Vec<String>) {
        use sqlx::Connection;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let wait = LOCK_WAIT.as_secs();
        rt.block_on(async move {
            match dialect {
                Dialect::Postgres => {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                        let bound = format!("SET lock_timeout = '{wait}s'");
                        let _ = sqlx::query(&bound).execute(&mut conn).await;
                        for s in statements {
                            let _ = sqlx::raw_sql(&s).execute(&mut conn).await;
                        }
                        let _ = conn.close().await;
                    }
                }
                Dialect::Mysql => {
                    if let Ok(mut conn) = sqlx::MySqlConnection::connect(&url).await {
                        let bound = format!("SET SESSION lock_wait_timeout = {wait}");
                        let _ = sqlx::query(&bound).execute(&mut conn).await;
                        for s in statements {
                            let _ = sqlx::raw_sql(&s).execute(&mut conn).await;
                        }
                        let _ = conn.close().await;
                    }
                }
            }
        });
    }
}

/// How long a [`Cleanup`] statement waits for a lock before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(20);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.statements);
        let (dialect, url) = (self.dialect, self.url.clone());
        let _ = std::thread::spawn(move || Cleanup::run(dialect, url, statements)).join();
    }
}

/// A random table and `base` with `table=` and `query` in its query string.
pub(crate) fn fresh_table_url(base: &str, query: &str) -> (String, String) {
    let table = random_name("cadenas_t");
    let url = crate::with_query(base, &format!("table={table}"));
    let url = if query.is_empty() {
        url
    } else {
        crate::with_query(&url, query)
    };
    (url, table)
}

/// Every URL in `urls` (a closed port, an unknown user, an unknown database; the first two
/// with the password `hunter2`) fails to connect as unavailable, without showing the
/// password.
pub async fn refuses_unreachable_and_wrong_credentials<S, F, Fut>(urls: [String; 3], connect: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = cadenas::Result<S>>,
{
    for url in urls {
        let e = match connect(url.clone()).await {
            Ok(_) => panic!("{url} connected"),
            Err(e) => e,
        };
        assert!(e.is_unavailable(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

/// Eight stores opened at once on `url` (a new table) all succeed: table creation is race
/// free.
pub async fn creation_is_race_free<S, F, Fut>(url: String, connect: F)
where
    S: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = cadenas::Result<S>> + Send + 'static,
{
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(connect(url.clone()))).collect();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            panic!("{e}");
        }
    }
}
