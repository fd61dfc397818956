//! A rolling deploy: the Redis store of this version and that of the release before it on the
//! same keys. The previous version's acquire and release scripts are kept verbatim in
//! `tests/fixtures/redis-previous/` (`GRACE` stands for the state's grace period) and run
//! here against keys the current store uses: the two exclude each other, fences keep
//! increasing whichever version takes the key, the current version reads and releases the
//! previous one's holdings, and the previous one cannot release the current one's (which
//! carry an attempt id after the owner). Run with
//! `cargo test --features redis --test redis_mixed_versions`.
#![cfg(feature = "redis")]

use std::time::Duration;

use cadenas::stores::redis::{keys, RedisStore, EXPIRY_GRACE_MS};
use cadenas::{Acquire, AcquireRequest, Store};
use cadenas_test_support::redis::RedisServer;
use redis::{FromRedisValue, Script, Value};

const TTL: Option<Duration> = Some(Duration::from_secs(30));

fn previous(name: &str) -> Script {
    let path = format!(
        "{}/tests/fixtures/redis-previous/{name}.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Script::new(&text.replace("GRACE", &EXPIRY_GRACE_MS.to_string()))
}

/// The previous version's acquire: `Some(fence)` or `None` (held).
async fn old_acquire(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    owner: &str,
) -> Option<u64> {
    let reply: Vec<Value> = previous("acquire")
        .key(key)
        .key(keys::state_key(key))
        .key(keys::fence_key(key))
        .key(keys::expired_key(key))
        .arg(owner)
        .arg(30_000)
        .arg(0)
        .arg("")
        .arg("0123456789abcdef")
        .invoke_async(con)
        .await
        .unwrap();
    match i64::from_redis_value_ref(&reply[0]).unwrap() {
        1 => Some(u64::from_redis_value_ref(&reply[1]).unwrap()),
        0 => None,
        other => panic!("previous acquire answered {other}"),
    }
}

async fn old_release(con: &mut redis::aio::MultiplexedConnection, key: &str, owner: &str) -> bool {
    let status: i64 = previous("release")
        .key(key)
        .key(keys::state_key(key))
        .arg(owner)
        .arg(keys::release_channel(key))
        .arg(key)
        .invoke_async(con)
        .await
        .unwrap();
    status == 1
}

async fn new_acquire(s: &RedisStore, key: &str, owner: &str) -> Option<u64> {
    match s
        .try_acquire(AcquireRequest::new(key, owner, TTL))
        .await
        .unwrap()
    {
        Acquire::Acquired(lease) => Some(lease.fence.expect("the Redis store fences")),
        Acquire::Held(_) => None,
    }
}

#[tokio::test]
async fn previous_and_current_versions_exclude_each_other_and_keep_fences_increasing() {
    let server = RedisServer::start();
    let s = RedisStore::connect(&server.url()).await.unwrap();
    let mut con = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = "app:rolling";
    let url = server.url();
    let mut last = 0;
    let mut next = |f: Option<u64>, what: &str| {
        let f = f.unwrap_or_else(|| panic!("{what}: expected to acquire ({url})"));
        assert!(f > last, "{what}: fence {f} after {last}");
        last = f;
        f
    };

    // The previous version holds: the current one is excluded and sees the holder.
    let first = next(
        old_acquire(&mut con, key, "old").await,
        "previous version, first",
    );
    assert_eq!(
        new_acquire(&s, key, "new").await,
        None,
        "current version while the previous holds"
    );
    let info = s.inspect(key).await.unwrap().expect("held");
    assert_eq!(
        (info.owner.as_str(), info.fence),
        ("old", Some(first)),
        "inspect of the previous version's holding"
    );
    assert!(
        !s.release(key, "new").await.unwrap(),
        "not the current version's to release"
    );
    assert!(old_release(&mut con, key, "old").await);

    // The current version holds: the previous one is excluded.
    next(
        new_acquire(&s, key, "new").await,
        "current version after the previous",
    );
    assert_eq!(
        old_acquire(&mut con, key, "old").await,
        None,
        "previous version while the current holds"
    );
    assert!(
        !old_release(&mut con, key, "old").await,
        "not the previous version's to release"
    );
    assert!(
        !old_release(&mut con, key, "new").await,
        "the previous version does not know the current one's value (owner, NUL, attempt id)"
    );
    let value: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(value.starts_with("new\0"), "{value:?}");
    assert!(s.release(key, "new").await.unwrap());

    // And back: fences go on increasing, whoever takes the key.
    next(
        old_acquire(&mut con, key, "old").await,
        "previous version after the current",
    );
    assert!(
        s.release(key, "old").await.unwrap(),
        "the current version releases the previous one's holding by owner"
    );
    next(new_acquire(&s, key, "new").await, "current version, last");
    assert!(s.release(key, "new").await.unwrap());
}
