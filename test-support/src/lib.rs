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

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use rand::Rng;

/// Where test servers listen: below Linux's ephemeral range (32768 and up by default), so
/// the kernel never hands one of these ports to an outgoing connection in the meantime, and
/// low enough that a Redis Cluster node's bus port (port + 10000) is below it too.
const TEST_PORTS: std::ops::Range<u16> = 10_000..22_700;

/// Ports this process has handed out: none is handed out twice, even once it is closed
/// again (a cluster's members are given their ports before any of them starts).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1: bound, then closed, so nobody listens on it until a test
/// starts a server there (or never, for a test of an unreachable store). Never the same
/// port twice in one process; ports are drawn at random, so that test processes running
/// side by side rarely draw the same one either.
pub fn free_port() -> u16 {
    free_ports_at(&[0])
}

/// A free port `p` such that `p + offset` is free too for every offset in `offsets` (0
/// included), all of them reserved in this process as `free_port` does.
pub(crate) fn free_ports_at(offsets: &[u16]) -> u16 {
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..2_000 {
        let port = rng.random_range(TEST_PORTS);
        let all = offsets.iter().map(|o| port + o);
        let free = all
            .clone()
            .all(|p| !handed.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            handed.extend(all);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 between {TEST_PORTS:?}");
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
