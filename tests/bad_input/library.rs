//! Rows of the bad-input table: the library API (keys, owners, metadata, durations, tokens,
//! the lock's life).

use std::time::Duration;

use cadenas::{Locks, Retry};

use super::table::After::{Free, Held, Nothing};
use super::table::Expect::*;
use super::table::On::{Mysql, Postgres, Redis, Sqlite};
use super::table::*;

pub fn cases() -> Vec<Case> {
    vec![
        // ---- keys, owners, metadata (library) ----
        case(
            "empty key",
            Invalid("key"),
            &["empty"],
            Nothing,
            |c| async move { api(c.redis.lock("").try_acquire().await) },
        ),
        case(
            "key of 256 bytes",
            Invalid("key"),
            &["256 bytes"],
            Nothing,
            |c| async move { api(c.sqlite.lock(long(256)).try_acquire().await) },
        ),
        case(
            "key with a NUL character",
            Invalid("key"),
            &["NUL"],
            Nothing,
            |c| async move { api(c.redis.lock("a\0b").try_acquire().await) },
        ),
        case(
            "key of 250 bytes, over 255 with its namespace",
            Invalid("key"),
            &["with its namespace"],
            Nothing,
            |c| async move { api(c.redis.lock(long(250)).try_acquire().await) },
        ),
        case(
            "key with NUL on PostgreSQL (text cannot hold it): refused before any SQL",
            Invalid("key"),
            &["NUL"],
            Nothing,
            |c| async move { api(c.postgres.lock("k\0").try_acquire().await) },
        ),
        case(
            "empty owner",
            Invalid("owner"),
            &["owner"],
            Free(Redis, "k-owner"),
            |c| async move { api(c.redis.lock("k-owner").with_owner("").try_acquire().await) },
        ),
        case(
            "owner of 256 bytes",
            Invalid("owner"),
            &["255 bytes"],
            Free(Mysql, "k-owner"),
            |c| async move {
                api(c
                    .mysql
                    .lock("k-owner")
                    .with_owner(long(256))
                    .try_acquire()
                    .await)
            },
        ),
        case(
            "metadata of 64 KiB + 1",
            Invalid("metadata"),
            &["65537 bytes"],
            Free(Redis, "k-meta"),
            |c| async move {
                let m = "m".repeat(64 * 1024 + 1);
                api(c.redis.lock("k-meta").with_metadata(m).try_acquire().await)
            },
        ),
        case(
            "set_metadata of 64 KiB + 1 on a held lock",
            Invalid("metadata"),
            &["65537 bytes"],
            Held(Postgres, "k-meta"),
            |c| async move {
                let g = c
                    .postgres
                    .lock("k-meta")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap();
                let r = g.set_metadata(Some(&"m".repeat(64 * 1024 + 1))).await;
                g.leak();
                api(r)
            },
        ),
        // ---- durations (library) ----
        case(
            "ttl of zero",
            Invalid("ttl"),
            &["at least 1ms"],
            Free(Redis, "k-ttl"),
            |c| async move {
                api(c
                    .redis
                    .lock("k-ttl")
                    .with_ttl(Some(Duration::ZERO))
                    .try_acquire()
                    .await)
            },
        ),
        case(
            "ttl over a year",
            Invalid("ttl"),
            &["one year"],
            Free(Redis, "k-ttl"),
            |c| async move {
                let ttl = Some(Duration::from_secs(366 * 24 * 3600));
                api(c.redis.lock("k-ttl").with_ttl(ttl).try_acquire().await)
            },
        ),
        case(
            "duration '-5s'",
            Invalid("ttl"),
            &["-5s", "negative"],
            Nothing,
            |_| async move { api(cadenas::parse_ttl("-5s")) },
        ),
        case(
            "duration '99999999999999999999h' (overflow)",
            Invalid("ttl"),
            &["99999999999999999999h"],
            Nothing,
            |_| async move { api(cadenas::parse_ttl("99999999999999999999h")) },
        ),
        case(
            "duration 'soon'",
            Invalid("ttl"),
            &["'soon'"],
            Nothing,
            |_| async move { api(cadenas::parse_ttl("soon")) },
        ),
        case(
            "extend by zero",
            Invalid("ttl"),
            &["at least 1ms"],
            Held(Redis, "k-extend0"),
            |c| async move {
                let g = c
                    .redis
                    .lock("k-extend0")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap();
                let r = g.extend(Some(Duration::ZERO)).await;
                g.leak();
                api(r)
            },
        ),
        case(
            "retry delay of zero",
            Invalid("retry delay"),
            &["retry delay"],
            Free(Redis, "k-retry"),
            |c| async move {
                let retry = Retry::default().delay(Duration::ZERO);
                api(c.redis.lock("k-retry").with_retry(retry).acquire().await)
            },
        ),
        case(
            "auto-extend interval not shorter than the ttl",
            Invalid("auto-extend interval"),
            &["k-extend-every", "not shorter than the ttl"],
            Free(Redis, "k-extend-every"),
            |c| async move {
                let lock = c.redis.lock("k-extend-every").with_ttl(TTL);
                let every = TTL.unwrap();
                api(lock.with_auto_extend_every(every).acquire().await)
            },
        ),
        case(
            "ttl=0 in a URL",
            Invalid("ttl"),
            &["'0'"],
            Nothing,
            |_| async move { api(Locks::connect("memory:?ttl=0").await) },
        ),
        case(
            "ttl=none on Redlock (no lease without expiry)",
            Unsupported,
            &["without ttl"],
            Nothing,
            |_| async move {
                let (a, b, d) = (free_port(), free_port(), free_port());
                let url = format!("redlock://127.0.0.1:{a},127.0.0.1:{b},127.0.0.1:{d}?ttl=none");
                api(Locks::connect(&url).await)
            },
        ),
        // ---- tokens (library) ----
        case(
            "truncated token",
            Invalid("token"),
            &["token"],
            Held(Redis, "k-tok"),
            |c| async move {
                let t = hold(&c, Redis, "k-tok").await;
                api(c.redis.restore(&t[..t.len() - 4]).await)
            },
        ),
        case(
            "token with a bad checksum",
            Invalid("token"),
            &["checksum"],
            Held(Redis, "k-tok"),
            |c| async move {
                let t = hold(&c, Redis, "k-tok").await;
                let (body, _) = t.rsplit_once('.').unwrap();
                api(c.redis.restore(&format!("{body}.00000000")).await)
            },
        ),
        case(
            "token of another version",
            Invalid("token"),
            &["cadenas1."],
            Held(Redis, "k-tok"),
            |c| async move {
                let t = hold(&c, Redis, "k-tok").await;
                api(c
                    .redis
                    .restore(&t.replacen("cadenas1.", "cadenas2.", 1))
                    .await)
            },
        ),
        case(
            "token of a Redis lock restored on PostgreSQL",
            NotOwned,
            &["k-tok", "postgres://"],
            Held(Redis, "k-tok"),
            |c| async move {
                let t = hold(&c, Redis, "k-tok").await;
                api(c.postgres.restore(&t).await)
            },
        ),
        // ---- the lock's life ----
        case(
            "releasing twice",
            NotOwned,
            &["k-twice"],
            Free(Mysql, "k-twice"),
            |c| async move {
                let t = hold(&c, Mysql, "k-twice").await;
                c.mysql.restore(&t).await.unwrap().release().await.unwrap();
                api(c.mysql.restore(&t).await)
            },
        ),
        case(
            "extending a lock taken over by another owner",
            NotOwned,
            &["k-lost"],
            Held(Redis, "k-lost"),
            |c| async move {
                let g = c
                    .redis
                    .lock("k-lost")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap();
                c.redis.lock("k-lost").force_release().await.unwrap();
                c.redis
                    .lock("k-lost")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap()
                    .leak();
                api(g.extend(None).await)
            },
        ),
        case(
            "releasing a lock taken over by another owner",
            NotOwned,
            &["k-lost"],
            Held(Postgres, "k-lost"),
            |c| async move {
                let g = c
                    .postgres
                    .lock("k-lost")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap();
                c.postgres.lock("k-lost").force_release().await.unwrap();
                c.postgres
                    .lock("k-lost")
                    .with_ttl(TTL)
                    .try_acquire()
                    .await
                    .unwrap()
                    .leak();
                api(g.release().await)
            },
        ),
        case(
            "run() whose lease is force-released while it runs",
            Lost,
            &["k-run", "was lost"],
            Free(Redis, "k-run"),
            |c| async move {
                let other = c.redis.clone();
                let r = c
                    .redis
                    .lock("k-run")
                    .run(|_| async move {
                        other.lock("k-run").force_release().await.unwrap();
                    })
                    .await;
                api(r)
            },
        ),
        // ---- elections (library) ----
        case(
            "empty election name",
            Invalid("election name"),
            &["election name", "empty"],
            Nothing,
            |c| async move { api(c.redis.election("", "host-a").campaign().await) },
        ),
        case(
            "election candidate of 256 bytes",
            Invalid("candidate"),
            &["256 bytes", "candidate identity"],
            Free(Redis, "k-elect"),
            |c| async move { api(c.redis.election("k-elect", long(256)).campaign().await) },
        ),
        case(
            "election lease of zero",
            Invalid("election lease"),
            &["k-elect", "between 1ms and one year"],
            Free(Mysql, "k-elect"),
            |c| async move {
                let election = c
                    .mysql
                    .election("k-elect", "host-a")
                    .with_ttl(Duration::ZERO);
                api(election.campaign().await)
            },
        ),
        case(
            "proclaim of 64 KiB + 1 (the leader still leads)",
            Invalid("election value"),
            &["65537 bytes"],
            Free(Postgres, "k-elect"),
            |c| async move {
                let election = c.postgres.election("k-elect", "host-a").with_value("v1");
                let leadership = election.campaign().await.unwrap();
                let r = leadership.proclaim(&"v".repeat(64 * 1024 + 1)).await;
                let leader = election.leader().await.unwrap().expect("still leads");
                assert_eq!(
                    leader.value.as_deref(),
                    Some("v1"),
                    "the value is unchanged"
                );
                assert_eq!(leader.term, Some(leadership.term()));
                leadership.resign().await.unwrap();
                api(r)
            },
        ),
        case(
            "election in PostgreSQL session mode (no one else reads the leader)",
            Unsupported,
            &[
                "leader election",
                "k-elect",
                "other clients",
                "default mode",
            ],
            Nothing,
            |_| async move {
                let url = with_query(&postgres_base(), "mode=session");
                let locks = Locks::connect(&url).await.unwrap();
                api(locks.election("k-elect", "host-a").campaign().await)
            },
        ),
        case(
            "try_acquire of a held lock",
            AlreadyLocked,
            &["k-held", "already held"],
            Held(Sqlite, "k-held"),
            |c| async move {
                hold(&c, Sqlite, "k-held").await;
                api(c.sqlite.lock("k-held").try_acquire().await)
            },
        ),
        case(
            "acquire of a held lock with a 100 ms timeout",
            Timeout,
            &["k-held", "still held"],
            Held(Redis, "k-held"),
            |c| async move {
                hold(&c, Redis, "k-held").await;
                let retry = Retry::default().timeout(Duration::from_millis(100));
                api(c.redis.lock("k-held").acquire_with(&retry).await)
            },
        ),
        // ---- semaphores and read-write locks ----
        case(
            "semaphore of 0 permits",
            Invalid("permits"),
            &["k-sem", "0 permits"],
            Nothing,
            |_| async move { api(Locks::memory().semaphore("k-sem", 0).try_acquire().await) },
        ),
        case(
            "semaphore of 10001 permits (over the most, 10000)",
            Invalid("permits"),
            &["k-sem", "10001 permits", "10000"],
            Nothing,
            |_| async move {
                api(Locks::memory()
                    .semaphore("k-sem", 10_001)
                    .try_acquire()
                    .await)
            },
        ),
        case(
            "semaphore asked with 5 permits while its holders use 3",
            Invalid("permits"),
            &["k-sem", "3 permits", "asks for 5"],
            Nothing,
            |_| async move {
                let locks = Locks::memory();
                let held = locks.semaphore("k-sem", 3).try_acquire().await.unwrap();
                let got = locks.semaphore("k-sem", 5).try_acquire().await;
                assert_eq!(locks.lock("k-sem").holders().await.unwrap().len(), 1);
                held.release().await.unwrap();
                api(got)
            },
        ),
        case(
            "semaphore on a store without semaphores (Redlock)",
            Unsupported,
            &["semaphores", "k-sem"],
            Free(Redis, "k-sem"),
            |c| async move {
                // A Redlock of one node: the Redis of the table, in its namespace.
                let node = redis_base().replacen("redis://", "redlock://", 1);
                let url = with_query(&node, &format!("namespace={}", c.redis_ns));
                let redlock = Locks::connect(&url).await.unwrap();
                api(redlock.semaphore("k-sem", 2).try_acquire().await)
            },
        ),
        case(
            "Redis semaphore asked with 5 permits while its holders use 3",
            Invalid("permits"),
            &["k-sem5", "3 permits", "asks for 5", "redis://"],
            Free(Redis, "k-sem5"),
            |c| async move {
                let held = c.redis.semaphore("k-sem5", 3).try_acquire().await.unwrap();
                let got = c.redis.semaphore("k-sem5", 5).try_acquire().await;
                let holders = c.redis.lock("k-sem5").holders().await.unwrap();
                assert_eq!(holders.len(), 1, "the 3-permit holder still holds, alone");
                held.release().await.unwrap();
                api(got)
            },
        ),
        case(
            "MySQL semaphore asked with 5 permits while its holders use 3",
            Invalid("permits"),
            &["k-sem5", "3 permits", "asks for 5", "mysql://"],
            Free(Mysql, "k-sem5"),
            |c| async move {
                let held = c.mysql.semaphore("k-sem5", 3).try_acquire().await.unwrap();
                let got = c.mysql.semaphore("k-sem5", 5).try_acquire().await;
                let holders = c.mysql.lock("k-sem5").holders().await.unwrap();
                assert_eq!(holders.len(), 1, "the 3-permit holder still holds, alone");
                held.release().await.unwrap();
                api(got)
            },
        ),
    ]
}
