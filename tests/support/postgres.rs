//! Helpers shared by the PostgreSQL test files: the server's URL, random tables dropped at
//! the end, a store on a fresh table.
#![allow(dead_code)]

use cadenas::stores::postgres::PostgresStore;
use sqlx::postgres::{PgPool, PgPoolOptions};

include!("sql_shared.rs");

sql_test_support! {
    pool: PgPool,
    pool_options: PgPoolOptions,
    store: PostgresStore,
    env: "CADENAS_TEST_POSTGRES_URL",
    default_url: "postgres://postgres@127.0.0.1:5432/test",
    unreachable: "PostgreSQL is not reachable at {} ({}). Install and start one (`apt-get install postgresql`, trust auth on 127.0.0.1, database `test`) or point CADENAS_TEST_POSTGRES_URL at one.",
    drops: |table| vec![
        format!("DROP TABLE IF EXISTS \"{table}\""),
        format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\""),
    ],
}
