// The helpers the PostgreSQL and MySQL/MariaDB test support modules share, written once over
// their pool and store types: `include!`d by `postgres.rs` and `mysql.rs`, which invoke
// `sql_test_support!` with their own types, URL and clean-up statements.

macro_rules! sql_test_support {
    (
        pool: $pool:ty,
        pool_options: $options:ty,
        store: $store:ty,
        env: $env:literal,
        default_url: $default:literal,
        unreachable: $unreachable:literal,
        drops: |$table:ident| $drops:expr,
    ) => {
        use std::time::{Duration, Instant};

        use cadenas::store::{Acquire, AcquireRequest, Store};

        pub fn base_url() -> String {
            std::env::var($env).unwrap_or_else(|_| $default.to_owned())
        }

        pub fn with_query(url: &str, query: &str) -> String {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}{query}")
        }

        pub fn random_name(prefix: &str) -> String {
            format!("{prefix}_{:016x}", rand::random::<u64>())
        }

        pub async fn admin() -> $pool {
            <$options>::new()
                .max_connections(2)
                .connect(&base_url())
                .await
                .unwrap_or_else(|e| panic!($unreachable, base_url(), e))
        }

        /// Drops the test's tables (and sequences) when the test ends, even if it panicked.
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
                        if let Ok(pool) = <$pool>::connect(&url).await {
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

        pub fn cleanup_table($table: &str) -> Cleanup {
            Cleanup($drops)
        }

        /// A fresh store on a fresh table.
        pub async fn store_with(query: &str) -> ($store, String, Cleanup) {
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

        pub async fn connect(url: &str) -> $store {
            admin().await.close().await; // a clear message if the server is down
            <$store>::connect(url)
                .await
                .unwrap_or_else(|e| panic!("connecting the store: {e}"))
        }

        pub fn fence_of(a: Acquire) -> u64 {
            match a {
                Acquire::Acquired(lease) => lease.fence.expect("the store fences"),
                Acquire::Held(h) => panic!("expected to acquire, held by {h:?}"),
            }
        }

        pub const LONG: Option<Duration> = Some(Duration::from_secs(60));

        /// Tries until acquired or the deadline passes.
        pub async fn acquire_within(store: &$store, key: &str, owner: &str, limit: Duration) -> u64 {
            let deadline = Instant::now() + limit;
            loop {
                match store.try_acquire(AcquireRequest::new(key, owner, LONG)).await.unwrap() {
                    Acquire::Acquired(l) => return l.fence.unwrap(),
                    Acquire::Held(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Acquire::Held(h) => panic!("still held after {limit:?}: {h:?}"),
                }
            }
        }
    };
}
