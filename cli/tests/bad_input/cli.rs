//! Rows of the bad-input table: the `cadenas` binary (on the SQLite file unless `--store`
//! says otherwise).

use super::table::After::{Free, Held, Nothing};
use super::table::Expect::*;
use super::table::On::{Redis, Sqlite};
use super::table::*;

pub fn cases() -> Vec<Case> {
    vec![
        // ---- the command line (SQLite file unless --store says otherwise) ----
        case(
            "cadenas: unknown flag",
            Exit(2),
            &["--bogus"],
            Nothing,
            |c| async move { c.cli(&["status", "--bogus", "k"]).await },
        ),
        case(
            "cadenas: no key",
            Exit(2),
            &["<KEY>"],
            Nothing,
            |c| async move { c.cli(&["acquire"]).await },
        ),
        case(
            "cadenas: empty key",
            Exit(2),
            &["empty"],
            Nothing,
            |c| async move { c.cli(&["acquire", ""]).await },
        ),
        case(
            "cadenas: key of 300 bytes",
            Exit(2),
            &["300 bytes"],
            Nothing,
            |c| async move { c.cli(&["status", long(300)]).await },
        ),
        case(
            "cadenas: --ttl 0",
            Exit(2),
            &["ttl", "'0'"],
            Free(Sqlite, "k-cli"),
            |c| async move { c.cli(&["acquire", "--ttl", "0", "k-cli"]).await },
        ),
        case(
            "cadenas: --ttl -5s",
            Exit(2),
            &["negative"],
            Free(Sqlite, "k-cli"),
            |c| async move { c.cli(&["acquire", "--ttl", "-5s", "k-cli"]).await },
        ),
        case(
            "cadenas: --wait soon",
            Exit(2),
            &["wait", "'soon'"],
            Free(Sqlite, "k-cli"),
            |c| async move { c.cli(&["acquire", "--wait", "soon", "k-cli"]).await },
        ),
        case(
            "cadenas: --kill-after never",
            Exit(2),
            &["kill-after"],
            Free(Sqlite, "k-cli"),
            |c| async move {
                c.cli(&["exec", "--kill-after", "never", "k-cli", "--", "true"])
                    .await
            },
        ),
        case(
            "cadenas: --conflict-exit-code 300",
            Exit(2),
            &["300"],
            Free(Sqlite, "k-cli"),
            |c| async move {
                c.cli(&["acquire", "--conflict-exit-code", "300", "k-cli"])
                    .await
            },
        ),
        case(
            "cadenas: --metadata of 64 KiB + 1",
            Exit(2),
            &["metadata"],
            Free(Sqlite, "k-cli"),
            |c| async move {
                c.cli(&["acquire", "--metadata", &"m".repeat(64 * 1024 + 1), "k-cli"])
                    .await
            },
        ),
        case(
            "cadenas: release of a non-token",
            Exit(2),
            &["token", "cadenas1."],
            Nothing,
            |c| async move { c.cli(&["release", "hello"]).await },
        ),
        case(
            "cadenas: releasing twice",
            Exit(1),
            &["k-cli2", "not held"],
            Free(Sqlite, "k-cli2"),
            |c| async move {
                let t = hold(&c, Sqlite, "k-cli2").await;
                let first = c.cli(&["release", &t]).await;
                assert!(matches!(first, Got::Cli { code: Some(0), .. }), "{first:?}");
                c.cli(&["release", &t]).await
            },
        ),
        case(
            "cadenas: extend --ttl 0",
            Exit(2),
            &["ttl"],
            Held(Sqlite, "k-cli3"),
            |c| async move {
                let t = hold(&c, Sqlite, "k-cli3").await;
                c.cli(&["extend", "--ttl", "0", &t]).await
            },
        ),
        case(
            "cadenas: extend of a token from another store",
            Exit(1),
            &["k-tok2", "not held"],
            Held(Redis, "k-tok2"),
            |c| async move {
                let t = hold(&c, Redis, "k-tok2").await;
                c.cli(&["extend", &t]).await
            },
        ),
        case(
            "cadenas: acquire --wait 0 of a held key",
            Exit(75),
            &["k-cli4", "already held"],
            Held(Sqlite, "k-cli4"),
            |c| async move {
                hold(&c, Sqlite, "k-cli4").await;
                c.cli(&["acquire", "--wait", "0", "k-cli4"]).await
            },
        ),
        case(
            "cadenas: --conflict-exit-code 9 on a held key",
            Exit(9),
            &["k-cli4"],
            Held(Sqlite, "k-cli4"),
            |c| async move {
                hold(&c, Sqlite, "k-cli4").await;
                c.cli(&[
                    "exec",
                    "--wait",
                    "0",
                    "--conflict-exit-code",
                    "9",
                    "k-cli4",
                    "--",
                    "true",
                ])
                .await
            },
        ),
        case(
            "cadenas: --store with an unknown scheme",
            Exit(2),
            &["gopher", "u:***@"],
            Nothing,
            |c| async move {
                c.cli(&[
                    "status",
                    "--store",
                    &format!("gopher://u:{WRONG_PASSWORD}@h/x"),
                    "k",
                ])
                .await
            },
        ),
        case(
            "cadenas: wrong Redis password",
            Exit(69),
            &["authentication"],
            Nothing,
            |c| async move {
                let url = format!(
                    "redis://:{WRONG_PASSWORD}@127.0.0.1:{}",
                    c.locked_redis.port
                );
                c.cli(&["status", "--store", &url, "k"]).await
            },
        ),
        case(
            "cadenas: no Redis password where one is required",
            Exit(69),
            &["authentication required"],
            Nothing,
            |c| async move {
                let url = format!("redis://127.0.0.1:{}", c.locked_redis.port);
                c.cli(&["status", "--store", &url, "k"]).await
            },
        ),
        case(
            "cadenas: no sentinel reachable",
            Exit(69),
            &["cannot connect", "redis+sentinel://u:***@"],
            Nothing,
            |c| async move {
                let url = format!(
                    "redis+sentinel://u:{WRONG_PASSWORD}@127.0.0.1:{}/svc?sentinel_password={WRONG_PASSWORD}",
                    free_port()
                );
                c.cli(&["status", "--store", &url, "k"]).await
            },
        ),
        case(
            "cadenas: Redis down",
            Exit(69),
            &["cannot connect"],
            Nothing,
            |c| async move {
                c.cli(&[
                    "status",
                    "--store",
                    &format!("redis://127.0.0.1:{}", free_port()),
                    "k",
                ])
                .await
            },
        ),
        case(
            "cadenas: DynamoDB endpoint down",
            Exit(69),
            &["cannot connect"],
            Nothing,
            |c| async move {
                let store = format!("dynamodb://127.0.0.1:{}/locks", free_port());
                c.cli(&["status", "--store", &store, "k"]).await
            },
        ),
        case(
            "cadenas: a Redis list under the key",
            Exit(1),
            &["k-list2"],
            Nothing,
            |c| async move {
                c.plant_list("k-list2").await;
                let url = with_query(&redis_base(), &format!("namespace={}", c.redis_ns));
                c.cli(&["status", "--store", &url, "k-list2"]).await
            },
        ),
        case(
            "cadenas: leader with an empty name",
            Exit(2),
            &["election name", "empty"],
            Nothing,
            |c| async move { c.cli(&["leader", ""]).await },
        ),
        case(
            "cadenas: leader --watch --poll-interval 0",
            Exit(2),
            &["poll-interval"],
            Nothing,
            |c| async move {
                c.cli(&["leader", "--watch", "--poll-interval", "0", "k-cli"])
                    .await
            },
        ),
        // ---- --permits and --shared ----
        case(
            "cadenas: --permits 0",
            Exit(2),
            &["--permits", "'0'", "1 to 10000"],
            Free(Sqlite, "k-cli"),
            |c| async move { c.cli(&["acquire", "--permits", "0", "k-cli"]).await },
        ),
        case(
            "cadenas: --permits 10001 (over the most, 10000)",
            Exit(2),
            &["'10001'", "1 to 10000"],
            Free(Sqlite, "k-cli"),
            |c| async move {
                c.cli(&["exec", "--permits", "10001", "k-cli", "--", "true"])
                    .await
            },
        ),
        case(
            "cadenas: --permits with --shared",
            Exit(2),
            &["--permits", "--shared"],
            Free(Sqlite, "k-cli"),
            |c| async move {
                c.cli(&["acquire", "--permits", "2", "--shared", "k-cli"])
                    .await
            },
        ),
        case(
            "cadenas: --force with --shared",
            Exit(2),
            &["--force", "--shared"],
            Held(Sqlite, "k-cli5"),
            |c| async move {
                hold(&c, Sqlite, "k-cli5").await;
                c.cli(&["acquire", "--force", "--shared", "k-cli5"]).await
            },
        ),
        case(
            "cadenas: --force with --permits",
            Exit(2),
            &["--force", "--permits"],
            Held(Sqlite, "k-cli5"),
            |c| async move {
                hold(&c, Sqlite, "k-cli5").await;
                c.cli(&["exec", "--force", "--permits", "3", "k-cli5", "--", "true"])
                    .await
            },
        ),
        case(
            "cadenas: --shared on a store without read-write locks (PostgreSQL session mode)",
            Exit(2),
            &["read-write locks", "k-cli6", "--shared needs a store"],
            Nothing,
            |c| async move {
                let url = with_query(&postgres_base(), "mode=session");
                c.cli(&["acquire", "--store", &url, "--shared", "k-cli6"])
                    .await
            },
        ),
        case(
            "cadenas: --permits on a store without semaphores (PostgreSQL session mode)",
            Exit(2),
            &["semaphores", "k-cli6", "--permits needs a store"],
            Nothing,
            |c| async move {
                let url = with_query(&postgres_base(), "mode=session");
                c.cli(&[
                    "exec",
                    "--store",
                    &url,
                    "--permits",
                    "2",
                    "k-cli6",
                    "--",
                    "true",
                ])
                .await
            },
        ),
    ]
}
