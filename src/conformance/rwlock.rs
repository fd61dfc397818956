//! Read-write locks ([`Locks::read`](crate::Locks::read), [`Locks::write`](crate::Locks::write)):
//! readers share, a writer excludes everyone, a waiting writer is not starved by readers, a
//! crashed waiting writer does not hold readers back for good.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{eventually, Suite};
use crate::{Error, LockKind, Retry};

/// Every read-write lock check, one after the other. On a store that does not declare
/// [`Capabilities::shared_locks`](crate::Capabilities::shared_locks) only the first runs: it
/// checks that readers are refused there.
pub async fn rwlock_all(suite: &Suite) {
    if !shared_locks_are_declared(suite).await {
        return;
    }
    readers_share_writers_exclude(suite).await;
    waiting_writer_is_not_starved(suite).await;
    crashed_waiting_writer_lets_readers_in(suite).await;
    killed_reader_returns(suite).await;
    rwlock_contention(suite).await;
}

/// A store without read-write locks answers `Unsupported` (naming the key) to a reader and
/// takes nothing. Returns whether the store declares them.
pub async fn shared_locks_are_declared(suite: &Suite) -> bool {
    let locks = suite.client().await;
    let key = suite.key("rw-declared");
    let declared = locks.store().capabilities().shared_locks;
    match locks.read(&key).try_acquire().await {
        Ok(g) if declared => {
            g.release().await.unwrap();
            true
        }
        Err(Error::Unsupported { what, .. }) if !declared => {
            assert!(what.contains(&key), "{}: {what}", locks.describe());
            assert!(
                !locks.lock(&key).is_locked().await.unwrap(),
                "{}: a refused reader took the key",
                locks.describe()
            );
            // The write side is the plain lock, on every store.
            let w = locks.write(&key).try_acquire().await.unwrap();
            w.release().await.unwrap();
            false
        }
        other => panic!(
            "{}: read-write locks declared {declared}, yet a reader gave {other:?}",
            locks.describe()
        ),
    }
}

/// Two readers of two clients hold at once; a writer and a plain mutex of the key wait for
/// them; a reader waits for a writer; fences increase across both kinds; `inspect` shows
/// every reader; per-reader release and restore.
pub async fn readers_share_writers_exclude(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let d = a.describe().to_owned();
    let key = suite.key("rw-share");
    let r1 = a.read(&key).try_acquire().await.unwrap();
    let r2 = b
        .read(&key)
        .with_metadata("r2")
        .try_acquire()
        .await
        .unwrap();
    assert!(r1.fence() < r2.fence(), "{d}: reader fences increase");
    assert!(
        matches!(
            b.write(&key).try_acquire().await,
            Err(Error::AlreadyLocked { .. })
        ),
        "{d}: a writer got in beside readers"
    );
    assert!(
        b.lock(&key).try_acquire().await.is_err(),
        "{d}: a mutex got in beside readers"
    );
    let info = b.lock(&key).inspect().await.unwrap().expect("held");
    assert_eq!(info.kind, LockKind::Shared, "{d}");
    assert_eq!(info.holders.len(), 2, "{d}: {info:?}");
    assert_eq!(info.holders[1].metadata.as_deref(), Some("r2"), "{d}");
    // A reader's token restores as a reader.
    let r2 = b.restore(&r2.serialize()).await.unwrap();
    assert_eq!(r2.lock().kind(), LockKind::Shared, "{d}");
    r1.release().await.unwrap();
    assert!(
        b.write(&key).try_acquire().await.is_err(),
        "{d}: one reader left"
    );
    r2.release().await.unwrap();
    let w = b.write(&key).try_acquire().await.unwrap();
    assert!(
        w.fence() > r2_fence(&info),
        "{d}: a writer's fence tops the readers'"
    );
    assert!(
        a.read(&key).try_acquire().await.is_err(),
        "{d}: a reader got in beside a writer"
    );
    let wf = w.fence();
    w.release().await.unwrap();
    let r = a.read(&key).try_acquire().await.unwrap();
    assert!(r.fence() > wf, "{d}: a reader's fence tops the writer's");
    r.release().await.unwrap();
}

fn r2_fence(info: &crate::LockInfo) -> Option<u64> {
    info.holders.iter().filter_map(|h| h.fence).max()
}

/// While readers keep coming (each holds a while; together they never leave the key free),
/// a writer that waits gets the key within the suite's patience: new readers wait for it.
pub async fn waiting_writer_is_not_starved(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("rw-starve");
    let stop = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for i in 0..6 {
        let locks = [&a, &b][i % 2].clone();
        let (key, stop, reading) = (key.clone(), stop.clone(), reading.clone());
        readers.push(tokio::spawn(async move {
            let retry = Retry::default().delay(Duration::from_millis(5));
            while !stop.load(Ordering::SeqCst) {
                let r = locks.read(&key).with_retry(retry.clone());
                let Ok(g) = tokio::time::timeout(Duration::from_millis(500), r.acquire()).await
                else {
                    continue;
                };
                let g = g.expect("a reader waits without error");
                reading.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                reading.fetch_sub(1, Ordering::SeqCst);
                g.release()
                    .await
                    .expect("a reader releases its own holding");
            }
        }));
    }
    eventually(suite, "readers hold the key", || {
        let n = reading.load(Ordering::SeqCst);
        async move { n > 0 }
    })
    .await;
    let writer = a.write(&key).with_retry(
        Retry::default()
            .timeout(suite.patience)
            .delay(Duration::from_millis(10)),
    );
    let got = writer.acquire().await;
    let inside = reading.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let w = got.unwrap_or_else(|e| {
        panic!(
            "{}: a waiting writer was starved by readers: {e}",
            a.describe()
        )
    });
    assert_eq!(inside, 0, "{}: a writer beside readers", a.describe());
    w.release().await.unwrap();
    for t in readers {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A writer that waits and then goes away (its acquire dropped, as when its process dies)
/// holds new readers back only for its marker's lease (here its ttl of 300 ms); readers that
/// held meanwhile keep holding.
pub async fn crashed_waiting_writer_lets_readers_in(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("rw-crashed-writer");
    let r = a.read(&key).try_acquire().await.unwrap();
    let writer = b
        .write(&key)
        .with_ttl(Some(Duration::from_millis(300)))
        .with_retry(Retry::default().delay(Duration::from_millis(10)));
    let waited = tokio::time::timeout(Duration::from_millis(100), writer.acquire()).await;
    assert!(waited.is_err(), "the writer was waiting");
    let reader = a.read(&key).with_retry(
        Retry::default()
            .timeout(suite.patience)
            .delay(Duration::from_millis(20)),
    );
    let r2 = reader.acquire().await.unwrap_or_else(|e| {
        panic!(
            "{}: a crashed waiting writer held readers back for good: {e}",
            a.describe()
        )
    });
    r.release().await.unwrap();
    r2.release().await.unwrap();
}

/// A reader that dies without releasing lets a writer in when its lease ends.
pub async fn killed_reader_returns(suite: &Suite) {
    let (a, b) = (suite.client().await, suite.client().await);
    let key = suite.key("rw-killed");
    a.read(&key)
        .with_ttl(Some(Duration::from_millis(300)))
        .try_acquire()
        .await
        .unwrap()
        .leak();
    let w = b
        .write(&key)
        .with_retry(
            Retry::default()
                .timeout(suite.patience)
                .delay(Duration::from_millis(20)),
        )
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("{}: a killed reader's lease ended: {e}", a.describe()));
    w.release().await.unwrap();
}

/// Readers and writers over two clients: a writer never has company, readers do overlap, and
/// every task gets its turns.
pub async fn rwlock_contention(suite: &Suite) {
    let clients = [suite.client().await, suite.client().await];
    let key = suite.key("rw-contention");
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let most_readers = Arc::new(AtomicUsize::new(0));
    let tasks_n = suite.contenders.clamp(4, 32);
    let mut tasks = Vec::new();
    for i in 0..tasks_n {
        let locks = clients[i % 2].clone();
        let (key, readers, writers, most) = (
            key.clone(),
            readers.clone(),
            writers.clone(),
            most_readers.clone(),
        );
        let patience = suite.patience * 3;
        tasks.push(tokio::spawn(async move {
            let retry = Retry::default()
                .timeout(patience)
                .delay(Duration::from_millis(10));
            let write = i % 4 == 0;
            for _ in 0..3 {
                let lock = if write {
                    locks.write(&key)
                } else {
                    locks.read(&key)
                };
                let g = lock
                    .with_retry(retry.clone())
                    .acquire()
                    .await
                    .expect("every task gets its turn");
                if write {
                    let w = writers.fetch_add(1, Ordering::SeqCst) + 1;
                    assert_eq!(w, 1, "two writers at once");
                    assert_eq!(readers.load(Ordering::SeqCst), 0, "a writer beside readers");
                    tokio::task::yield_now().await;
                    writers.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let r = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(r, Ordering::SeqCst);
                    assert_eq!(
                        writers.load(Ordering::SeqCst),
                        0,
                        "a reader beside a writer"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    readers.fetch_sub(1, Ordering::SeqCst);
                }
                g.release()
                    .await
                    .expect("a holder releases its own holding");
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    assert!(
        most_readers.load(Ordering::SeqCst) > 1,
        "{}: readers never shared the key",
        clients[0].describe()
    );
}
