//! What the dashboard shows beyond counters: the most requested crates, the
//! last refused or failed requests and when the upstream last answered or
//! failed. Kept in memory only (not exported to Prometheus: names and paths
//! would be unbounded label values).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{now_ms, Route};

/// Crates tracked for "most requested"; beyond it the least requested are dropped.
const TOP_CRATES_CAPACITY: usize = 4096;
/// Errors kept for the dashboard, of each kind (so a run of missing crates
/// never pushes the last failures out).
const RECENT_ERRORS: usize = 50;
/// Longest path kept: paths are whatever a client sent, up to the request
/// size limit; the start of one says what it was.
const MAX_PATH_CHARS: usize = 160;
/// Longest method kept (a client may send any token as a method).
const MAX_METHOD_CHARS: usize = 16;
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
    missing: VecDeque<ErrorRecord>,
    failures: VecDeque<ErrorRecord>,
    upstream_last_success_ms: u64,
    upstream_last_failure_ms: u64,
}

/// Which list a refused or failed request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A crate, version or index file that does not exist (404 or 410 on
    /// an index or download route): an answer, not a fault of the mirror.
    Missing,
    /// Every other 4xx (refused tokens, bad requests, unknown paths) and 5xx.
    Failure,
}

impl ErrorKind {
    /// The kind of an answer with `status` on `route`; `None` below 400.
    pub fn of(route: Route, status: u16) -> Option<Self> {
        match status {
            404 | 410 if matches!(route, Route::Index | Route::Download) => {
                Some(ErrorKind::Missing)
            }
            400.. => Some(ErrorKind::Failure),
            _ => None,
        }
    }
}

/// One refused or failed request, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorRecord {
    pub time_ms: u64,
    pub method: String,
    /// The raw path (no query), cut to `MAX_PATH_CHARS` with a trailing `…`.
    pub path: String,
    pub status: u16,
}

/// `text` cut to `max` characters, with `…` when it was longer.
fn capped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
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

    /// Remembers a refused or failed request for the dashboard, in the
    /// list of its kind.
    pub fn record_error(&self, kind: ErrorKind, method: &str, path: &str, status: u16) {
        let record = ErrorRecord {
            time_ms: now_ms(),
            method: capped(method, MAX_METHOD_CHARS),
            path: capped(path, MAX_PATH_CHARS),
            status,
        };
        let mut state = self.state();
        let list = match kind {
            ErrorKind::Missing => &mut state.missing,
            ErrorKind::Failure => &mut state.failures,
        };
        if list.len() == RECENT_ERRORS {
            list.pop_front();
        }
        list.push_back(record);
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

    /// The kept errors of `kind`, newest first.
    pub fn recent_errors(&self, kind: ErrorKind) -> Vec<ErrorRecord> {
        let state = self.state();
        let list = match kind {
            ErrorKind::Missing => &state.missing,
            ErrorKind::Failure => &state.failures,
        };
        list.iter().rev().cloned().collect()
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
    fn recent_errors_keep_the_last_ones_of_each_kind() {
        let activity = Activity::default();
        for n in 0..(RECENT_ERRORS + 10) {
            activity.record_error(ErrorKind::Failure, "GET", &format!("/{n}"), 502);
        }
        activity.record_error(ErrorKind::Missing, "GET", "/index/3/a/abc", 404);
        let errors = activity.recent_errors(ErrorKind::Failure);
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].path, format!("/{}", RECENT_ERRORS + 9));
        assert_eq!(errors[RECENT_ERRORS - 1].path, "/10");
        assert_eq!(errors[0].status, 502);
        // Missing crates have their own list: the failures did not push it out.
        let missing = activity.recent_errors(ErrorKind::Missing);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].path, "/index/3/a/abc");
    }

    #[test]
    fn paths_and_methods_are_capped() {
        let activity = Activity::default();
        let long = format!("/index/{}", "é".repeat(1000));
        activity.record_error(ErrorKind::Failure, &"X".repeat(100), &long, 400);
        let record = &activity.recent_errors(ErrorKind::Failure)[0];
        assert_eq!(record.path.chars().count(), MAX_PATH_CHARS + 1);
        assert!(record.path.starts_with("/index/é") && record.path.ends_with('…'));
        assert_eq!(record.method.chars().count(), MAX_METHOD_CHARS + 1);
        assert_eq!(capped("/short", 10), "/short");
    }

    #[test]
    fn missing_crates_are_told_apart_from_failures() {
        assert_eq!(ErrorKind::of(Route::Index, 200), None);
        assert_eq!(ErrorKind::of(Route::Index, 304), None);
        assert_eq!(ErrorKind::of(Route::Index, 404), Some(ErrorKind::Missing));
        assert_eq!(
            ErrorKind::of(Route::Download, 410),
            Some(ErrorKind::Missing)
        );
        // An unknown path is not a missing crate; refusals and faults are failures.
        assert_eq!(ErrorKind::of(Route::Other, 404), Some(ErrorKind::Failure));
        assert_eq!(ErrorKind::of(Route::Index, 401), Some(ErrorKind::Failure));
        assert_eq!(
            ErrorKind::of(Route::Download, 502),
            Some(ErrorKind::Failure)
        );
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
