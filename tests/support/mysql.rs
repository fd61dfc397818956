//! Helpers shared by the MySQL/MariaDB test files: the server's URL, random tables dropped at
//! the end, a store on a fresh table.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cadenas::store::{Acquire, AcquireRequest, Store};
use cadenas::stores::mysql::MySqlStore;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

pub fn base_url() -> String {
    std::env::var("CADENAS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

pub async fn admin() -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&base_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MySQL/MariaDB is not reachable at {} ({e}). Install and start one (`apt-get install mariadb-server`, then create database `test`) or point CADENAS_TEST_MYSQL_URL at one.",
                base_url()
            )
        })
}

/// Drops the test's tables when the test ends, even if it panicked.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.0);
        let url = base_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(pool) = MySqlPool::connect(&url).await {
                    for s in statements {
                        let _ = sqlx::query(&s).execute(&pool).await;
                    }
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub fn cleanup_table(table: &str) -> Cleanup {
    Cleanup(vec![
        format!("DROP TABLE IF EXISTS `{table}`"),
        format!("DROP TABLE IF EXISTS `{table}_fences`"),
    ])
}

pub async fn store_with(query: &str) -> (MySqlStore, String, Cleanup) {
    let table = random_name("cadenas_t");
    let cleanup = cleanup_table(&table);
    let url = with_query(&base_url(), &format!("table={table}"));
    let url = if query.is_empty() {
        url
    } else {
        with_query(&url, query)
    };
    (connect(&url).await, table, cleanup)
}

pub async fn connect(url: &str) -> MySqlStore {
    admin().await.close().await; // a clear message if the server is down
    MySqlStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting the store: {e}"))
}

pub fn req<'a>(key: &'a str, owner: &'a str, ttl: Option<Duration>) -> AcquireRequest<'a> {
    AcquireRequest {
        key,
        owner,
        ttl,
        metadata: None,
    }
}

pub fn fence_of(a: Acquire) -> u64 {
    match a {
        Acquire::Acquired(lease) => lease.fence.expect("mysql fences"),
        Acquire::Held(h) => panic!("expected to acquire, held by {h:?}"),
    }
}

pub const LONG: Option<Duration> = Some(Duration::from_secs(60));

pub async fn acquire_within(store: &MySqlStore, key: &str, owner: &str, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        match store.try_acquire(req(key, owner, LONG)).await.unwrap() {
            Acquire::Acquired(l) => return l.fence.unwrap(),
            Acquire::Held(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Acquire::Held(h) => panic!("still held after {limit:?}: {h:?}"),
        }
    }
}
