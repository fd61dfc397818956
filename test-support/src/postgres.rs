//! The machine's PostgreSQL for the tests (`CADENAS_TEST_POSTGRES_URL`): random tables
//! dropped at the end, a store on a fresh table. `use cadenas_test_support::postgres::*`
//! brings the shared helpers of [`crate::sql`] too.

use cadenas::stores::postgres::PostgresStore;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use crate::sql::{
    acquire_within, creation_is_race_free, fence_of, random_name,
    refuses_unreachable_and_wrong_credentials, Cleanup, LONG,
};
use crate::sql::{fresh_table_url, Dialect};
pub use crate::with_query;

/// `CADENAS_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.
pub fn base_url() -> String {
    crate::env_or(
        "CADENAS_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

/// A small pool on [`base_url`]; panics with how to get a server if there is none.
pub async fn admin() -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&base_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}). Install and start one (`apt-get \
                 install postgresql`, trust auth on 127.0.0.1, database `test`) or point \
                 CADENAS_TEST_POSTGRES_URL at one.",
                base_url()
            )
        })
}

/// Drops `table` and its fence sequence when the test ends.
pub fn cleanup_table(table: &str) -> Cleanup {
    cleanup(vec![
        format!("DROP TABLE IF EXISTS \"{table}\""),
        format!("DROP TABLE IF EXISTS \"{table}_holders\""),
        format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""),
    ])
}

/// Runs `statements` when the test ends (dropping what it made).
pub fn cleanup(statements: Vec<String>) -> Cleanup {
    Cleanup {
        dialect: Dialect::Postgres,
        url: base_url(),
        statements,
    }
}

/// A store on a fresh table (`query` adds URL options); the table and its clean-up.
pub async fn store_with(query: &str) -> (PostgresStore, String, Cleanup) {
    let (url, table) = fresh_table_url(&base_url(), query);
    let cleanup = cleanup_table(&table);
    (connect(&url).await, table, cleanup)
}

/// The store at `url`, after checking that the server answers (a clear message if not).
pub async fn connect(url: &str) -> PostgresStore {
    admin().await.close().await;
    PostgresStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting the store: {e}"))
}
