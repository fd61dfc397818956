//! The bad-input table of the library: one row per bad input to the library or a store URL,
//! with the typed error it must get, words its message must contain, and the lock state it
//! must leave (a key still free, or still held by its holder). Every row runs against the
//! real servers (Redis, PostgreSQL, MariaDB, a SQLite file, etcd members and Redis Sentinel
//! topologies of their own, DynamoDB emulators) in a random namespace or table;
//! the rows are listed in docs/bad-input.md, with those of the `cadenas` binary (in the CLI
//! crate's `tests/bad_input`).
//!
//! No message may contain a password (checked on every row).
#![cfg(all(
    feature = "sqlite",
    feature = "redis",
    feature = "redlock",
    feature = "postgres",
    feature = "mysql",
    feature = "etcd",
    feature = "dynamodb"
))]

mod dynamodb;
mod etcd;
mod library;
mod sentinel;
mod stores;

use cadenas_test_support::bad_input::{self as table, Ctx};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_leaves_locks_as_they_were() {
    let cases: Vec<_> = [
        library::cases(),
        stores::cases(),
        etcd::cases(),
        dynamodb::cases(),
        sentinel::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    // The binary's rows (`cadenas: …`) are the CLI crate's.
    table::walk(Ctx::new().await, cases, |name| {
        !name.starts_with("cadenas:")
    })
    .await;
}
