//! Blocking start and stop work (the data dir, opening sled and counting its
//! trees, flushing it) run on tokio's blocking pool, never on an async thread.

/// Runs `work` on the blocking pool; a panic there is passed on as it would
/// be inline.
pub(crate) async fn off_async<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("blocking work was cancelled: {err}"),
        },
    }
}

/// Gives the memory this thread freed back to the OS now. mimalloc returns a
/// thread's freed pages only when that thread allocates again after a delay,
/// so a blocking-pool thread that handled a burst of index bodies and then
/// went idle kept them resident: called at the end of each index job (a
/// fetched body prepared, a sled load or save, a decompression), never on an
/// in-memory hit, where its cost is small against the job's; and on each HTTP
/// worker a second after client connections closed (`http::connection`).
pub(crate) fn release_thread_memory() {
    #[cfg(feature = "mimalloc")]
    {
        // Links mimalloc into every binary that has this crate (the tests
        // too), not only into the one that makes it the global allocator.
        use mimalloc as _;
        extern "C" {
            fn mi_collect(force: bool);
        }
        // SAFETY: mimalloc's documented API; it only frees this thread's
        // unused pages.
        unsafe { mi_collect(true) }
    }
}
