//! A cancel-safe [`Store::try_acquire`](crate::Store::try_acquire) for stores whose request
//! must not be abandoned half-way (SQLite, PostgreSQL, MySQL, DynamoDB).
//!
//! A SQL statement whose future is dropped may still run and commit on the server, and a
//! transaction cut short leaves its connection in doubt. So the request runs in a task of its
//! own, to completion, and the store's future only waits for the answer. The task keeps a lock
//! it took only once the caller has the answer in hand: a caller that went away first —
//! before the answer came, or after it was sent but before it was polled (a `select!` or
//! `timeout` branch winning in the same poll) — drops the hand-over token with the unread
//! answer, and the task gives the lock back itself.

use std::future::Future;

use tokio::sync::oneshot;

use crate::store::{StoreError, StoreErrorKind};

/// An answer on its way to the caller, with the token the caller sends back once it has it.
type Delivery<T, E> = (Result<T, E>, Option<oneshot::Sender<()>>);

/// Runs `request` in a task of its own and returns its answer (`Err` only when the task
/// ended without one: the runtime is shutting down). If this future is dropped at any point
/// before it returns, a lock `request` took is given back with `release`, run in that task.
/// A release that fails with a retryable error (a timeout, a lost connection) is tried again,
/// up to [`RELEASE_TRIES`] times in all with a growing pause; a failure that remains is
/// logged at `warn` naming `key` and `store`, and the lock then ends with its ttl. A lock
/// this future returned is never released by it.
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
) -> Result<Result<crate::store::Acquire, StoreError>, StoreError>
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
) -> Result<Result<T, StoreError>, StoreError>
where
    T: Send + 'static,
    Req: Future<Output = Result<T, StoreError>> + Send + 'static,
    Took: FnOnce(&T) -> bool + Send + 'static,
    Rel: Fn() -> RelFut + Send + 'static,
    RelFut: Future<Output = Result<bool, StoreError>> + Send,
{
    let (deliver, delivered) = oneshot::channel::<Delivery<T, StoreError>>();
    let (key, store) = (key.to_owned(), store.to_owned());
    tokio::spawn(async move {
        let answer = request.await;
        if !matches!(&answer, Ok(t) if took(t)) {
            let _ = deliver.send((answer, None));
            return;
        }
        let (kept, is_kept) = oneshot::channel();
        // If the caller is gone, or goes before it reads the answer, the token is dropped
        // unsent with it.
        let _ = deliver.send((answer, Some(kept)));
        if is_kept.await.is_ok() {
            return;
        }
        release_in_background(&key, &store, release).await;
    });
    // No await between reading the answer and keeping it: the caller cannot be dropped
    // in between.
    let (answer, kept) = delivered.await.map_err(|_| {
        StoreError::new(
            StoreErrorKind::Transient,
            "the acquire task stopped before answering (is the runtime shutting down?)",
        )
    })?;
    if let Some(kept) = kept {
        let _ = kept.send(());
    }
    Ok(answer)
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

    use crate::store::{Acquire, AcquireRequest, Store};
    use crate::stores::memory::MemoryStore;

    use super::*;

    /// What the test controls of a request: when it may run, and word that it answered.
    struct Gate {
        open: Semaphore,
        answered: Notify,
    }

    fn gate() -> Arc<Gate> {
        Arc::new(Gate {
            open: Semaphore::new(0),
            answered: Notify::new(),
        })
    }

    /// An acquire of `k` on `memory` through the helper, whose request waits for `gate` to
    /// open and signals once its answer is on its way.
    fn gated(
        memory: &Arc<MemoryStore>,
        gate: &Arc<Gate>,
    ) -> impl Future<Output = Result<Result<Acquire, StoreError>, StoreError>> {
        let (m, g) = (memory.clone(), gate.clone());
        let request = async move {
            g.open
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
            let answer = m.try_acquire(AcquireRequest::new("k", "me", None)).await;
            // On one thread the test runs again only after the task sent the answer.
            g.answered.notify_one();
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
    async fn an_answer_sent_but_never_polled_is_released() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        let mut acquire = Box::pin(gated(&memory, &gate));
        assert!((&mut acquire).now_or_never().is_none(), "waits at the gate");
        gate.open.add_permits(1);
        gate.answered.notified().await;
        assert!(
            memory.inspect("k").await.unwrap().is_some(),
            "the request took it"
        );
        // The answer is in the channel; the caller is dropped without reading it.
        drop(acquire);
        until_free(&memory).await;
    }

    #[tokio::test]
    async fn a_request_answering_after_its_caller_left_is_released() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        let mut acquire = Box::pin(gated(&memory, &gate));
        assert!((&mut acquire).now_or_never().is_none(), "waits at the gate");
        drop(acquire);
        gate.open.add_permits(1);
        gate.answered.notified().await;
        until_free(&memory).await;
    }

    #[tokio::test]
    async fn a_returned_lock_stays_held() {
        let memory = Arc::new(MemoryStore::new());
        let gate = gate();
        gate.open.add_permits(1);
        let answer = gated(&memory, &gate).await.unwrap().unwrap();
        assert!(matches!(answer, Acquire::Acquired(_)));
        // The task ends once the answer was taken: let it run to its end.
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
