//! Every metric the mirror exports, named once, in one Prometheus registry.
//! Layers count into [`Metrics`]; `/metrics` encodes it and `/api/stats` (the
//! dashboard's feed) reads the same numbers, so the two never disagree.
//!
//! Names follow Prometheus conventions: a `crate_mirror_` prefix, base units
//! (`_seconds`, `_bytes`) and `_total` on counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Crates tracked for "most requested"; beyond it the least requested are dropped.
const TOP_CRATES_CAPACITY: usize = 4096;
/// Errors kept for the dashboard.
const RECENT_ERRORS: usize = 20;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub index_lookups: IntCounterVec,
    pub index_negative_hits: IntCounter,
    pub index_store_loads: IntCounter,
    pub index_not_modified: IntCounter,
    pub coalesced_waits: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_circuit_open: IntGauge,
    pub upstream_redirects_refused: IntCounterVec,
    pub crate_downloads: IntCounterVec,
    pub checksum_failures: IntCounter,
    pub served_bytes: IntCounterVec,
    pub fetched_bytes: IntCounterVec,
    pub prefetch_started: IntCounter,
    pub prefetch_useful: IntCounter,
    pub prefetch_wasted: IntCounter,
    pub prefetch_skipped: IntCounterVec,
    pub storage_objects: IntGauge,
    pub storage_bytes: IntGauge,
    pub storage_quota_bytes: IntGauge,
    pub crate_memory_bytes: IntGauge,
    pub index_files: IntGauge,
    activity: Mutex<Activity>,
    started_ms: u64,
}

/// What the dashboard shows beyond counters.
#[derive(Default)]
struct Activity {
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

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    metric
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds the registry. Names and labels are constants, so registration
    /// cannot fail at run time; a mistake here panics in every test.
    pub fn new() -> Self {
        let r = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("crate_mirror_build_info", "Build information; always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| panic!("build_info: {e}"));
        r.register(Box::new(build_info.clone()))
            .unwrap_or_else(|e| panic!("register build_info: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            http_requests: counter_vec(
                &r,
                "crate_mirror_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "crate_mirror_http_request_duration_seconds",
                "Time to answer an HTTP request (to the response head), by route and status.",
                &["route", "status"],
            ),
            index_lookups: counter_vec(
                &r,
                "crate_mirror_index_lookups_total",
                "Index file lookups by result: hit, miss, revalidated, stale.",
                &["result"],
            ),
            index_negative_hits: counter(
                &r,
                "crate_mirror_index_negative_hits_total",
                "Lookups answered from the negative cache (a remembered 404/410/451).",
            ),
            index_store_loads: counter(
                &r,
                "crate_mirror_index_store_loads_total",
                "Index files read from sled into memory.",
            ),
            index_not_modified: counter(
                &r,
                "crate_mirror_index_upstream_not_modified_total",
                "Revalidations the upstream answered with 304.",
            ),
            coalesced_waits: counter_vec(
                &r,
                "crate_mirror_coalesced_waits_total",
                "Requests that joined an upstream fetch already under way, by kind.",
                &["kind"],
            ),
            upstream_requests: counter_vec(
                &r,
                "crate_mirror_upstream_requests_total",
                "Requests to the upstream by kind (index, config, download) and status (code, timeout, error).",
                &["kind", "status"],
            ),
            upstream_duration: histogram_vec(
                &r,
                "crate_mirror_upstream_request_duration_seconds",
                "Upstream response time (to the response head), by kind.",
                &["kind"],
            ),
            upstream_retries: counter_vec(
                &r,
                "crate_mirror_upstream_retries_total",
                "Upstream requests retried after a failure, by kind.",
                &["kind"],
            ),
            upstream_redirects_refused: counter_vec(
                &r,
                "crate_mirror_upstream_redirects_refused_total",
                "Upstream redirects not followed, by reason (host: not an upstream or listed host; too_many: over the limit).",
                &["reason"],
            ),
            upstream_circuit_open: gauge(
                &r,
                "crate_mirror_upstream_circuit_open",
                "1 while the upstream circuit breaker is open (requests fail fast).",
            ),
            crate_downloads: counter_vec(
                &r,
                "crate_mirror_crate_downloads_total",
                "Crate downloads by result: hit, miss, joined, redirect, error.",
                &["result"],
            ),
            checksum_failures: counter(
                &r,
                "crate_mirror_checksum_failures_total",
                "Upstream crate bodies whose sha256 did not match the index cksum.",
            ),
            served_bytes: counter_vec(
                &r,
                "crate_mirror_served_bytes_total",
                "Body bytes sent to clients, by route.",
                &["route"],
            ),
            fetched_bytes: counter_vec(
                &r,
                "crate_mirror_upstream_fetched_bytes_total",
                "Body bytes received from the upstream, by kind.",
                &["kind"],
            ),
            prefetch_started: counter(
                &r,
                "crate_mirror_prefetch_started_total",
                "Index files fetched ahead of clients, from the dependencies of fetched ones.",
            ),
            prefetch_useful: counter(
                &r,
                "crate_mirror_prefetch_useful_total",
                "Prefetched index files that a client then asked for.",
            ),
            prefetch_wasted: counter(
                &r,
                "crate_mirror_prefetch_wasted_total",
                "Prefetched index files that expired before any client asked for them.",
            ),
            prefetch_skipped: counter_vec(
                &r,
                "crate_mirror_prefetch_skipped_total",
                "Prefetches not made, by reason (budget, depth).",
                &["reason"],
            ),
            storage_objects: gauge(&r, "crate_mirror_storage_objects", "Crate files in local storage."),
            storage_bytes: gauge(&r, "crate_mirror_storage_bytes", "Bytes of crate files in local storage."),
            crate_memory_bytes: gauge(
                &r,
                "crate_mirror_crate_memory_bytes",
                "Bytes of hot crate files held in memory.",
            ),
            storage_quota_bytes: gauge(
                &r,
                "crate_mirror_storage_quota_bytes",
                "The local storage quota (0 when unbounded).",
            ),
            index_files: gauge(&r, "crate_mirror_index_files", "Index files stored in sled."),
            registry: r,
            activity: Mutex::new(Activity::default()),
            started_ms: now_ms(),
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Counts one upstream exchange and remembers whether the upstream answered.
    pub fn upstream_exchange(&self, kind: &str, status: &str, seconds: f64, healthy: bool) {
        self.upstream_requests
            .with_label_values(&[kind, status])
            .inc();
        self.upstream_duration
            .with_label_values(&[kind])
            .observe(seconds);
        let mut activity = self.activity();
        if healthy {
            activity.upstream_last_success_ms = now_ms();
        } else {
            activity.upstream_last_failure_ms = now_ms();
        }
    }

    /// Counts a request for a crate (index file or download) for "most requested".
    pub fn crate_requested(&self, name: &str) {
        let mut activity = self.activity();
        if let Some(count) = activity.crate_requests.get_mut(name) {
            *count += 1;
            return;
        }
        if activity.crate_requests.len() >= TOP_CRATES_CAPACITY {
            // Drop the least requested half: bounded memory, the head survives.
            let mut counts: Vec<u64> = activity.crate_requests.values().copied().collect();
            counts.sort_unstable();
            let cut = counts[counts.len() / 2];
            activity.crate_requests.retain(|_, c| *c > cut);
        }
        activity.crate_requests.insert(name.to_string(), 1);
    }

    pub fn record_error(&self, what: String, status: String) {
        let mut activity = self.activity();
        if activity.recent_errors.len() == RECENT_ERRORS {
            activity.recent_errors.pop_front();
        }
        activity.recent_errors.push_back(ErrorRecord {
            time_ms: now_ms(),
            what,
            status,
        });
    }

    fn sum(counter: &IntCounterVec, label: usize, value: Option<&str>) -> u64 {
        let mut total = 0;
        for family in counter.collect() {
            for metric in family.get_metric() {
                let matches = value.is_none_or(|v| {
                    metric
                        .get_label()
                        .get(label)
                        .is_some_and(|l| l.value() == v)
                });
                if matches {
                    total += metric.get_counter().get_value() as u64;
                }
            }
        }
        total
    }

    fn histogram_totals(histogram: &HistogramVec) -> (f64, u64) {
        let (mut sum, mut count) = (0.0, 0);
        for family in histogram.collect() {
            for metric in family.get_metric() {
                sum += metric.get_histogram().get_sample_sum();
                count += metric.get_histogram().get_sample_count();
            }
        }
        (sum, count)
    }

    /// The dashboard's figures.
    pub fn snapshot(&self) -> serde_json::Value {
        let lookups = |result| Self::sum(&self.index_lookups, 0, Some(result));
        let downloads = |result| Self::sum(&self.crate_downloads, 0, Some(result));
        let index_hits = lookups("hit") + lookups("stale");
        let index_total = index_hits + lookups("miss") + lookups("revalidated");
        let crate_hits = downloads("hit") + downloads("redirect");
        let crate_total = crate_hits + downloads("miss") + downloads("joined");
        let ratio = |hits: u64, total: u64| {
            if total == 0 {
                serde_json::Value::Null
            } else {
                serde_json::json!(hits as f64 / total as f64)
            }
        };
        let http_errors: u64 = ["500", "502", "503", "504"]
            .iter()
            .map(|s| Self::sum(&self.http_requests, 2, Some(s)))
            .sum();
        let upstream_total = Self::sum(&self.upstream_requests, 1, None);
        let upstream_failures: u64 = ["timeout", "error", "500", "502", "503", "504", "429"]
            .iter()
            .map(|s| Self::sum(&self.upstream_requests, 1, Some(s)))
            .sum();
        let (latency_sum, latency_count) = Self::histogram_totals(&self.upstream_duration);
        // What registry clients received (not the dashboard or probes).
        let client_bytes: u64 = ["index", "config", "download", "git"]
            .iter()
            .map(|route| Self::sum(&self.served_bytes, 0, Some(route)))
            .sum();
        let activity = self.activity();
        let mut top: Vec<(&String, &u64)> = activity.crate_requests.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<serde_json::Value> = top
            .into_iter()
            .take(10)
            .map(|(name, count)| serde_json::json!({ "name": name, "requests": count }))
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": now_ms().saturating_sub(self.started_ms) / 1000,
            "requests": {
                "total": Self::sum(&self.http_requests, 0, None),
                "errors": http_errors,
            },
            "hit_ratio": ratio(index_hits + crate_hits, index_total + crate_total),
            "index": {
                "hits": index_hits,
                "memory_hits": lookups("hit"),
                "misses": lookups("miss"),
                "revalidated": lookups("revalidated"),
                "stale_served": lookups("stale"),
                "store_loads": self.index_store_loads.get(),
                "negative_hits": self.index_negative_hits.get(),
                "upstream_fetches": Self::sum(&self.upstream_requests, 0, Some("index")),
                "upstream_not_modified": self.index_not_modified.get(),
                "coalesced_waits": Self::sum(&self.coalesced_waits, 0, Some("index")),
                "hit_ratio": ratio(index_hits, index_total),
            },
            "crates": {
                "hits": crate_hits,
                "misses": downloads("miss"),
                "joined": downloads("joined"),
                "failures": downloads("error"),
                "checksum_failures": self.checksum_failures.get(),
                "hit_ratio": ratio(crate_hits, crate_total),
            },
            "bytes": {
                "served": client_bytes,
                "fetched": Self::sum(&self.fetched_bytes, 0, None),
            },
            "upstream": {
                "requests": upstream_total,
                "failures": upstream_failures,
                "healthy": activity.upstream_last_success_ms >= activity.upstream_last_failure_ms,
                "last_success_ms": activity.upstream_last_success_ms,
                "last_failure_ms": activity.upstream_last_failure_ms,
                "latency_seconds_sum": latency_sum,
                "latency_count": latency_count,
            },
            "prefetch": {
                "started": self.prefetch_started.get(),
                "useful": self.prefetch_useful.get(),
                "wasted": self.prefetch_wasted.get(),
                "useful_ratio": ratio(self.prefetch_useful.get(), self.prefetch_started.get()),
            },
            "top_crates": top,
            "recent_errors": activity.recent_errors.iter().rev().collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_build_info() {
        let metrics = Metrics::new();
        metrics.index_lookups.with_label_values(&["hit"]).inc_by(3);
        metrics.upstream_exchange("index", "200", 0.01, true);
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(text.contains("crate_mirror_build_info{version=\""));
        assert!(text.contains("crate_mirror_index_lookups_total{result=\"hit\"} 3"));
        assert!(text.contains("crate_mirror_upstream_request_duration_seconds_bucket"));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot["index"]["hits"], 3);
        assert_eq!(snapshot["upstream"]["healthy"], true);
    }

    #[test]
    fn most_requested_crates_stay_bounded() {
        let metrics = Metrics::new();
        for _ in 0..5 {
            metrics.crate_requested("popular");
        }
        for n in 0..(TOP_CRATES_CAPACITY * 2) {
            metrics.crate_requested(&format!("rare{n}"));
        }
        assert!(metrics.activity().crate_requests.len() <= TOP_CRATES_CAPACITY);
        assert_eq!(metrics.snapshot()["top_crates"][0]["name"], "popular");
    }

    #[test]
    fn recent_errors_keep_the_last_ones() {
        let metrics = Metrics::new();
        for n in 0..30 {
            metrics.record_error(format!("GET /{n}"), "502".into());
        }
        let snapshot = metrics.snapshot();
        let errors = snapshot["recent_errors"].as_array().unwrap();
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0]["what"], "GET /29");
    }
}
