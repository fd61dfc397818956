//! Rows of the bad-input table for the DynamoDB store: URLs, tables that are not lock
//! tables, what is under a key, throttling, an endpoint that is down. Rows that need a
//! server start their own `dynalite` (or a throttling endpoint) and stop it at the end.

use cadenas::stores::dynamodb::DynamoDbStore;
use cadenas::{Locks, StoreErrorKind};
use cadenas_test_support::dynamodb::{random_table, DynamoServer, Emulator, Throttling};

use super::table::After::Nothing;
use super::table::Expect::*;
use super::table::*;

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "DynamoDB table name too short",
            Config,
            &["'ab'", "table name"],
            Nothing,
            |_| async move { api(Locks::connect("dynamodb:///ab").await) },
        ),
        case(
            "tls=true on dynamodb:///TABLE",
            Config,
            &["tls is for"],
            Nothing,
            |_| async move { api(Locks::connect("dynamodb:///locks?tls=true").await) },
        ),
        case(
            "DynamoDB table with another key",
            Store(StoreErrorKind::Rejected),
            &["HASH id N", "not hash key `key`"],
            Nothing,
            |_| async move {
                let server = DynamoServer::start(Emulator::Dynalite);
                let store = DynamoDbStore::connect(&server.url(&random_table()))
                    .await
                    .unwrap();
                let other = random_table();
                create_table_keyed_by_id(store.client(), &other).await;
                api(Locks::connect(&server.url(&other)).await)
            },
        ),
        case(
            "DynamoDB table missing with create_table=false",
            Store(StoreErrorKind::Rejected),
            &["does not exist", "create_table=false"],
            Nothing,
            |_| async move {
                let server = DynamoServer::start(Emulator::Dynalite);
                let url = format!("{}?create_table=false", server.url(&random_table()));
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "a DynamoDB item under the key that is not a lock (acquire)",
            Store(StoreErrorKind::Rejected),
            &["k-foreign", "not a lock record", "expires_at"],
            Nothing,
            |_| async move {
                use aws_sdk_dynamodb::types::AttributeValue::S;
                let server = DynamoServer::start(Emulator::Dynalite);
                let table = random_table();
                let store = DynamoDbStore::connect(&server.url(&table)).await.unwrap();
                let put = store.client().put_item().table_name(&table);
                let put = put
                    .item("key", S("k-foreign".into()))
                    .item("owner", S("x".into()));
                put.item("expires_at", S("soon".into()))
                    .send()
                    .await
                    .unwrap();
                let locks = Locks::connect(&server.url(&table)).await.unwrap();
                api(locks.lock("k-foreign").try_acquire().await)
            },
        ),
        case(
            "DynamoDB throttling (ProvisionedThroughputExceeded)",
            Store(StoreErrorKind::Transient),
            &["throttling", "ProvisionedThroughputExceededException"],
            Nothing,
            |_| async move {
                let endpoint = Throttling::start();
                api(Locks::connect(&endpoint.url("locks")).await)
            },
        ),
        case(
            "DynamoDB endpoint down",
            Store(StoreErrorKind::Unavailable),
            &["cannot connect"],
            Nothing,
            |_| async move {
                let port = cadenas_test_support::free_port();
                api(Locks::connect(&format!("dynamodb://127.0.0.1:{port}/locks")).await)
            },
        ),
    ]
}

/// Creates `table` with hash key `id` of type N: a table that is not a lock table.
async fn create_table_keyed_by_id(client: &aws_sdk_dynamodb::Client, table: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let key = KeySchemaElement::builder()
        .attribute_name("id")
        .key_type(KeyType::Hash);
    let id = AttributeDefinition::builder()
        .attribute_name("id")
        .attribute_type(ScalarAttributeType::N);
    client
        .create_table()
        .table_name(table)
        .key_schema(key.build().unwrap())
        .attribute_definitions(id.build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}
