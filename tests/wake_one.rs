//! Hand-off among the waiters of one process: a release wakes one waiter, in the order they
//! came, and a waiter that cannot use its wake-up (its try failed, or it was dropped) does
//! not strand the others. On the memory store, counting the tries through a wrapper; every
//! waiter's poll delay is far longer than the test, so only a wake-up can make it try.
//!
//! Single-threaded runtimes: "the other waiters are still asleep" is then a fact after the
//! woken one has run, not a timing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cadenas::stores::memory::MemoryStore;
use cadenas::{
    Acquire, AcquireRequest, Capabilities, Error, Guard, Lease, LockInfo, Locks, Retry, Store,
    StoreError, StoreErrorKind, Subscription,
};

/// The memory store, counting tries and failing the next `fail` of them.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    tries: AtomicUsize,
    subscribed: AtomicUsize,
    fail: AtomicUsize,
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> &str {
        "counting memory:"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, request: AcquireRequest<'_>) -> Result<Acquire, StoreError> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return Err(StoreError::new(
                StoreErrorKind::Transient,
                "injected failure",
            ));
        }
        self.inner.try_acquire(request).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.inner.release(key, owner).await
    }
    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.extend(key, owner, ttl).await
    }
    async fn set_metadata(
        &self,
        key: &str,
        owner: &str,
        metadata: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.set_metadata(key, owner, metadata).await
    }
    async fn force_release(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.force_release(key).await
    }
    async fn inspect(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inner.inspect(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> {
        let sub = self.inner.subscribe(key).await;
        self.subscribed.fetch_add(1, Ordering::SeqCst);
        sub
    }
}

/// Lets every ready task run until none is.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Waiters that would poll only after 300 s.
fn patient() -> Retry {
    Retry::default()
        .delay(Duration::from_secs(300))
        .jitter(Duration::ZERO)
}

type Got = tokio::sync::mpsc::UnboundedReceiver<(usize, Result<Guard, Error>)>;

/// `n` waiters on `key`, started in order; each reports `(its number, its acquire)`.
async fn waiters(locks: &Locks, store: &Counting, n: usize) -> Got {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let base = store.subscribed.load(Ordering::SeqCst);
    for i in 0..n {
        let (lock, tx) = (locks.lock("k").with_retry(patient()), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send((i, lock.acquire().await));
        });
        settle().await;
        assert_eq!(
            store.subscribed.load(Ordering::SeqCst),
            base + i + 1,
            "waiter {i} waits"
        );
    }
    rx
}

fn setup() -> (Locks, Arc<Counting>) {
    let store = Arc::new(Counting::default());
    let locks = Locks::builder().build_arc(store.clone()).unwrap();
    (locks, store)
}

#[tokio::test(flavor = "current_thread")]
async fn released_locks_go_to_one_waiter_at_a_time_first_come_first_served() {
    let (locks, store) = setup();
    let holder = locks.lock("k").acquire().await.unwrap();
    let mut got = waiters(&locks, &store, 4).await;
    let mut guard = holder;
    for expected in 0..4 {
        let before = store.tries.load(Ordering::SeqCst);
        guard.release().await.unwrap();
        settle().await;
        assert_eq!(
            store.tries.load(Ordering::SeqCst),
            before + 1,
            "one release made exactly one waiter try"
        );
        let (who, r) = got.try_recv().expect("the woken waiter holds the lock");
        assert_eq!(who, expected, "waiters get the lock in the order they came");
        guard = r.unwrap();
        assert!(got.try_recv().is_err(), "nobody else got it");
    }
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_woken_waiter_whose_try_fails_passes_the_wake_up_on() {
    let (locks, store) = setup();
    let holder = locks.lock("k").acquire().await.unwrap();
    let mut got = waiters(&locks, &store, 3).await;
    store.fail.store(1, Ordering::SeqCst);
    holder.release().await.unwrap();
    settle().await;
    let (first, r) = got.try_recv().expect("the first waiter's try failed");
    assert_eq!(first, 0);
    assert!(matches!(r, Err(Error::Store { .. })), "{r:?}");
    let (second, r) = got.try_recv().expect("the wake-up went to the next waiter");
    assert_eq!(second, 1);
    r.unwrap().release().await.unwrap();
    settle().await;
    let (third, r) = got.try_recv().expect("and on down the queue");
    assert_eq!(third, 2);
    r.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_dropped_with_its_wake_up_unused_does_not_strand_the_others() {
    let (locks, store) = setup();
    let holder = locks.lock("k").acquire().await.unwrap();
    // The first waiter is a future we hold and never poll again after it subscribed.
    let first_lock = locks.lock("k").with_retry(patient());
    let mut first = Box::pin(first_lock.acquire());
    assert!(futures_poll_once(first.as_mut()).await.is_none());
    let mut got = waiters(&locks, &store, 2).await;
    holder.release().await.unwrap();
    settle().await;
    assert!(
        got.try_recv().is_err(),
        "the release woke the first waiter only"
    );
    // Dropped before it could use the wake-up: the next waiter gets it.
    drop(first);
    settle().await;
    let (who, r) = got
        .try_recv()
        .expect("the wake-up went on to the next waiter");
    assert_eq!(who, 0);
    r.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_that_loses_the_race_stays_first_in_line() {
    let (locks, store) = setup();
    let holder = locks.lock("k").acquire().await.unwrap();
    let mut got = waiters(&locks, &store, 2).await;
    // The holder releases and takes the lock again before the woken waiter runs.
    let lock = holder.lock().clone();
    holder.release().await.unwrap();
    let holder = lock.try_acquire().await.unwrap();
    settle().await;
    assert!(
        got.try_recv().is_err(),
        "the woken waiter found it held again"
    );
    holder.release().await.unwrap();
    settle().await;
    let (who, r) = got.try_recv().expect("the next release wakes a waiter");
    assert_eq!(who, 0, "the first waiter kept its place");
    r.unwrap().release().await.unwrap();
    settle().await;
    let (who, r) = got.try_recv().expect("then the second");
    assert_eq!(who, 1);
    r.unwrap().release().await.unwrap();
}

/// The waiters of a plain mutex on a store with read-write locks (the memory store) wait
/// their turn: only the first polls, so 8 of them make one try per delay, not 8. A waiting
/// reader makes the writers behind it poll (readers held back by a writer's marker would
/// keep the wake-ups the writer needs).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_waiters_of_a_mutex_make_one_poll_per_delay() {
    let (locks, store) = setup();
    let holder = locks.lock("k").acquire().await.unwrap();
    let retry = Retry::default()
        .delay(Duration::from_millis(100))
        .jitter(Duration::ZERO);
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let lock = locks.lock("k").with_retry(retry.clone());
        waiting.push(tokio::spawn(async move { lock.acquire().await }));
    }
    settle().await;
    let tries = |store: &Counting| store.tries.load(Ordering::SeqCst);
    let before = tries(&store);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let polls = tries(&store) - before;
    assert!(
        (9..=11).contains(&polls),
        "8 mutex waiters made {polls} tries in 10 delays"
    );
    let reader = locks.read("k").with_retry(retry.clone());
    let reading = tokio::spawn(async move { reader.acquire().await });
    settle().await;
    let before = tries(&store);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let polls = tries(&store) - before;
    assert!(
        polls >= 80,
        "with a reader waiting, every writer polls: {polls} tries in 10 delays"
    );
    holder.release().await.unwrap();
    for w in waiting {
        w.abort();
    }
    reading.abort();
}

/// Polls `f` once: `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
    let mut f = f;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
