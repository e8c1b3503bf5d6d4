//! What the dashboard shows beyond counters: the most requested crates, the
//! last server errors and when the upstream last answered or failed. Kept in
//! memory only (not exported to Prometheus: names and error texts would be
//! unbounded label values).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::now_ms;

/// Crates tracked for "most requested"; beyond it the least requested are dropped.
const TOP_CRATES_CAPACITY: usize = 4096;
/// Errors kept for the dashboard.
const RECENT_ERRORS: usize = 20;
/// Crates listed as "most requested".
const TOP_CRATES_SHOWN: usize = 10;

/// The dashboard's activity state, behind one lock.
#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    crate_requests: HashMap<String, u64>,
    recent_errors: VecDeque<ErrorRecord>,
    upstream_last_success_ms: u64,
    upstream_last_failure_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorRecord {
    pub time_ms: u64,
    pub what: String,
    pub status: String,
}

/// When the upstream last answered and last failed (ms since the epoch, 0 for never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHealth {
    pub last_success_ms: u64,
    pub last_failure_ms: u64,
}

impl UpstreamHealth {
    /// Healthy unless the last exchange failed (so also before any exchange).
    pub fn healthy(&self) -> bool {
        self.last_success_ms >= self.last_failure_ms
    }
}

impl Activity {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did: every
        // update is a single assignment or push.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers whether the upstream answered (`healthy`) or failed, now.
    pub fn upstream_answered(&self, healthy: bool) {
        let mut state = self.state();
        if healthy {
            state.upstream_last_success_ms = now_ms();
        } else {
            state.upstream_last_failure_ms = now_ms();
        }
    }

    /// Counts a request for a crate (index file or download) for "most requested".
    pub fn crate_requested(&self, name: &str) {
        let mut state = self.state();
        if let Some(count) = state.crate_requests.get_mut(name) {
            *count += 1;
            return;
        }
        if state.crate_requests.len() >= TOP_CRATES_CAPACITY {
            // Drop the least requested half: bounded memory, the head survives.
            let mut counts: Vec<u64> = state.crate_requests.values().copied().collect();
            counts.sort_unstable();
            let cut = counts[counts.len() / 2];
            state.crate_requests.retain(|_, c| *c > cut);
        }
        state.crate_requests.insert(name.to_string(), 1);
    }

    /// Remembers a server error (`what`: method and path) for the dashboard.
    pub fn record_error(&self, what: String, status: String) {
        let mut state = self.state();
        if state.recent_errors.len() == RECENT_ERRORS {
            state.recent_errors.pop_front();
        }
        state.recent_errors.push_back(ErrorRecord {
            time_ms: now_ms(),
            what,
            status,
        });
    }

    pub fn upstream_health(&self) -> UpstreamHealth {
        let state = self.state();
        UpstreamHealth {
            last_success_ms: state.upstream_last_success_ms,
            last_failure_ms: state.upstream_last_failure_ms,
        }
    }

    /// The most requested crates with their counts, most first (ties by name).
    pub fn top_crates(&self) -> Vec<(String, u64)> {
        let state = self.state();
        let mut top: Vec<(&String, &u64)> = state.crate_requests.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        top.into_iter()
            .take(TOP_CRATES_SHOWN)
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    }

    /// The kept errors, newest first.
    pub fn recent_errors(&self) -> Vec<ErrorRecord> {
        self.state().recent_errors.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_requested_crates_stay_bounded() {
        let activity = Activity::default();
        for _ in 0..5 {
            activity.crate_requested("popular");
        }
        activity.crate_requested("second");
        activity.crate_requested("second");
        for n in 0..(TOP_CRATES_CAPACITY * 2) {
            activity.crate_requested(&format!("rare{n}"));
        }
        assert!(activity.state().crate_requests.len() <= TOP_CRATES_CAPACITY);
        let top = activity.top_crates();
        assert_eq!(top[0], ("popular".to_string(), 5));
        assert_eq!(top[1], ("second".to_string(), 2));
    }

    #[test]
    fn top_crates_are_the_most_requested_few() {
        let activity = Activity::default();
        for n in 0..(TOP_CRATES_SHOWN + 5) {
            for _ in 0..=n {
                activity.crate_requested(&format!("c{n:02}"));
            }
        }
        activity.crate_requested("c00");
        let top = activity.top_crates();
        assert_eq!(top.len(), TOP_CRATES_SHOWN);
        let last = TOP_CRATES_SHOWN + 4;
        assert_eq!(top[0], (format!("c{last:02}"), last as u64 + 1));
        // Ties are listed by name.
        let ties = Activity::default();
        for name in ["b", "a", "b", "a"] {
            ties.crate_requested(name);
        }
        assert_eq!(
            ties.top_crates(),
            vec![("a".to_string(), 2), ("b".to_string(), 2)]
        );
    }

    #[test]
    fn recent_errors_keep_the_last_ones() {
        let activity = Activity::default();
        for n in 0..30 {
            activity.record_error(format!("GET /{n}"), "502".into());
        }
        let errors = activity.recent_errors();
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].what, "GET /29");
        assert_eq!(errors[RECENT_ERRORS - 1].what, "GET /10");
    }

    #[test]
    fn upstream_health_follows_the_last_exchange() {
        let activity = Activity::default();
        assert!(activity.upstream_health().healthy());
        activity.upstream_answered(false);
        let failed = activity.upstream_health();
        assert!(failed.last_failure_ms > 0);
        assert!(!failed.healthy());
        activity.upstream_answered(true);
        assert!(activity.upstream_health().healthy());
    }
}
