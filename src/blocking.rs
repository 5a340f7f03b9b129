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
    match handle.await {
        Ok(out) => out,
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
