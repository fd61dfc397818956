//! A cancel-safe [`Store::try_acquire`](crate::Store::try_acquire) for stores whose request
//! must not be abandoned half-way (SQLite, PostgreSQL, MySQL, DynamoDB).
//!
//! A SQL statement whose future is dropped may still run and commit on the server, and a
//! transaction cut short leaves its connection in doubt. So a request is never dropped
//! unfinished: it runs in the caller's task while the caller waits for it (no task of its
//! own, no hand-over between tasks: an answer the caller gets is in its hands at once), and
//! a caller that goes away before the answer hands the unfinished request to a task of its
//! own, which runs it to its end and gives back a lock it took.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::store::StoreError;

/// Runs `request` and returns its answer. If this future is dropped before it returns, the
/// request is finished in a task of its own, and a lock it took is given back with
/// `release`. A release that fails with a retryable error (a timeout, a lost connection) is
/// tried again, up to [`RELEASE_TRIES`] times in all with a growing pause; a failure that
/// remains is logged at `warn` naming `key` and `store`, and the lock then ends with its
/// ttl. A lock this future returned is never released by it.
///
/// `release` must release exactly what `request` took (the key, by its owner). It runs at
/// once after the answer, so it could only meet a later holding if that lease had already
/// run out and the same owner had taken the key again in between.
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "dynamodb"
))]
pub(crate) async fn acquire<Req, Rel, RelFut>(
    key: &str,
    store: &str,
    request: Req,
    release: Rel,
) -> Result<crate::store::Acquire, StoreError>
where
    Req: Future<Output = Result<crate::store::Acquire, StoreError>> + Send + 'static,
    Rel: Fn() -> RelFut + Send + 'static,
    RelFut: Future<Output = Result<bool, StoreError>> + Send,
{
    run(
        key,
        store,
        request,
        |a| matches!(a, crate::store::Acquire::Acquired(_)),
        release,
    )
    .await
}

/// [`acquire`] for any request whose answer `took` says holds a lock (a take-over always
/// does).
pub(crate) async fn run<T, Req, Took, Rel, RelFut>(
    key: &str,
    store: &str,
    request: Req,
    took: Took,
    release: Rel,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    Req: Future<Output = Result<T, StoreError>> + Send + 'static,
    Took: FnOnce(&T) -> bool + Send + 'static,
    Rel: Fn() -> RelFut + Send + 'static,
    RelFut: Future<Output = Result<bool, StoreError>> + Send,
{
    let finish = move |request: Pin<Box<Req>>| {
        let (k, s) = (key.to_owned(), store.to_owned());
        let finish = async move {
            if matches!(&request.await, Ok(t) if took(t)) {
                release_in_background(&k, &s, release).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(finish)),
            // Dropped outside any runtime: nothing can run the request any more.
            Err(_) => tracing::warn!(key = %key, store = %store,
                "an acquire was dropped outside a runtime; a lock it took ends with its ttl"),
        }
    };
    let mut pending = Unfinished {
        request: Some(Box::pin(request)),
        finish: Some(finish),
    };
    std::future::poll_fn(|cx| pending.poll(cx)).await
}

/// A request while its caller waits for it; dropped unfinished, it is handed to `finish`.
struct Unfinished<Req: Future, F: FnOnce(Pin<Box<Req>>)> {
    /// `None` once it answered.
    request: Option<Pin<Box<Req>>>,
    finish: Option<F>,
}

impl<Req: Future, F: FnOnce(Pin<Box<Req>>)> Unfinished<Req, F> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Req::Output> {
        let Some(request) = self.request.as_mut() else {
            return Poll::Pending; // answered already; not polled again
        };
        let answer = std::task::ready!(request.as_mut().poll(cx));
        // In the same poll as the answer is returned: nothing is left to finish.
        self.request = None;
        Poll::Ready(answer)
    }
}

impl<Req: Future, F: FnOnce(Pin<Box<Req>>)> Drop for Unfinished<Req, F> {
    fn drop(&mut self) {
        if let (Some(request), Some(finish)) = (self.request.take(), self.finish.take()) {
            finish(request);
        }
    }
}

/// How many times in all a release after a cancelled acquire is tried while its errors are
/// retryable.
pub(crate) const RELEASE_TRIES: u32 = 4;

/// The pause before the first retry of such a release; it doubles before each further one
/// (100, 200, 400 ms).
const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `release` until it answers, or fails with an error that is not retryable, or has been
/// tried [`RELEASE_TRIES`] times; the failure that remains is logged. Nobody waits for this,
/// so a store that timed out under load is given the time to answer.
async fn release_in_background<Rel, RelFut>(key: &str, store: &str, release: Rel)
where
    Rel: Fn() -> RelFut,
    RelFut: Future<Output = Result<bool, StoreError>>,
{
    let mut pause = FIRST_PAUSE;
    for tried in 1.. {
        match release().await {
            Ok(_) => return,
            Err(e) if e.is_retryable() && tried < RELEASE_TRIES => {
                tracing::debug!(key = %key, store = %store, error = %e, tried,
                    "release after a cancelled acquire failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::warn!(key = %key, store = %store, error = %e, tried,
                    "could not release after a cancelled acquire; the lock expires with its ttl");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::sync::{Notify, Semaphore};

    use crate::store::{Acquire, AcquireRequest, Store, StoreErrorKind};
    use crate::stores::memory::MemoryStore;

    use super::*;

    /// What the test controls of a request: when it may take the lock, when it may answer
    /// after that, and word that it took it.
    struct Gate {
        take: Semaphore,
        answer: Semaphore,
        took: Notify,
    }

    fn gate() -> Arc<Gate> {
        Arc::new(Gate {
            take: Semaphore::new(0),
            answer: Semaphore::new(0),
            took: Notify::new(),
        })
    }

    /// An acquire of `k` on `memory` through the helper, whose request waits for `gate` to
    /// let it take the lock, then to let it answer.
    fn gated(
        memory: &Arc<MemoryStore>,
        gate: &Arc<Gate>,
    ) -> impl Future<Output = Result<Acquire, StoreError>> {
        let (m, g) = (memory.clone(), gate.clone());
        let request = async move {
            g.take
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
            let answer = m.try_acquire(AcquireRequest::new("k", "me", None)).await;
            g.took.notify_one();
            g.answer
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
            answer
        };
        let m = memory.clone();
        let release = move || {
            let m = m.clone();
            async move { m.release("k", "me").await }
        };
        acquire("k", "memory:", request, release)
    }

    /// Waits until `k` is free, failing after a deadline.
    async fn until_free(memory: &MemoryStore) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while memory.inspect("k").await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lock of a cancelled acquire stayed held"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_caller_gone_after_the_take_but_before_the_answer_leaves_nothing_held() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        let mut acquire = Box::pin(gated(&memory, &gate));
        assert!((&mut acquire).now_or_never().is_none(), "waits to take");
        gate.take.add_permits(1);
        assert!((&mut acquire).now_or_never().is_none(), "waits to answer");
        assert!(
            memory.inspect("k").await.unwrap().is_some(),
            "the request took it"
        );
        drop(acquire);
        gate.answer.add_permits(1);
        until_free(&memory).await;
    }

    #[tokio::test]
    async fn a_request_that_takes_after_its_caller_left_is_released() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        let mut acquire = Box::pin(gated(&memory, &gate));
        assert!((&mut acquire).now_or_never().is_none(), "waits to take");
        drop(acquire);
        gate.take.add_permits(1);
        gate.answer.add_permits(1);
        gate.took.notified().await;
        until_free(&memory).await;
    }

    #[tokio::test]
    async fn a_returned_lock_stays_held() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        gate.take.add_permits(1);
        gate.answer.add_permits(1);
        let answer = gated(&memory, &gate).await.unwrap();
        assert!(matches!(answer, Acquire::Acquired(_)));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(memory.inspect("k").await.unwrap().unwrap().owner, "me");
    }

    /// The answer of a test's release.
    type Released = std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send>>;

    /// A release that fails as `kind` the first `failures` times, then releases `k` on
    /// `memory`; with the number of tries it was given.
    fn flaky_release(
        memory: &Arc<MemoryStore>,
        failures: u32,
        kind: StoreErrorKind,
    ) -> (impl Fn() -> Released, Arc<std::sync::atomic::AtomicU32>) {
        use std::sync::atomic::{AtomicU32, Ordering};
        let (m, tries) = (memory.clone(), Arc::new(AtomicU32::new(0)));
        let counted = tries.clone();
        let release = move || {
            let (m, n) = (m.clone(), counted.fetch_add(1, Ordering::SeqCst) + 1);
            Box::pin(async move {
                if n <= failures {
                    return Err(StoreError::new(kind, "timed out releasing 'k'"));
                }
                m.release("k", "me").await
            }) as Released
        };
        (release, tries)
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_that_timed_out_is_tried_again() {
        let memory = Arc::new(MemoryStore::new());
        memory
            .try_acquire(AcquireRequest::new("k", "me", None))
            .await
            .unwrap();
        let (release, tries) = flaky_release(&memory, RELEASE_TRIES - 1, StoreErrorKind::Transient);
        release_in_background("k", "memory:", release).await;
        assert_eq!(
            tries.load(std::sync::atomic::Ordering::SeqCst),
            RELEASE_TRIES
        );
        assert!(
            memory.inspect("k").await.unwrap().is_none(),
            "released on the last try"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_is_tried_a_bounded_number_of_times() {
        let memory = Arc::new(MemoryStore::new());
        memory
            .try_acquire(AcquireRequest::new("k", "me", None))
            .await
            .unwrap();
        let (release, tries) = flaky_release(&memory, u32::MAX, StoreErrorKind::Unavailable);
        release_in_background("k", "memory:", release).await;
        assert_eq!(
            tries.load(std::sync::atomic::Ordering::SeqCst),
            RELEASE_TRIES
        );
        assert!(
            memory.inspect("k").await.unwrap().is_some(),
            "left to its ttl"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_refused_for_good_is_not_tried_again() {
        let memory = Arc::new(MemoryStore::new());
        let (release, tries) = flaky_release(&memory, u32::MAX, StoreErrorKind::Rejected);
        release_in_background("k", "memory:", release).await;
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
