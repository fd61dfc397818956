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
    let server = DynamoServer::start(emulator);
    let url = server.url(&random_table());
    let mut suite = Suite::new(move || {
        let url = url.clone();
        async move { Locks::connect(&url).await.unwrap() }
    });
    // Each cancelled acquire leaves an item (a released lock keeps its fence) and the check
    // lists them with a table scan, which moto runs slowly in Python: 500 cover every
    // cancellation point (three ways, at random moments) in seconds.
    suite.cancellations = 500;
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

