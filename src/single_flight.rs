//! One in-flight computation per key, however many callers ask at once.
//!
//! The first caller's future is spawned as its own task, so it runs to the end
//! even when every caller goes away (a client that disconnects must not cancel
//! the fetch that fills the cache); later callers await the same result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, Shared};

/// The shared computation panicked or was cancelled by runtime shutdown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared fetch was aborted")]
pub struct FlightAborted;

type Flight<V> = Shared<BoxFuture<'static, Result<V, FlightAborted>>>;

pub struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Whether a caller started the work or joined work already under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Joined,
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `make()` unless a computation for `key` is under way, and returns its result.
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> (Result<V, FlightAborted>, Role)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (flight, role) = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(flight) => (flight.clone(), Role::Joined),
                None => {
                    let work = make();
                    let registry = self.flights.clone();
                    let task_key = key.clone();
                    let handle = tokio::spawn(async move {
                        let value = work.await;
                        // Removed by the task itself, after the result exists, so a
                        // leader that went away cannot leave the key stuck.
                        registry
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&task_key);
                        value
                    });
                    let flight = async move { handle.await.map_err(|_| FlightAborted) }
                        .boxed()
                        .shared();
                    flights.insert(key, flight.clone());
                    (flight, Role::Leader)
                }
            }
        };
        (flight.await, role)
    }

    /// Number of keys with work under way.
    pub fn in_flight(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let flights = flights.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }));
        }
        let mut leaders = 0;
        for task in tasks {
            let (value, role) = task.await.unwrap();
            assert_eq!(value.unwrap(), 1);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn work_finishes_when_the_caller_goes_away() {
        let flights: Arc<SingleFlight<u8, ()>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let marker = done.clone();
        let caller = flights.run(1, || async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            marker.fetch_add(1, Ordering::SeqCst);
        });
        // Poll the caller once so the work starts, then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(5), caller).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }
}
