//! The memory store passes the conformance suite.

use std::sync::Arc;

use cadenas::conformance::{run_all, Suite};
use cadenas::stores::memory::MemoryStore;
use cadenas::{Locks, Store};

fn suite() -> Suite {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Suite::new(move || {
        let store = store.clone();
        async move { Locks::builder().build_arc(store).unwrap() }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conformance() {
    run_all(&suite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conformance_in_a_namespace() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let suite = Suite::new(move || {
        let store = store.clone();
        async move { Locks::builder().namespace("app").build_arc(store).unwrap() }
    });
    run_all(&suite).await;
}

#[tokio::test]
async fn connect_by_url() {
    let locks = Locks::connect("memory:?namespace=jobs&ttl=5s")
        .await
        .unwrap();
    assert_eq!(locks.namespace(), Some("jobs"));
    assert_eq!(locks.describe(), "memory:");
    let g = locks.lock("k").acquire().await.unwrap();
    assert!(g.remaining_time().unwrap() <= std::time::Duration::from_secs(5));
    g.release().await.unwrap();
    assert!(Locks::connect("memory:?bogus=1").await.is_err());
}
