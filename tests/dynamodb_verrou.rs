//! Interoperability with Verrou's DynamoDB driver (`@verrou/core` in Node.js with
//! `@aws-sdk/client-dynamodb`) on the same table, on both emulators: they exclude each other
//! both ways, also for a lock that never expires, and each sees the other's owner. Needs
//! `node` and `npm` (the packages are installed once into Cargo's test temp dir).
#![cfg(feature = "dynamodb")]

use cadenas::stores::dynamodb::DynamoDbStore;
use cadenas_test_support::dynamodb::{
    random_table, DynamoServer, Emulator, VERROU_PACKAGES, VERROU_SCRIPT,
};
use cadenas_test_support::verrou_sql::{check_interop, Node};

async fn interop(emulator: Emulator) {
    let server = DynamoServer::start(emulator);
    let table = random_table();
    let tmp = env!("CARGO_TARGET_TMPDIR");
    // Verrou creates the table (provisioned, as its driver does); cadenas meets it.
    let args = [server.endpoint(), table.clone()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = Node::start_script(
        tmp,
        "verrou-dynamodb",
        VERROU_PACKAGES,
        VERROU_SCRIPT,
        &args,
    )
    .await;
    let url = server.url(&table);
    check_interop(&mut node, async {
        DynamoDbStore::connect(&url).await.unwrap()
    })
    .await;
    node.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verrou_and_cadenas_exclude_each_other_on_dynalite() {
    interop(Emulator::Dynalite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verrou_and_cadenas_exclude_each_other_on_moto() {
    interop(Emulator::Moto).await;
}
