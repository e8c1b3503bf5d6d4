//! The dashboard's figures (`/api/stats`) read from the metrics: sums over
//! label values, ratios, and the activity state.

use prometheus::core::Collector;
use prometheus::{HistogramVec, IntCounterVec};

use super::{now_ms, ErrorKind, Metrics, Route};

/// The sum of a counter vector's series whose `label` is `value` (all series
/// when `value` is `None`). By name: the encoder sorts labels by name, so a
/// position would shift when a label is added.
fn sum(counter: &IntCounterVec, label: &str, value: Option<&str>) -> u64 {
    let mut total = 0;
    for family in counter.collect() {
        for metric in family.get_metric() {
            let matches = value.is_none_or(|v| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == label && l.value() == v)
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

impl Metrics {
    /// The dashboard's figures.
    pub fn snapshot(&self) -> serde_json::Value {
        let (http, index, upstream, crates, prefetch) = (
            &self.http,
            &self.index,
            &self.upstream,
            &self.crates,
            &self.prefetch,
        );
        let lookups = |result| sum(&index.lookups, "result", Some(result));
        let downloads = |result| sum(&crates.downloads, "result", Some(result));
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
            .map(|s| sum(&http.requests, "status", Some(s)))
            .sum();
        let upstream_total = sum(&upstream.requests, "status", None);
        let upstream_failures: u64 = ["timeout", "error", "500", "502", "503", "504", "429"]
            .iter()
            .map(|s| sum(&upstream.requests, "status", Some(s)))
            .sum();
        let (latency_sum, latency_count) = histogram_totals(&upstream.duration);
        // What registry clients asked for and received: not the dashboard,
        // its polling, the probes or scrapes.
        let client_requests: u64 = Route::registry_labels()
            .map(|route| sum(&http.requests, "route", Some(route)))
            .sum();
        let client_bytes: u64 = Route::registry_labels()
            .map(|route| sum(&http.served_bytes, "route", Some(route)))
            .sum();
        let fetched_bytes = sum(&upstream.fetched_bytes, "kind", None);
        // Upstream bytes avoided: what clients' answers would have cost from
        // the upstream beyond what the mirror itself fetched from it for any
        // reason (clients' misses, prefetch, refreshes). Both in the bytes
        // the upstream sends on the wire, since that is what is avoided: an
        // index file it sends plain and the mirror serves gzip'd counts its
        // plain length on both sides, else every such file served would
        // count less than it cost to fetch. Never below zero: while prefetch
        // fetches more than clients ask for, nothing has been avoided yet.
        let client_upstream_bytes: u64 = Route::registry_labels()
            .map(|route| sum(&http.served_upstream_bytes, "route", Some(route)))
            .sum();
        let avoided = client_upstream_bytes.saturating_sub(fetched_bytes);
        let health = self.activity.upstream_health();
        let top: Vec<serde_json::Value> = self
            .activity
            .top_crates()
            .into_iter()
            .map(|(name, count)| serde_json::json!({ "name": name, "requests": count }))
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": now_ms().saturating_sub(self.started_ms) / 1000,
            "requests": {
                "total": sum(&http.requests, "status", None),
                "client": client_requests,
                "errors": http_errors,
            },
            "hit_ratio": ratio(index_hits + crate_hits, index_total + crate_total),
            "index": {
                "hits": index_hits,
                "memory_hits": lookups("hit"),
                "misses": lookups("miss"),
                "revalidated": lookups("revalidated"),
                "stale_served": lookups("stale"),
                "store_loads": index.store_loads.get(),
                "negative_hits": index.negative_hits.get(),
                "upstream_fetches": sum(&upstream.requests, "kind", Some("index")),
                "upstream_not_modified": index.not_modified.get(),
                "coalesced_waits": sum(&upstream.coalesced_waits, "kind", Some("index")),
                "hit_ratio": ratio(index_hits, index_total),
            },
            "crates": {
                "hits": crate_hits,
                "misses": downloads("miss"),
                "joined": downloads("joined"),
                "failures": downloads("error"),
                "checksum_failures": crates.checksum_failures.get(),
                "hit_ratio": ratio(crate_hits, crate_total),
            },
            "bytes": {
                "served": client_bytes,
                "fetched": fetched_bytes,
                "as_upstream_sends": client_upstream_bytes,
                "avoided": avoided,
                "avoided_ratio": ratio(avoided, client_upstream_bytes),
            },
            "upstream": {
                "requests": upstream_total,
                "failures": upstream_failures,
                "healthy": health.healthy(),
                "last_success_ms": health.last_success_ms,
                "last_failure_ms": health.last_failure_ms,
                "latency_seconds_sum": latency_sum,
                "latency_count": latency_count,
            },
            "prefetch": {
                "started": prefetch.started.get(),
                "useful": prefetch.useful.get(),
                "wasted": prefetch.wasted.get(),
                "useful_ratio": ratio(prefetch.useful.get(), prefetch.started.get()),
            },
            "top_crates": top,
            "recent_errors": {
                "missing": self.activity.recent_errors(ErrorKind::Missing),
                "failures": self.activity.recent_errors(ErrorKind::Failure),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `n` to the counter of `labels` in `vec`.
    fn add(vec: &prometheus::IntCounterVec, labels: &[&str], n: u64) {
        vec.with_label_values(labels).inc_by(n);
    }

    #[test]
    fn figures_sum_the_layers_counters() {
        let metrics = Metrics::new();
        metrics.index.lookups.with_label_values(&["hit"]).inc_by(3);
        metrics.index.lookups.with_label_values(&["stale"]).inc();
        metrics.index.lookups.with_label_values(&["miss"]).inc_by(4);
        add(&metrics.crates.downloads, &["redirect"], 2);
        metrics.upstream_exchange("index", "client", "200", 0.5, true);
        metrics.upstream_exchange("download", "client", "502", 0.25, false);
        metrics
            .http
            .requests
            .with_label_values(&["index", "GET", "503"])
            .inc();
        add(&metrics.http.served_bytes, &["index"], 10);
        add(&metrics.http.served_bytes, &["stats"], 99);
        // Served gzip'd, sent plain by the upstream: 30 bytes from there.
        add(&metrics.http.served_upstream_bytes, &["index"], 30);
        add(&metrics.http.served_upstream_bytes, &["stats"], 99);
        metrics.activity.crate_requested("popular");
        metrics
            .activity
            .record_error(ErrorKind::Failure, "GET", "/x", 503);
        add(&metrics.http.requests, &["stats", "GET", "200"], 7);
        add(&metrics.upstream.fetched_bytes, &["index"], 12);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot["index"]["hits"], 4);
        assert_eq!(snapshot["index"]["memory_hits"], 3);
        assert_eq!(snapshot["index"]["hit_ratio"], 0.5);
        assert_eq!(snapshot["index"]["upstream_fetches"], 1);
        assert_eq!(snapshot["crates"]["hits"], 2);
        assert_eq!(snapshot["crates"]["hit_ratio"], 1.0);
        assert_eq!(snapshot["hit_ratio"], 0.6);
        assert_eq!(snapshot["requests"]["errors"], 1);
        assert_eq!(snapshot["upstream"]["requests"], 2);
        assert_eq!(snapshot["upstream"]["failures"], 1);
        let failed_at = metrics.activity.upstream_health().last_failure_ms;
        assert!(failed_at > 0);
        assert_eq!(snapshot["upstream"]["last_failure_ms"], failed_at);
        assert_eq!(snapshot["upstream"]["latency_count"], 2);
        assert_eq!(snapshot["upstream"]["latency_seconds_sum"], 0.75);
        assert_eq!(snapshot["bytes"]["served"], 10);
        assert_eq!(
            snapshot["prefetch"]["useful_ratio"],
            serde_json::Value::Null
        );
        assert_eq!(snapshot["top_crates"][0]["name"], "popular");
        assert_eq!(snapshot["top_crates"][0]["requests"], 1);
        assert_eq!(snapshot["recent_errors"]["failures"][0]["path"], "/x");
        assert_eq!(snapshot["recent_errors"]["failures"][0]["status"], 503);
        assert_eq!(snapshot["recent_errors"]["missing"], serde_json::json!([]));
        // Client requests leave the dashboard's polling out.
        assert_eq!(snapshot["requests"]["total"], 8);
        assert_eq!(snapshot["requests"]["client"], 1);
        // Avoided in the upstream's bytes: 30 it would have sent, 12 it did
        // (not 10 served less 12 fetched, which would be nothing).
        assert_eq!(snapshot["bytes"]["fetched"], 12);
        assert_eq!(snapshot["bytes"]["as_upstream_sends"], 30);
        assert_eq!(snapshot["bytes"]["avoided"], 18);
        assert_eq!(snapshot["bytes"]["avoided_ratio"], 0.6);
    }

    #[test]
    fn avoided_bytes_never_go_below_zero() {
        let metrics = Metrics::new();
        // Prefetch fetched more than clients were sent.
        add(&metrics.upstream.fetched_bytes, &["index"], 500);
        add(&metrics.http.served_bytes, &["index"], 100);
        add(&metrics.http.served_upstream_bytes, &["index"], 100);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot["bytes"]["avoided"], 0);
        assert_eq!(snapshot["bytes"]["avoided_ratio"], 0.0);
        let idle = Metrics::new().snapshot();
        assert_eq!(idle["bytes"]["avoided_ratio"], serde_json::Value::Null);
    }
}
