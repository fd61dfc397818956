//! Helpers shared by the MySQL/MariaDB test files: the server's URL, random tables dropped at
//! the end, a store on a fresh table.
#![allow(dead_code)]

use cadenas::stores::mysql::MySqlStore;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

include!("sql_shared.rs");

sql_test_support! {
    pool: MySqlPool,
    pool_options: MySqlPoolOptions,
    store: MySqlStore,
    env: "CADENAS_TEST_MYSQL_URL",
    default_url: "mysql://root@127.0.0.1:3306/test",
    unreachable: "MySQL/MariaDB is not reachable at {} ({}). Install and start one (`apt-get install mariadb-server`, then create database `test`) or point CADENAS_TEST_MYSQL_URL at one.",
    drops: |table| vec![
        format!("DROP TABLE IF EXISTS `{table}`"),
        format!("DROP TABLE IF EXISTS `{table}_fences`"),
    ],
}
