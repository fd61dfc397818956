//! The bad-input table: one row per bad input to the library, a store URL or the `cadenas`
//! binary, with the typed error (or exit code) it must get, words its message must contain,
//! and the lock state it must leave (a key still free, or still held by its holder). Every
//! row runs against the real servers (Redis, PostgreSQL, MariaDB, a SQLite file shared with
//! the binary) in a random namespace or table; the rows are listed in docs/bad-input.md.
//!
//! No message may contain a password (checked on every row).
#![cfg(all(
    feature = "cli",
    feature = "sqlite",
    feature = "redis",
    feature = "redlock",
    feature = "postgres",
    feature = "mysql"
))]

use std::sync::Arc;
use std::time::Duration;

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/bad_input.rs"]
mod table;

#[path = "bad_input/cli.rs"]
mod cli;
#[path = "bad_input/library.rs"]
mod library;
#[path = "bad_input/stores.rs"]
mod stores;

use table::{run_case, Case, Ctx, On};

const TTL: Option<Duration> = Some(Duration::from_secs(30));

/// Takes `key` on `on` for a case (the lease outlives the case) and returns its token.
async fn hold(ctx: &Ctx, on: On, key: &str) -> String {
    ctx.locks(on)
        .lock(key)
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .serialize()
}

/// A key of `n` bytes.
fn long(n: usize) -> &'static str {
    "k".repeat(n).leak()
}

/// The table.
fn cases() -> Vec<Case> {
    [library::cases(), stores::cases(), cli::cases()]
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_leaves_locks_as_they_were() {
    let ctx = Arc::new(Ctx::new().await);
    let cases: Vec<Arc<Case>> = cases().into_iter().map(Arc::new).collect();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/bad-input.md")).unwrap();
    for case in &cases {
        assert!(
            doc.contains(&format!("| {} |", case.name)),
            "docs/bad-input.md does not list '{}'",
            case.name
        );
    }
    let mut failures = Vec::new();
    for case in &cases {
        // A panic in a case is a failure of that row, not the end of the walk.
        let (ctx, row) = (ctx.clone(), case.clone());
        let outcome = tokio::spawn(async move { run_case(&ctx, &row).await })
            .await
            .unwrap_or_else(|e| Err(format!("panicked: {e}")));
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    ctx.cleanup().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
