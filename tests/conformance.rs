//! Every store runs the whole conformance suite against its real server.
//!
//! Servers: SQLite files in temp dirs; Redis at `CADENAS_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`) in a random namespace, plus a 3-master Redis Cluster and a Redis
//! Sentinel topology (a primary, two replicas, three sentinels) the harness starts; PostgreSQL at `CADENAS_TEST_POSTGRES_URL` and MariaDB/MySQL at
//! `CADENAS_TEST_MYSQL_URL` in random tables; etcd members the tests start. Nothing is
//! skipped: a missing server fails its test with a message saying how to get one. Everything
//! a run creates is removed.
//!
//! Next to each store's suite over `Locks`, the bare-store checks (`run_bare`) drive the same
//! store through the `Store` trait, with a second client of the store as the peer.

use std::future::Future;
use std::sync::Arc;

use cadenas::conformance::{run_all, run_bare, StoreSuite, Suite};
use cadenas::Locks;

/// A suite whose clients are fresh connections made by `connect(url)`.
fn suite_over<F, Fut>(url: String, connect: F) -> Suite
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Locks> + Send + 'static,
{
    let connect = Arc::new(connect);
    Suite::new(move || {
        let (connect, url) = (connect.clone(), url.clone());
        async move { connect(url).await }
    })
}

fn random(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() >> 16)
}

/// The bare checks on two clients of one store, each opened from `url`.
async fn bare_over(url: &str) -> StoreSuite {
    let open = || async { Locks::connect(url).await.unwrap().store().clone() };
    StoreSuite::new(open().await).with_peer(open().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bare() {
    run_bare(&StoreSuite::new(Arc::new(
        cadenas::stores::memory::MemoryStore::new(),
    )))
    .await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_file_shared_by_two_clients() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("locks.db").display());
        // Every client is its own store (its own connection pool) on the same file.
        let suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_in_memory_with_a_namespace_and_table() {
        let store: Arc<dyn cadenas::Store> = Arc::new(
            cadenas::stores::sqlite::SqliteStore::connect("sqlite::memory:?table=verrou")
                .await
                .unwrap(),
        );
        let suite = Suite::new(move || {
            let store = store.clone();
            async move { Locks::builder().namespace("app").build_arc(store).unwrap() }
        });
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_bare_two_stores_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?table=verrou",
            dir.path().join("locks.db").display()
        );
        run_bare(&bare_over(&url).await).await;
    }
}

#[cfg(feature = "redis")]
mod redis_stores {
    use super::*;

    use cadenas_test_support::redis::{RedisCluster, RedisServer};
    use cadenas_test_support::redis_sentinel::SentinelTopology;
    use cadenas_test_support::redis_url;

    /// Deletes every key containing `marker` (locks and fence counters of the run).
    async fn cleanup(url: &str, marker: &str) {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let pattern = format!("*{marker}*");
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .unwrap();
            for k in keys {
                let _: () = redis::cmd("DEL")
                    .arg(&k)
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_single_node() {
        let url = redis_url();
        let ns = random("cadenas-test-");
        let with_ns = format!("{url}?namespace={ns}");
        if let Err(e) = Locks::connect(&with_ns).await {
            panic!("Redis is not reachable at {url}: {e}. Install and start it (apt-get install redis-server; redis-server --daemonize yes) or set CADENAS_TEST_REDIS_URL.");
        }
        let suite = suite_over(
            with_ns,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
        cleanup(&url, &ns).await;
        cleanup(&url, suite.prefix()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_single_node_with_records_without_namespace() {
        // Verrou's layout: no namespace, the key as is; every acquire writes its record
        // (inspect shows fences, the expiry watcher works).
        let server = RedisServer::start();
        let url = format!("{}?records=true", server.url());
        let suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_of_three_masters() {
        let cluster = RedisCluster::start(3);
        let suite = suite_over(cluster.url(), |url| async move {
            Locks::connect(&url).await.unwrap()
        });
        run_all(&suite).await;
    }

    /// A primary, two replicas and three sentinels; the store finds the primary through them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_sentinel_primary_with_two_replicas() {
        let topology = SentinelTopology::start();
        let suite = suite_over(topology.url(), |url| async move {
            Locks::connect(&url).await.unwrap()
        });
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_sentinel_bare_with_records() {
        let topology = SentinelTopology::start();
        run_bare(&bare_over(&format!("{}?records=true", topology.url())).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bare() {
        let url = redis_url();
        let suite = bare_over(&url).await;
        run_bare(&suite).await;
        cleanup(&url, suite.prefix()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_bare_with_records() {
        let cluster = RedisCluster::start(3);
        run_bare(&bare_over(&format!("{}?records=true", cluster.url())).await).await;
    }

    #[cfg(feature = "redlock")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redlock_bare() {
        let servers: Vec<_> = (0..3).map(|_| RedisServer::start()).collect();
        let hosts: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        run_bare(&bare_over(&format!("redlock://{}", hosts.join(","))).await).await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    use cadenas_test_support::postgres::base_url;

    async fn drop_table(table: &str) {
        let pool = sqlx::PgPool::connect(&base_url()).await.unwrap();
        for s in [
            format!("DROP TABLE IF EXISTS \"{table}\""),
            format!("DROP TABLE IF EXISTS \"{table}_holders\""),
            format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""),
        ] {
            sqlx::query(&s).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_bare() {
        let table = random("cadenas_cf_");
        run_bare(&bare_over(&format!("{}?table={table}", base_url())).await).await;
        drop_table(&table).await;
    }

    async fn run(options: &str) {
        let table = random("cadenas_cf_");
        let url = format!("{}?table={table}{options}", base_url());
        if let Err(e) = Locks::connect(&url).await {
            panic!("PostgreSQL is not reachable at {}: {e}. Install and start it (apt-get install postgresql; pg_ctlcluster 15 main start) or set CADENAS_TEST_POSTGRES_URL.", base_url());
        }
        let suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
        drop_table(&table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run("").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_unlogged_with_a_pool_of_one() {
        // One pooled connection: operations and the LISTEN connection must not deadlock.
        run("&unlogged=true&pool_size=1").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_session_mode() {
        // Server advisory locks; only the fence sequence is created.
        run("&mode=session").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_session_mode_bare() {
        let table = random("cadenas_cf_");
        let url = format!("{}?table={table}&mode=session", base_url());
        run_bare(&bare_over(&url).await).await;
        drop_table(&table).await;
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;

    use cadenas_test_support::mysql::base_url;

    async fn drop_tables(table: &str) {
        let pool = sqlx::MySqlPool::connect(&base_url()).await.unwrap();
        for t in [
            table.to_owned(),
            format!("{table}_fences"),
            format!("{table}_holders"),
        ] {
            sqlx::query(&format!("DROP TABLE IF EXISTS `{t}`"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_bare() {
        let table = random("cadenas_cf_");
        run_bare(&bare_over(&format!("{}?table={table}", base_url())).await).await;
        drop_tables(&table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        let table = random("cadenas_cf_");
        let url = format!("{}?table={table}", base_url());
        if let Err(e) = Locks::connect(&url).await {
            panic!("MySQL/MariaDB is not reachable at {}: {e}. Install and start it (apt-get install mariadb-server) or set CADENAS_TEST_MYSQL_URL.", base_url());
        }
        let mut suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        // Every contended try is a transaction with a flush: keep the 64-way contention
        // check but give it time.
        suite.patience = std::time::Duration::from_secs(60);
        run_all(&suite).await;
        drop_tables(&table).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_session_mode() {
        // GET_LOCK on held connections: nothing is created in the database.
        let url = format!("{}?mode=session", base_url());
        if let Err(e) = Locks::connect(&url).await {
            panic!("MySQL/MariaDB is not reachable at {}: {e}. Install and start it (apt-get install mariadb-server) or set CADENAS_TEST_MYSQL_URL.", base_url());
        }
        let suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_session_mode_bare() {
        run_bare(&bare_over(&format!("{}?mode=session", base_url())).await).await;
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;

    use cadenas_test_support::etcd::EtcdCluster;

    /// One member, in a namespace (the bare checks below use keys as they are).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_single_member_with_a_namespace() {
        let server = EtcdCluster::start();
        let url = format!("{}?namespace=app", server.url());
        let suite = suite_over(
            url,
            |url| async move { Locks::connect(&url).await.unwrap() },
        );
        run_all(&suite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_bare_two_clients() {
        let server = EtcdCluster::start();
        run_bare(&bare_over(&server.url()).await).await;
    }
}
