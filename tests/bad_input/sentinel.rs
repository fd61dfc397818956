//! Rows of the bad-input table for the Redis Sentinel store: its URL, no sentinel
//! reachable, a service the sentinels do not know, and wrong passwords (the data nodes' in
//! the URL, the sentinels' in `sentinel_password`). Rows that need a server start a primary
//! and one sentinel of their own.

use cadenas::{Locks, StoreErrorKind};
use cadenas_test_support::bad_input::REDIS_PASSWORD;
use cadenas_test_support::redis_sentinel::{SentinelTopology, SERVICE};

use super::table::After::Nothing;
use super::table::Expect::*;
use super::table::*;

/// A primary and one sentinel, both requiring [`REDIS_PASSWORD`], started off the
/// runtime's threads.
async fn topology() -> SentinelTopology {
    tokio::task::spawn_blocking(|| {
        SentinelTopology::single(Some(REDIS_PASSWORD), Some(REDIS_PASSWORD))
    })
    .await
    .unwrap()
}

/// Opens `service` on a fresh [`topology`] with these passwords (the data nodes', the
/// sentinel's).
async fn connect_to(service: &str, password: &str, sentinel_password: &str) -> Got {
    let t = topology().await;
    let url = format!(
        "redis+sentinel://:{password}@127.0.0.1:{}/{service}?sentinel_password={sentinel_password}",
        t.sentinels[0].port
    );
    api(Locks::connect(&url).await)
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "Redis Sentinel URL without a service name",
            Config,
            &["name the service", "u:***@"],
            Nothing,
            |_| async move {
                api(
                    Locks::connect(&format!("redis+sentinel://u:{WRONG_PASSWORD}@127.0.0.1:1"))
                        .await,
                )
            },
        ),
        case(
            "no sentinel reachable",
            Store(StoreErrorKind::Unavailable),
            &["cannot connect", "redis+sentinel://"],
            Nothing,
            |_| async move {
                let url = format!(
                    "redis+sentinel://:{WRONG_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/{SERVICE}?sentinel_password={WRONG_PASSWORD}",
                    free_port(),
                    free_port()
                );
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "unknown Sentinel service name",
            Store(StoreErrorKind::Unavailable),
            &["check the service name"],
            Nothing,
            |_| connect_to("no-such-service", REDIS_PASSWORD, REDIS_PASSWORD),
        ),
        case(
            "wrong Redis password behind Sentinel",
            Store(StoreErrorKind::Unavailable),
            &["password"],
            Nothing,
            |_| connect_to(SERVICE, WRONG_PASSWORD, REDIS_PASSWORD),
        ),
        case(
            "wrong sentinel password",
            Store(StoreErrorKind::Unavailable),
            &["password"],
            Nothing,
            |_| connect_to(SERVICE, REDIS_PASSWORD, WRONG_PASSWORD),
        ),
    ]
}
