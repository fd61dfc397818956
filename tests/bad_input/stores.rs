//! Rows of the bad-input table: store URLs, credentials, servers down, and what is already
//! in the store.

use cadenas::{Locks, Manager, StoreErrorKind};

use super::table::After::Nothing;
use super::table::Expect::*;
use super::table::*;

pub fn cases() -> Vec<Case> {
    vec![
        // ---- store URLs ----
        case(
            "unknown scheme",
            Config,
            &["gopher", "admin:***@"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("gopher://admin:{WRONG_PASSWORD}@db:1/x")).await)
            },
        ),
        case(
            "host:port without a scheme",
            Config,
            &["'localhost'"],
            Nothing,
            |_| async move { api(Locks::connect("localhost:6379").await) },
        ),
        case(
            "port 99999",
            Config,
            &["invalid port"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("redis://:{WRONG_PASSWORD}@127.0.0.1:99999")).await)
            },
        ),
        case(
            "empty entry in a host list",
            Config,
            &["empty entry"],
            Nothing,
            |_| async move { api(Locks::connect("redis+cluster://127.0.0.1:1,,127.0.0.1:2").await) },
        ),
        case(
            "bad port in a host list",
            Config,
            &["'127.0.0.1:x'"],
            Nothing,
            |_| async move {
                api(Locks::connect("redlock://127.0.0.1:1,127.0.0.1:x,127.0.0.1:3").await)
            },
        ),
        case(
            "the same Redlock node twice",
            Config,
            &["listed twice"],
            Nothing,
            |_| async move {
                api(Locks::connect("redlock://127.0.0.1:1,127.0.0.1:1,127.0.0.1:2").await)
            },
        ),
        case(
            "Redlock fences=maybe",
            Config,
            &["fences=maybe", "not true or false"],
            Nothing,
            |_| async move {
                api(
                    Locks::connect("redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?fences=maybe")
                        .await,
                )
            },
        ),
        case(
            "Redis Cluster with a database",
            Config,
            &["database 0"],
            Nothing,
            |_| async move { api(Locks::connect("redis+cluster://127.0.0.1:1,127.0.0.1:2/3").await) },
        ),
        case(
            "unknown option",
            Config,
            &["'bogus'", "accepted options"],
            Nothing,
            |_| async move { api(Locks::connect(&format!("{}/?bogus=1", redis_base())).await) },
        ),
        case(
            "option with a bad duration",
            Invalid("connect_timeout"),
            &["'never'"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("{}/?connect_timeout=never", redis_base())).await)
            },
        ),
        case(
            "ca_file on redis:// (no TLS)",
            Config,
            &["rediss://"],
            Nothing,
            |_| async move {
                let ca = std::env::current_exe().unwrap().display().to_string();
                api(Locks::connect(&format!("{}/?ca_file={ca}", redis_base())).await)
            },
        ),
        case(
            "ca_file that does not exist",
            Config,
            &["ca_file", "cannot read"],
            Nothing,
            |_| async move { api(Locks::connect("rediss://127.0.0.1:1/?ca_file=no-such-ca.pem").await) },
        ),
        case(
            "bad namespace",
            Invalid("namespace"),
            &["\"a b\""],
            Nothing,
            |_| async move { api(Locks::connect("memory:?namespace=a%20b").await) },
        ),
        case(
            "bad PostgreSQL table name",
            Config,
            &["table", "identifier"],
            Nothing,
            |_| async move {
                let url = with_query(&postgres_base(), "table=locks;drop");
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "bad PostgreSQL schema name",
            Config,
            &["schema", "identifier"],
            Nothing,
            |_| async move {
                let url = with_query(&postgres_base(), "schema=no-pe");
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "bad MySQL table name",
            Config,
            &["table", "identifier"],
            Nothing,
            |_| async move {
                let url = with_query(&mysql_base(), "table=1abc");
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "schema option on MySQL",
            Config,
            &["'schema'"],
            Nothing,
            |_| async move { api(Locks::connect(&with_query(&mysql_base(), "schema=x")).await) },
        ),
        case(
            "unknown mode on a SQL store",
            Config,
            &["mode=row", "lease or session"],
            Nothing,
            |_| async move { api(Locks::connect(&with_query(&mysql_base(), "mode=row")).await) },
        ),
        case(
            "lease-mode option in PostgreSQL session mode",
            Config,
            &["unlogged", "lease mode only"],
            Nothing,
            |_| async move {
                let url = with_query(&postgres_base(), "mode=session&unlogged=true");
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "network URL a slash short (redis:/u:PW@host)",
            Config,
            &["redis://[user:password@]host"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("redis:/u:{WRONG_PASSWORD}@127.0.0.1:6379")).await)
            },
        ),
        case(
            "memory: with a path",
            Config,
            &["memory:?namespace=app"],
            Nothing,
            |_| async move { api(Locks::connect("memory:locks.db").await) },
        ),
        case(
            "CADENAS_STORES entry that is not name=url",
            Config,
            &["CADENAS_STORES", "not name=url", "redis://u:***@h:1"],
            Nothing,
            |_| async move {
                let list = format!("redis://u:{WRONG_PASSWORD}@h:1,a=memory:");
                api(Manager::from_vars(|n| (n == "CADENAS_STORES").then(|| list.clone())).await)
            },
        ),
        case(
            "CADENAS_STORES entry whose URL is bad",
            Config,
            &["CADENAS_STORES entry 'b'", "memory:?namespace=app"],
            Nothing,
            |_| async move {
                let list = format!("a=memory:,b=memory:,redis://u:{WRONG_PASSWORD}@h:1");
                api(Manager::from_vars(|n| (n == "CADENAS_STORES").then(|| list.clone())).await)
            },
        ),
        case(
            "CADENAS_DEFAULT_STORE naming no store",
            Config,
            &["'c'", "a, b"],
            Nothing,
            |_| async move {
                api(Manager::from_vars(|n| match n {
                    "CADENAS_STORES" => Some("a=memory:,b=memory:".into()),
                    "CADENAS_DEFAULT_STORE" => Some("c".into()),
                    _ => None,
                })
                .await)
            },
        ),
        case(
            "sqlite URL with a password",
            Config,
            &["file path"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("sqlite://u:{WRONG_PASSWORD}@x/locks.db")).await)
            },
        ),
        case(
            "password with an unencoded '/'",
            Config,
            &["percent-encode", "u:***@127.0.0.1"],
            Nothing,
            |_| async move { api(Locks::connect("redis://u:8/Bad+Pw9x@127.0.0.1:6379").await) },
        ),
        // ---- credentials and servers down ----
        case(
            "wrong Redis password",
            Store(StoreErrorKind::Unavailable),
            &["authentication"],
            Nothing,
            |c| async move {
                let url = format!(
                    "redis://:{WRONG_PASSWORD}@127.0.0.1:{}",
                    c.locked_redis.port
                );
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "no Redis password where one is required (first operation)",
            Store(StoreErrorKind::Unavailable),
            &["authentication required"],
            Nothing,
            |c| async move {
                let locks =
                    Locks::connect(&format!("redis://127.0.0.1:{}", c.locked_redis.port)).await;
                match locks {
                    Ok(l) => api(l.lock("k").try_acquire().await),
                    Err(e) => api::<()>(Err(e)),
                }
            },
        ),
        case(
            "unknown PostgreSQL user",
            Store(StoreErrorKind::Unavailable),
            &["user"],
            Nothing,
            |_| async move {
                let mut u = url::Url::parse(&postgres_base()).unwrap();
                u.set_username(&random("nobody_")).unwrap();
                u.set_password(Some(WRONG_PASSWORD)).unwrap();
                api(Locks::connect(u.as_str()).await)
            },
        ),
        case(
            "wrong MariaDB password",
            Store(StoreErrorKind::Unavailable),
            &["password"],
            Nothing,
            |_| async move {
                let mut u = url::Url::parse(&mysql_base()).unwrap();
                u.set_password(Some(WRONG_PASSWORD)).unwrap();
                api(Locks::connect(u.as_str()).await)
            },
        ),
        case(
            "Redis down",
            Store(StoreErrorKind::Unavailable),
            &["cannot connect"],
            Nothing,
            |_| async move { api(Locks::connect(&format!("redis://127.0.0.1:{}", free_port())).await) },
        ),
        case(
            "PostgreSQL down",
            Store(StoreErrorKind::Unavailable),
            &["127.0.0.1"],
            Nothing,
            |_| async move {
                let url = format!("postgres://u:{WRONG_PASSWORD}@127.0.0.1:{}/db", free_port());
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "MariaDB down",
            Store(StoreErrorKind::Unavailable),
            &["127.0.0.1"],
            Nothing,
            |_| async move {
                let url = format!("mariadb://u:{WRONG_PASSWORD}@127.0.0.1:{}/db", free_port());
                api(Locks::connect(&url).await)
            },
        ),
        // ---- what is already in the store ----
        case(
            "PostgreSQL table without an owner column",
            Store(StoreErrorKind::Rejected),
            &["owner", "{pg_table}_layout"],
            Nothing,
            |c| async move {
                let table = format!("{}_layout", c.pg_table);
                c.extra_tables.lock().unwrap().push((true, table.clone()));
                let pool = sqlx::PgPool::connect(&postgres_base()).await.unwrap();
                sqlx::query(&format!(
                    "CREATE TABLE \"{table}\" (key varchar(255) primary key, expiration bigint)"
                ))
                .execute(&pool)
                .await
                .unwrap();
                api(Locks::connect(&with_query(&postgres_base(), &format!("table={table}"))).await)
            },
        ),
        case(
            "MariaDB table without an owner column",
            Store(StoreErrorKind::Rejected),
            &["owner", "{my_table}_layout"],
            Nothing,
            |c| async move {
                let table = format!("{}_layout", c.my_table);
                c.extra_tables.lock().unwrap().push((false, table.clone()));
                let pool = sqlx::MySqlPool::connect(&mysql_base()).await.unwrap();
                sqlx::query(&format!(
                    "CREATE TABLE `{table}` (`key` varchar(255) primary key, expiration bigint)"
                ))
                .execute(&pool)
                .await
                .unwrap();
                api(Locks::connect(&with_query(&mysql_base(), &format!("table={table}"))).await)
            },
        ),
        case(
            "a Redis list under the lock key (acquire)",
            Store(StoreErrorKind::Rejected),
            &["k-list"],
            Nothing,
            |c| async move {
                let key = c.plant_list("k-list").await;
                let r = c.redis.lock("k-list").try_acquire().await;
                // The list is left as it was.
                let len: usize = redis::cmd("LLEN")
                    .arg(&key)
                    .query_async(&mut c.raw().await)
                    .await
                    .unwrap();
                assert_eq!(len, 1, "the list under {key} was touched");
                api(r)
            },
        ),
        case(
            "a Redis hash under the lock key (inspect)",
            Store(StoreErrorKind::Rejected),
            &["k-hash"],
            Nothing,
            |c| async move {
                let mut con = c.raw().await;
                let key = format!("{}:k-hash", c.redis_ns);
                let _: () = redis::cmd("HSET")
                    .arg(&key)
                    .arg("f")
                    .arg("v")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                api(c.redis.lock("k-hash").inspect().await)
            },
        ),
        case(
            "a Redis sorted set under the lock key (reader)",
            Store(StoreErrorKind::Rejected),
            &["k-zset", "zset"],
            Nothing,
            |c| async move {
                let mut con = c.raw().await;
                let key = format!("{}:k-zset", c.redis_ns);
                let _: () = redis::cmd("ZADD")
                    .arg(&key)
                    .arg(1)
                    .arg("m")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                // Not a group of readers (it has no group record): someone else's data.
                let r = c.redis.read("k-zset").try_acquire().await;
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(members, ["m"], "the sorted set under {key} was touched");
                api(r)
            },
        ),
    ]
}
