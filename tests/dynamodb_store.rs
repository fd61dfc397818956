//! The DynamoDB store against real DynamoDB-compatible servers, each test on its own:
//! `dynalite` and `moto_server`, started on free ports and stopped at the end (see
//! `cadenas_test_support::dynamodb`). The whole conformance suite and the bare-store checks
//! on both, then what is DynamoDB's own: the URL forms, the table checks, clock skew.
#![cfg(feature = "dynamodb")]

use std::sync::Arc;
use std::time::Duration;

use cadenas::conformance::{run_all, run_bare, StoreSuite, Suite};
use cadenas::stores::dynamodb::DynamoDbStore;
use cadenas::{Locks, Store};
use cadenas_test_support::dynamodb::{random_table, DynamoServer, Emulator};

async fn conformance(emulator: Emulator) {
    // Warnings (a failed clean-up of a cancelled acquire) show when a check fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("cadenas=warn")
        .with_test_writer()
        .try_init();
    let server = DynamoServer::start(emulator);
    let url = server.url(&random_table());
    let mut suite = Suite::new(move || {
        let url = url.clone();
        async move { Locks::connect(&url).await.unwrap() }
    });
    // Each cancelled acquire leaves an item (a released lock keeps its fence) and its request
    // runs on after its caller left; moto serves one request at a time, slowly, in Python,
    // and the check lists with a table scan. 150 cancellations still cover every cancellation
    // point (three ways, at random moments); with 500 the queue of clean-ups did not drain
    // within a minute on a 2-core machine. The checks after them wait up to a minute.
    suite.cancellations = 150;
    suite.patience = Duration::from_secs(60);
    run_all(&suite).await;
}

async fn bare(emulator: Emulator) {
    let server = DynamoServer::start(emulator);
    let url = server.url(&random_table());
    let open = || async { Arc::new(DynamoDbStore::connect(&url).await.unwrap()) as Arc<dyn Store> };
    run_bare(&StoreSuite::new(open().await).with_peer(open().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_dynalite() {
    conformance(Emulator::Dynalite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_moto() {
    conformance(Emulator::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_on_dynalite() {
    bare(Emulator::Dynalite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_on_moto() {
    bare(Emulator::Moto).await;
}

use cadenas::{Acquire, AcquireRequest, Lease};

fn acquired(a: Acquire) -> Lease {
    match a {
        Acquire::Acquired(lease) => lease,
        held => panic!("expected to acquire: {held:?}"),
    }
}

fn held_for(a: Acquire) -> Duration {
    match a {
        Acquire::Held(h) => h.remaining.expect("a lease with a ttl"),
        Acquire::Acquired(l) => panic!("took a held lock: {l:?}"),
    }
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

/// DynamoDB judges expiry by the clients' clocks. At ±5 s of skew: a 30 s lease keeps
/// exclusion both ways (seen 5 s shorter or longer); a 3 s lease does not, and the holder
/// whose lease was taken finds out at its next extend, never silently. Fences keep
/// increasing whoever takes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_of_five_seconds() {
    let server = DynamoServer::start(Emulator::Dynalite);
    let url = server.url(&random_table());
    let honest = DynamoDbStore::connect(&url).await.unwrap();
    let ahead = DynamoDbStore::connect(&format!("{url}?clock_offset_ms=5000"))
        .await
        .unwrap();
    let behind = DynamoDbStore::connect(&format!("{url}?clock_offset_ms=-5000"))
        .await
        .unwrap();
    let take = |key, owner, ttl| AcquireRequest::new(key, owner, ttl);

    // Within the margin.
    acquired(
        honest
            .try_acquire(take("k1", "honest", secs(30)))
            .await
            .unwrap(),
    );
    let seen = held_for(
        ahead
            .try_acquire(take("k1", "ahead", secs(30)))
            .await
            .unwrap(),
    );
    assert!(
        seen <= Duration::from_secs(25) && seen > Duration::from_secs(20),
        "{seen:?}"
    );
    let seen = held_for(
        behind
            .try_acquire(take("k1", "behind", secs(30)))
            .await
            .unwrap(),
    );
    assert!(seen > Duration::from_secs(34), "{seen:?}");
    acquired(
        behind
            .try_acquire(take("k2", "behind", secs(30)))
            .await
            .unwrap(),
    );
    let seen = held_for(
        honest
            .try_acquire(take("k2", "honest", secs(30)))
            .await
            .unwrap(),
    );
    assert!(
        seen <= Duration::from_secs(25) && seen > Duration::from_secs(20),
        "{seen:?}"
    );

    // Beyond it: a client 5 s ahead takes a 3 s lease at once...
    let first = acquired(
        honest
            .try_acquire(take("k3", "honest", secs(3)))
            .await
            .unwrap(),
    );
    let second = acquired(
        ahead
            .try_acquire(take("k3", "ahead", secs(30)))
            .await
            .unwrap(),
    );
    assert!(second.fence > first.fence);
    // ...and the holder learns it at its next extend.
    assert_eq!(honest.extend("k3", "honest", secs(3)).await.unwrap(), None);
    // A holder 5 s behind: its 3 s lease has ended for everyone else from the start.
    let first = acquired(
        behind
            .try_acquire(take("k4", "behind", secs(3)))
            .await
            .unwrap(),
    );
    let second = acquired(
        honest
            .try_acquire(take("k4", "honest", secs(30)))
            .await
            .unwrap(),
    );
    assert!(second.fence > first.fence);
    assert_eq!(behind.extend("k4", "behind", secs(3)).await.unwrap(), None);
}

/// Two clients creating the table at once both open it; a table with another key, or a
/// missing one with `create_table=false`, is refused with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_created_once_and_checked() {
    for emulator in Emulator::ALL {
        let server = DynamoServer::start(emulator);
        let url = server.url(&random_table());
        let opened =
            futures_util::future::join_all((0..4).map(|_| DynamoDbStore::connect(&url))).await;
        for store in opened {
            store.unwrap_or_else(|e| panic!("{}: {e}", emulator.name()));
        }
        let missing = format!("{}?create_table=false", server.url(&random_table()));
        let e = DynamoDbStore::connect(&missing)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
