//! Interoperability with Verrou (`@verrou/core`, Node.js) on the same Redis: a Node process
//! and cadenas exclude each other on the same key, and each sees the other's owner.
//!
//! Needs `node` and `npm`; the packages are installed once into Cargo's test temp dir
//! (`target/tmp/verrou-interop`). Run with `cargo test --features redis --test redis_verrou`.
#![cfg(feature = "redis")]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cadenas::stores::redis::RedisStore;
use cadenas::{Acquire, AcquireRequest, Store};
use cadenas_test_support::redis::RedisServer;

const VERROU: &str = "@verrou/core@0.5";
const IOREDIS: &str = "ioredis@5";

/// `node interop.mjs PORT COMMAND KEY [OWNER]` prints one JSON line.
const SCRIPT: &str = r#"
import { Verrou, E_LOCK_NOT_OWNED } from '@verrou/core'
import { redisStore } from '@verrou/core/drivers/redis'
import { Redis } from 'ioredis'

const [port, command, key, owner] = process.argv.slice(2)
const connection = new Redis({ host: '127.0.0.1', port: Number(port) })
const verrou = new Verrou({ default: 'redis', stores: { redis: { driver: redisStore({ connection }) } } })
let out
if (command === 'acquire') {
  const lock = verrou.createLock(key, '30s')
  out = { acquired: await lock.acquireImmediately(), owner: lock.getOwner() }
} else if (command === 'release') {
  const lock = verrou.restoreLock({ key, owner, ttl: 30000, expirationTime: null })
  try { await lock.release(); out = { released: true } }
  catch (e) { if (e instanceof E_LOCK_NOT_OWNED) out = { released: false }; else throw e }
} else if (command === 'locked') {
  out = { locked: await verrou.createLock(key).isLocked() }
}
console.log(JSON.stringify(out))
await connection.quit()
"#;

fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verrou-interop");
    std::fs::create_dir_all(&dir).unwrap();
    if !dir.join("node_modules/@verrou/core").exists() {
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"verrou-interop","private":true,"type":"module"}"#,
        )
        .unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                VERROU,
                IOREDIS,
            ])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run npm ({e}): install Node.js and npm (`apt-get install nodejs npm`)"
                )
            });
        assert!(status.success(), "npm install {VERROU} {IOREDIS} failed");
    }
    std::fs::write(dir.join("interop.mjs"), SCRIPT).unwrap();
    dir
}

fn verrou(dir: &PathBuf, port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg("interop.mjs")
        .arg(port.to_string())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): install Node.js (`apt-get install nodejs`)")
        });
    assert!(
        out.status.success(),
        "node interop.mjs {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn verrou_and_cadenas_exclude_each_other() {
    let dir = interop_dir();
    let server = RedisServer::start();
    let s = RedisStore::connect(&server.url()).await.unwrap();
    let key = "shared:job";

    // Node holds it: cadenas sees Verrou's owner and cannot take it.
    let held = verrou(&dir, server.port, &["acquire", key]);
    assert_eq!(held["acquired"], true);
    let node_owner = held["owner"].as_str().unwrap().to_owned();
    match s
        .try_acquire(AcquireRequest::new(
            key,
            "rust-owner",
            Some(Duration::from_secs(30)),
        ))
        .await
        .unwrap()
    {
        Acquire::Held(h) => assert_eq!(h.owner.as_deref(), Some(node_owner.as_str())),
        other => panic!("cadenas took a lock Verrou holds: {other:?}"),
    }
    assert!(!s.release(key, "rust-owner").await.unwrap());
    let info = s.inspect(key).await.unwrap().unwrap();
    assert_eq!(
        (info.owner.as_str(), info.fence),
        (node_owner.as_str(), None)
    );

    // Node releases it; cadenas takes it, and Verrou now sees it locked and fails to take it.
    assert_eq!(
        verrou(&dir, server.port, &["release", key, &node_owner])["released"],
        true
    );
    assert!(matches!(
        s.try_acquire(AcquireRequest::new(
            key,
            "rust-owner",
            Some(Duration::from_secs(30))
        ))
        .await
        .unwrap(),
        Acquire::Acquired(_)
    ));
    assert_eq!(verrou(&dir, server.port, &["locked", key])["locked"], true);
    assert_eq!(
        verrou(&dir, server.port, &["acquire", key])["acquired"],
        false
    );
    // Verrou's owner-checked release refuses a lock cadenas holds; cadenas's own works.
    assert_eq!(
        verrou(&dir, server.port, &["release", key, &node_owner])["released"],
        false
    );
    assert!(s.release(key, "rust-owner").await.unwrap());
    assert_eq!(verrou(&dir, server.port, &["locked", key])["locked"], false);
    assert_eq!(
        verrou(&dir, server.port, &["acquire", key])["acquired"],
        true
    );
}
