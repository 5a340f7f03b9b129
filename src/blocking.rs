//! Blocking work (file system calls, redb transactions, bcrypt) off the async workers.
//!
//! A leaf every layer may call: [`off_the_workers`] runs work on the blocking pool and marks the
//! thread, so [`assert_off_the_workers`] (called by the index and the store before each
//! transaction or file operation) can catch, in debug builds and so in every test, blocking work
//! that reached an async worker (ARCHITECTURE.md, invariant 11). `clippy.toml` bans a bare
//! `spawn_blocking` for that reason.

thread_local! {
    /// Set while a thread runs work handed to [`off_the_workers`].
    static OFF_THE_WORKERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs blocking work (file system calls, redb transactions) on the blocking pool, marked so
/// [`assert_off_the_workers`] can tell. A panic in `work` is the caller's panic.
pub(crate) async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let marked = move || marked_off_the_workers(work);
    #[allow(
        clippy::disallowed_methods,
        reason = "the one bare spawn_blocking: it marks the thread"
    )]
    let handle = tokio::task::spawn_blocking(marked);
    joined(handle.await).await
}

/// The outcome of blocking work: its value, or its panic resumed. Work that never ran because
/// the runtime is shutting down (a job still queued at a graceful stop, such as eviction's file
/// deletions) was cancelled, which is no panic: the task waiting for it is being dropped with the
/// runtime, and waits for that. It used to panic ("`JoinError` reason is not a panic"), a
/// backtrace in the log of every stop during an eviction.
pub(crate) async fn joined<T>(outcome: Result<T, tokio::task::JoinError>) -> T {
    match outcome {
        Ok(out) => out,
        Err(e) if e.is_cancelled() => std::future::pending().await,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `work` on this thread marked as off the workers: for a blocking-pool thread started
/// otherwise than by [`off_the_workers`] (a fill's writer, joined through its handle).
pub(crate) fn marked_off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    OFF_THE_WORKERS.set(true);
    let out = work();
    OFF_THE_WORKERS.set(false);
    out
}

/// In debug builds (so in every test), blocking work on an async worker thread is a panic: the
/// index and the store call this before each transaction or file operation. Outside a runtime
/// (start-up checks, unit tests) anything goes.
pub(crate) fn assert_off_the_workers() {
    debug_assert!(
        tokio::runtime::Handle::try_current().is_err() || OFF_THE_WORKERS.get(),
        "blocking index or file work on an async worker thread"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A job cancelled before it ran (as the runtime's shutdown cancels those still queued)
    /// leaves its caller waiting to be dropped, not panicking.
    #[test]
    fn work_cancelled_before_it_ran_is_no_panic() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (started, is_started) = tokio::sync::oneshot::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            #[allow(clippy::disallowed_methods, reason = "the test's own blocking jobs")]
            let busy = tokio::task::spawn_blocking(move || {
                started.send(()).unwrap();
                released.recv().unwrap();
            });
            is_started.await.unwrap();
            // The one blocking thread is taken: this job waits in the queue, and is cancelled.
            #[allow(clippy::disallowed_methods, reason = "the test's own blocking jobs")]
            let queued = tokio::task::spawn_blocking(|| 1);
            queued.abort();
            release.send(()).unwrap();
            busy.await.unwrap();
            let outcome = queued.await;
            assert!(outcome.as_ref().is_err_and(|e| e.is_cancelled()));
            let waited = tokio::time::timeout(Duration::from_millis(50), joined(outcome)).await;
            assert!(waited.is_err(), "a cancelled job's caller keeps waiting");
        });
    }
}
