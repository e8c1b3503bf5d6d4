//! Dependency-aware prefetch: when an index file arrives from the upstream, the
//! index files of its newest versions' dependencies are fetched in the
//! background, before cargo asks for them — cargo walks the graph one round
//! trip at a time, the mirror need not.
//!
//! Bounded three ways so that it never competes with clients: its own small
//! concurrency limit (below the upstream's), a depth limit counted from the file
//! a client asked for, and a per-minute budget of upstream requests. A client
//! asking for a file being prefetched joins that fetch (the index cache's
//! single flight), so no work is done twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use crate::index::cache::{FetchedIndex, IndexCache};
use crate::index::entry::dependencies_of_newest;
use crate::index::path::CrateName;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct PrefetchPolicy {
    /// Dependency steps away from a client's request that are still prefetched.
    pub depth: u32,
    pub concurrency: usize,
    pub budget_per_minute: u32,
    pub dev_dependencies: bool,
}

pub struct Prefetcher {
    index: IndexCache,
    policy: PrefetchPolicy,
    permits: Arc<Semaphore>,
    /// Start of the current budget window and what it has spent.
    budget: Mutex<(Instant, u32)>,
    /// Names scheduled and not yet done, so one name is not queued twice.
    scheduled: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
}

impl Prefetcher {
    pub fn new(index: IndexCache, policy: PrefetchPolicy, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            index,
            permits: Arc::new(Semaphore::new(policy.concurrency.max(1))),
            policy,
            budget: Mutex::new((Instant::now(), 0)),
            scheduled: Mutex::new(HashSet::new()),
            metrics,
        })
    }

    /// Takes one request from this minute's budget.
    fn spend_budget(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if budget.0.elapsed() >= Duration::from_secs(60) {
            *budget = (Instant::now(), 0);
        }
        if budget.1 >= self.policy.budget_per_minute {
            return false;
        }
        budget.1 += 1;
        true
    }

    /// Consumes fetch announcements until the cache goes away.
    pub async fn run(self: Arc<Self>, mut fetched: mpsc::UnboundedReceiver<FetchedIndex>) {
        while let Some(event) = fetched.recv().await {
            if event.depth >= self.policy.depth {
                self.metrics
                    .prefetch_skipped
                    .with_label_values(&["depth"])
                    .inc();
                continue;
            }
            for dependency in dependencies_of_newest(&event.body, self.policy.dev_dependencies) {
                // Names come from the upstream's data: validated like a client's.
                let Ok(name) = CrateName::parse(&dependency) else {
                    continue;
                };
                if self.index.is_fresh(&name).await {
                    continue;
                }
                let newly_scheduled = self
                    .scheduled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.key().to_string());
                if !newly_scheduled {
                    continue;
                }
                if !self.spend_budget() {
                    self.metrics
                        .prefetch_skipped
                        .with_label_values(&["budget"])
                        .inc();
                    self.finished(&name);
                    continue;
                }
                let this = self.clone();
                let depth = event.depth + 1;
                tokio::spawn(async move {
                    if let Ok(_permit) = this.permits.clone().acquire_owned().await {
                        if let Err(err) = this.index.prefetch(&name, depth).await {
                            tracing::debug!(krate = name.key(), error = %err, "prefetch failed");
                        }
                    }
                    this.finished(&name);
                });
            }
        }
    }

    fn finished(&self, name: &CrateName) {
        self.scheduled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name.key());
    }
}
