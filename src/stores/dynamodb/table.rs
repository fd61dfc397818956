//! The lock table: created on first use (race-free), and checked to have Verrou's key.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus,
};
use aws_sdk_dynamodb::Client;

use super::errors::sdk_error;
use super::item::KEY;
use crate::error::{Error, Result};
use crate::store::{StoreError, StoreErrorKind};

/// How long a new table may take to become active (seconds on AWS, none on emulators).
const CREATE_PATIENCE: Duration = Duration::from_secs(120);

/// Makes sure `table` exists with hash key `key` (S) and is active, creating it
/// (`PAY_PER_REQUEST`) when missing and `create` is set. Two clients creating it at once:
/// one wins, the other gets `ResourceInUseException` and waits for it like for its own.
pub(super) async fn ensure(client: &Client, table: &str, create: bool, store: &str) -> Result<()> {
    let started = Instant::now();
    let mut created = false;
    loop {
        let answer = client.describe_table().table_name(table).send().await;
        match answer {
            Ok(out) => {
                let Some(description) = out.table() else {
                    return Ok(());
                };
                check_key_schema(description, table, store)?;
                let status = description.table_status();
                if matches!(
                    status,
                    None | Some(TableStatus::Active | TableStatus::Updating)
                ) {
                    return Ok(());
                }
            }
            Err(e) if is_not_found(&e) => {
                if !create {
                    return Err(Error::store(
                        store,
                        "connect",
                        None,
                        StoreError::new(
                            StoreErrorKind::Rejected,
                            format!(
                                "{store}: table '{table}' does not exist and ?create_table=false \
                                 forbids creating it; create it with hash key `key` of type S, or \
                                 leave out the option"
                            ),
                        ),
                    ));
                }
                if !created {
                    create_table(client, table, store).await?;
                    created = true;
                    continue;
                }
            }
            Err(e) => {
                let what = format!("reading table '{table}'");
                return Err(Error::store(
                    store,
                    "connect",
                    None,
                    sdk_error(e, store, &what),
                ));
            }
        }
        if started.elapsed() > CREATE_PATIENCE {
            return Err(Error::store(
                store,
                "connect",
                None,
                StoreError::new(
                    StoreErrorKind::Transient,
                    format!(
                        "{store}: table '{table}' did not become active within {CREATE_PATIENCE:?}"
                    ),
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_not_found<R>(e: &aws_sdk_dynamodb::error::SdkError<DescribeTableError, R>) -> bool {
    matches!(
        e.as_service_error(),
        Some(DescribeTableError::ResourceNotFoundException(_))
    )
}

async fn create_table(client: &Client, table: &str, store: &str) -> Result<()> {
    let key = KeySchemaElement::builder()
        .attribute_name(KEY)
        .key_type(KeyType::Hash)
        .build()
        .expect("the key schema has its fields");
    let definition = AttributeDefinition::builder()
        .attribute_name(KEY)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("the attribute definition has its fields");
    let answer = client
        .create_table()
        .table_name(table)
        .key_schema(key)
        .attribute_definitions(definition)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match answer {
        Ok(_) => Ok(()),
        // Someone else is creating it: wait for it as for ours.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => {
            let what = format!("creating table '{table}'");
            Err(Error::store(
                store,
                "connect",
                None,
                sdk_error(e, store, &what),
            ))
        }
    }
}

/// Refuses a table whose key is not exactly Verrou's: hash key `key` of type S.
fn check_key_schema(description: &TableDescription, table: &str, store: &str) -> Result<()> {
    let keys = description.key_schema();
    let key_type = description
        .attribute_definitions()
        .iter()
        .find(|d| d.attribute_name() == KEY)
        .map(|d| d.attribute_type().clone());
    let ours = keys.len() == 1
        && keys[0].attribute_name() == KEY
        && keys[0].key_type() == &KeyType::Hash
        && key_type == Some(ScalarAttributeType::S);
    if ours {
        return Ok(());
    }
    let found: Vec<String> = keys
        .iter()
        .map(|k| {
            let ty = description
                .attribute_definitions()
                .iter()
                .find(|d| d.attribute_name() == k.attribute_name())
                .map_or("?", |d| d.attribute_type().as_str());
            format!("{} {} {ty}", k.key_type().as_str(), k.attribute_name())
        })
        .collect();
    Err(Error::store(
        store,
        "connect",
        None,
        StoreError::new(
            StoreErrorKind::Rejected,
            format!(
                "{store}: table '{table}' has key [{}], not hash key `key` of type S (Verrou's \
                 layout): it is not a lock table; use a table of its own for locks",
                found.join(", ")
            ),
        ),
    ))
}
