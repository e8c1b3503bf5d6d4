//! The background tasks of a running mirror (the upstream config.json
//! learner, storage eviction, the prefetcher, the git index rebuilds), owned
//! by `serve` as mini-redis's server owns its connections: each task is given
//! the stop token and returns soon after it is cancelled, and `stop` waits for
//! them (bounded), aborts any that did not stop in time and logs each failure.
//! Only then does `serve` flush the database, so that nothing writes to the
//! data dir after the flush or after the process exits.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The running background tasks and the token that stops them.
pub struct Background {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// When the stop was asked for (the first `cancel`).
    stopping_since: Option<Instant>,
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl Background {
    pub fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stopping_since: None,
        }
    }

    /// The token a task watches: cancelled when the mirror stops.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` on this thread's runtime (as `actix_web::rt::spawn` does:
    /// the tasks need not be `Send`) until it ends or `stop` gives up on it.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + 'static) {
        let handle = self.tasks.spawn_local(task);
        self.names.insert(handle.id(), name);
    }

    /// Tells every task to stop; the bound of `stop` counts from the first call.
    pub fn cancel(&mut self) {
        self.stopping_since.get_or_insert_with(Instant::now);
        self.stop.cancel();
    }

    /// Stops the tasks: cancels them, waits until `within` after the first
    /// `cancel` for them to return, then aborts the rest. Logs every task that
    /// panicked or had to be aborted; returns how many did.
    pub async fn stop(mut self, within: Duration) -> usize {
        self.cancel();
        let deadline = self.stopping_since.unwrap_or_else(Instant::now) + within;
        let mut failed = 0;
        loop {
            let joined =
                match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                    Ok(Some(joined)) => joined,
                    Ok(None) => break,
                    Err(_) => {
                        for name in self.names.values() {
                            tracing::warn!(
                                task = name,
                                "background task did not stop within the shutdown timeout; aborted"
                            );
                            failed += 1;
                        }
                        // Aborted tasks end at their next await; a blocking call
                        // one of them waits for runs to its end on the pool.
                        self.tasks.shutdown().await;
                        break;
                    }
                };
            let (id, outcome) = match joined {
                Ok((id, ())) => (id, None),
                Err(err) => (err.id(), Some(err)),
            };
            let name = self.names.remove(&id).unwrap_or("unknown");
            if let Some(err) = outcome {
                failed += 1;
                if err.is_panic() {
                    tracing::error!(task = name, "background task panicked");
                } else {
                    tracing::error!(task = name, error = %err, "background task failed");
                }
            }
        }
        failed
    }
}

/// Resolves when the process is asked to stop (SIGTERM, SIGINT or SIGQUIT:
/// the signals on which the HTTP server stops too). Never, if none of them
/// can be listened for.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut listening = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::quit(),
    ] {
        match signal(kind) {
            Ok(stream) => listening.push(stream),
            Err(err) => tracing::warn!(error = %err, "cannot listen for a stop signal"),
        }
    }
    if listening.is_empty() {
        return std::future::pending().await;
    }
    let received = listening.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(received).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn stop_waits_for_tasks_aborts_laggards_and_counts_failures() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut background = Background::new();
                let finished = std::rc::Rc::new(std::cell::Cell::new(false));
                let token = background.token();
                let seen = finished.clone();
                background.spawn("obedient", async move {
                    token.cancelled().await;
                    // Still waited for after the cancel.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    seen.set(true);
                });
                background.spawn("deaf", std::future::pending());
                background.spawn("broken", async { panic!("on purpose") });
                let failed = background.stop(Duration::from_millis(500)).await;
                assert!(finished.get(), "a task was not waited for");
                assert_eq!(failed, 2, "the deaf and the broken task");
            })
            .await;
    }
}
