//! The bad-input table of the `cadenas` binary: one row per bad command line, with the exit
//! code it must get, words its message must contain, and the lock state it must leave. The
//! rows run the binary on a SQLite file (unless `--store` says otherwise) and are listed in
//! docs/bad-input.md (the `cadenas: …` rows; the library's are in its `tests/bad_input`).
//!
//! No message may contain a password (checked on every row).
#![cfg(all(
    feature = "sqlite",
    feature = "redis",
    feature = "redlock",
    feature = "postgres",
    feature = "mysql",
    feature = "dynamodb"
))]

mod cli;

use cadenas_test_support::bad_input::{self as table, Ctx};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_command_line_gets_its_exit_code_and_leaves_locks_as_they_were() {
    let ctx = Ctx::new().await.with_cli(env!("CARGO_BIN_EXE_cadenas"));
    let cases = cli::cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    table::walk(ctx, cases, |name| name.starts_with("cadenas:")).await;
}
