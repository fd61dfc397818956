//! The machine's MySQL/MariaDB for the tests (`CADENAS_TEST_MYSQL_URL`): random tables
//! dropped at the end, a store on a fresh table. `use cadenas_test_support::mysql::*`
//! brings the shared helpers of [`crate::sql`] too.

use cadenas::stores::mysql::MySqlStore;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

pub use crate::sql::{
    acquire_within, creation_is_race_free, fence_of, random_name,
    refuses_unreachable_and_wrong_credentials, Cleanup, LONG,
};
use crate::sql::{fresh_table_url, Dialect};
pub use crate::with_query;

/// `CADENAS_TEST_MYSQL_URL`, else `mysql://root@127.0.0.1:3306/test`.
pub fn base_url() -> String {
    crate::env_or("CADENAS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

/// A small pool on [`base_url`]; panics with how to get a server if there is none.
pub async fn admin() -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&base_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MySQL/MariaDB is not reachable at {} ({e}). Install and start one \
                 (`apt-get install mariadb-server`, then create database `test`) or point \
                 CADENAS_TEST_MYSQL_URL at one.",
                base_url()
            )
        })
}

/// Drops `table`, its fence table and its holders table when the test ends.
pub fn cleanup_table(table: &str) -> Cleanup {
    cleanup(vec![
        format!("DROP TABLE IF EXISTS `{table}`"),
        format!("DROP TABLE IF EXISTS `{table}_fences`"),
        format!("DROP TABLE IF EXISTS `{table}_holders`"),
    ])
}

/// Runs `statements` when the test ends (dropping what it made).
pub fn cleanup(statements: Vec<String>) -> Cleanup {
    Cleanup {
        dialect: Dialect::Mysql,
        url: base_url(),
        statements,
    }
}

/// A store on a fresh table (`query` adds URL options); the table and its clean-up.
pub async fn store_with(query: &str) -> (MySqlStore, String, Cleanup) {
    let (url, table) = fresh_table_url(&base_url(), query);
    let cleanup = cleanup_table(&table);
    (connect(&url).await, table, cleanup)
}

/// The store at `url`, after checking that the server answers (a clear message if not).
pub async fn connect(url: &str) -> MySqlStore {
    admin().await.close().await;
    MySqlStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting the store: {e}"))
}
