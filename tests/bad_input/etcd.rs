//! Rows of the bad-input table for the etcd store: its URLs, a wrong password, a member
//! down, and someone else's data under a lock's prefix. Each row that needs a server starts
//! an etcd member of its own.

use cadenas::{Locks, StoreErrorKind};
use cadenas_test_support::etcd::EtcdCluster;

use super::table::After::Nothing;
use super::table::Expect::*;
use super::table::*;

/// A member started off the runtime's threads (starting waits for it to be healthy).
async fn member(password: Option<&'static str>) -> EtcdCluster {
    tokio::task::spawn_blocking(move || {
        let mut cluster = EtcdCluster::start();
        if let Some(p) = password {
            cluster.enable_auth(p);
        }
        cluster
    })
    .await
    .unwrap()
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "etcd URL with a path",
            Config,
            &["names members only", "u:***@"],
            Nothing,
            |_| async move {
                api(Locks::connect(&format!("etcd://u:{WRONG_PASSWORD}@127.0.0.1:1/locks")).await)
            },
        ),
        case(
            "ca_file on etcd:// (no TLS)",
            Config,
            &["etcds://"],
            Nothing,
            |_| async move { api(Locks::connect("etcd://127.0.0.1:1?ca_file=ca.pem").await) },
        ),
        case(
            "wrong etcd password",
            Store(StoreErrorKind::Unavailable),
            &["authentication failed", "user and password"],
            Nothing,
            |_| async move {
                let server = member(Some("Etcd-Pw-4f1")).await;
                let url = format!("etcd://root:{WRONG_PASSWORD}@127.0.0.1:{}", server.port(0));
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "etcd down",
            Store(StoreErrorKind::Unavailable),
            &["is etcd running"],
            Nothing,
            |_| async move {
                let url = format!("etcd://u:{WRONG_PASSWORD}@127.0.0.1:{}", free_port());
                api(Locks::connect(&url).await)
            },
        ),
        case(
            "an etcd key under the lock's prefix holding foreign data (acquire)",
            Store(StoreErrorKind::Rejected),
            &["k-foreign/config", "not a lock"],
            Nothing,
            |_| async move {
                let server = member(None).await;
                let put = |args: &[&str]| server.etcdctl().args(args).output().unwrap();
                assert!(put(&["put", "k-foreign/config", "debug=1"])
                    .status
                    .success());
                let locks = Locks::connect(&server.url()).await.unwrap();
                let r = locks.lock("k-foreign").try_acquire().await;
                // The data is left as it was, and nothing of ours was written beside it.
                let left = put(&["get", "k-foreign/", "--prefix"]);
                assert_eq!(
                    String::from_utf8_lossy(&left.stdout),
                    "k-foreign/config\ndebug=1\n"
                );
                api(r)
            },
        ),
    ]
}
