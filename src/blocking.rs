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
