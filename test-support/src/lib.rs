//! What the tests of cadenas, of the `cadenas` binary and of the torture tool share (the
//! model is redis-rs' `redis-test`):
//!
//! - [`etcd`]: real `etcd` members and clusters on free ports in temporary directories;
//! - [`redis`]: real `redis-server` processes (plain, TLS, with a password) and Redis
//!   Clusters on free ports in temporary directories; [`redis_sentinel`]: a primary, replicas
//!   and sentinels;
//! - [`sql_server`]: private PostgreSQL and MariaDB servers, for tests that stop and restart
//!   the database;
//! - [`postgres`] and [`mysql`]: the machine's shared servers, random tables dropped at the
//!   end, stores on fresh tables (their common part in [`sql`]);
//! - [`verrou_sql`]: a real Node.js Verrou process on the SQL stores;
//! - [`dynamodb`]: DynamoDB emulators (`dynalite`, `moto_server`) on free ports;
//! - [`bad_input`]: the machinery of the bad-input table; [`security`]: the URLs with
//!   passwords that must never show; [`captured`]: a tracing writer that keeps the logs;
//!   [`measure`]: throughput loops compared on a noisy machine; [`process`]: waiting on
//!   child processes and conditions with deadlines.
//!
//! Every server is killed on Drop and prints its log first when the test is failing. A
//! missing server binary fails the test with the command that installs it: nothing here
//! skips a test.
#![forbid(unsafe_code)]

pub mod bad_input;
pub mod captured;
pub mod dynamodb;
pub mod etcd;
pub mod measure;
pub mod mysql;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod redis_sentinel;
pub mod security;
pub mod sql;
pub mod sql_server;
pub mod verrou_sql;

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1: bound, then closed, so nobody listens on it until a test
/// starts a server there (or never, for a test of an unreachable store).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound address").port()
}

/// `url` with `query` appended (`?query`, or `&query` if it has a query already).
pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The value of the environment variable `name`, else `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The Redis the tests share: `CADENAS_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    env_or("CADENAS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}
