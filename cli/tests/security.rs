//! No password shows in the output of the `cadenas` binary (stdout, stderr, its own tracing
//! lines at `CADENAS_LOG=trace`) for the URLs with a password of the library's security
//! tests: URLs refused before anything is reached (exit 2), wrong passwords against the real
//! servers (exit 69), a password the server ignores (PostgreSQL on trust auth: `list` exits
//! 0, `leader` 1), and etcd's right password (exit 0).
#![cfg(all(
    feature = "redis",
    feature = "redlock",
    feature = "postgres",
    feature = "mysql",
    feature = "etcd",
    feature = "dynamodb"
))]

use std::time::Duration;

use cadenas_test_support::postgres::cleanup_table;
use cadenas_test_support::security::{
    assert_hidden, ignored_password_url, refused_urls, WrongPasswords,
};

/// Runs `cadenas ARGS` and checks its output; returns the exit code and stderr.
fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = assert_cmd::Command::cargo_bin("cadenas")
        .unwrap()
        .args(args)
        .env("CADENAS_LOG", "trace")
        .env_remove("CADENAS_STORE")
        .env_remove("CADENAS_STORES")
        .timeout(Duration::from_secs(60))
        .output()
        .expect("running cadenas");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_hidden(&format!("`cadenas {}` (stdout)", args.join(" ")), &stdout);
    assert_hidden(&format!("`cadenas {}` (stderr)", args.join(" ")), &stderr);
    (out.status.code(), stderr)
}

#[test]
fn urls_refused_before_anything_is_reached_exit_2_without_the_password() {
    for url in &refused_urls() {
        let (code, stderr) = cli(&["status", "--store", url, "k"]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
    }
}

#[test]
fn wrong_passwords_exit_69_without_the_password() {
    let servers = WrongPasswords::start();
    for url in &servers.urls() {
        let (code, stderr) = cli(&["acquire", "--wait", "0", "--store", url, "k"]);
        assert_eq!(code, Some(69), "{url}: {stderr}");
    }
}

#[test]
fn the_right_etcd_password_never_shows() {
    let mut cluster = cadenas_test_support::etcd::EtcdCluster::start();
    cluster.enable_auth(cadenas_test_support::security::PASSWORD);
    let (code, stderr) = cli(&["acquire", "--wait", "0", "--store", &cluster.url(), "k"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = cli(&["status", "--store", &cluster.url(), "k"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_right_sentinel_passwords_never_show() {
    let (_topology, url) = cadenas_test_support::security::sentinel_with_password();
    let (code, stderr) = cli(&["acquire", "--wait", "0", "--store", &url, "k"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = cli(&["status", "--store", &url, "k"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_password_the_server_ignores_never_shows() {
    let table = format!("cadenas_sec_{:x}", rand::random::<u32>());
    let _cleanup = cleanup_table(&table);
    let url = ignored_password_url(&table);
    let (code, stderr) = cli(&["list", "--store", &url]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = cli(&["leader", "--json", "--store", &url, "k"]);
    assert_eq!(code, Some(1), "no leader: {stderr}");
}

#[test]
fn a_dynamodb_secret_the_emulator_ignores_never_shows() {
    use cadenas_test_support::dynamodb::{random_table, DynamoServer, Emulator};
    let server = DynamoServer::start(Emulator::Dynalite);
    let url = cadenas_test_support::security::ignored_secret_url(&server, &random_table());
    let (code, stderr) = cli(&["acquire", "--wait", "0", "--store", &url, "k"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = cli(&["list", "--store", &url]);
    assert_eq!(code, Some(0), "{stderr}");
}
