//! Every metric the mirror exports, named once, in one Prometheus registry.
//! Layers count into their own group of [`Metrics`] (`metrics.http`,
//! `metrics.index`, ...); `/metrics` encodes the registry and `/api/stats`
//! (the dashboard's feed, assembled in `snapshot`) reads the same numbers, so
//! the two never disagree. What the dashboard shows beyond counters is kept
//! in `activity`.
//!
//! Names follow Prometheus conventions: a `crate_mirror_` prefix, base units
//! (`_seconds`, `_bytes`) and `_total` on counters.

pub mod activity;
pub mod route;
mod snapshot;

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Who caused an upstream request (the `origin` label): a client waiting for
/// it, the prefetcher, or a refresh of a copy already held (after the TTL, or
/// forced by a download naming an unknown version).
pub const UPSTREAM_ORIGINS: &[&str] = &["client", "prefetch", "revalidation"];

// The label values each fixed-set family starts with at 0: a series that
// appears only on first use has no earlier sample, so `rate()` and
// `increase()` miss its first increments. Kept beside the code that counts
// them in mind: a value missing here merely appears late again. (Routes are
// `Route::ALL`.)
const HTTP_CONNECTIONS: &[&str] = &["http1", "h2c-upgrade", "h2c-prior-knowledge"];
const INDEX_RESULTS: &[&str] = &["hit", "miss", "revalidated", "stale", "updating"];
const DOWNLOAD_RESULTS: &[&str] = &["hit", "miss", "joined", "redirect", "error"];
const PREFETCH_SKIPS: &[&str] = &["budget", "depth"];
const REDIRECT_REFUSALS: &[&str] = &["host", "too_many"];
/// The `endpoint` and `result` pairs of API pass-through requests that can occur.
const API_RESULTS: &[(&str, &[&str])] = &[
    ("search", &["hit", "miss", "error", "bad_request"]),
    (
        "crate",
        &["hit", "miss", "not_found", "error", "bad_request"],
    ),
    ("write", &["refused"]),
];
/// What the upstream is asked for (the `kind` label of its requests).
const UPSTREAM_KINDS: &[&str] = &["index", "config", "download", "api"];

/// The `method` label's values: the methods of RFC 9110 and PATCH; any
/// other token a client sends (and HTTP lets it send any) is `other`, so a
/// client can never add a series, let alone one with a label of its making.
pub const METHOD_LABELS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    OTHER_METHOD,
];
const OTHER_METHOD: &str = "other";

/// The `method` label of a request's method (one of `METHOD_LABELS`).
pub fn method_label(method: &str) -> &'static str {
    METHOD_LABELS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or(OTHER_METHOD)
}

pub use activity::{Activity, ErrorKind, ErrorRecord};
pub use route::Route;

/// The registry and the metrics of each layer.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub index: IndexMetrics,
    pub upstream: UpstreamMetrics,
    pub crates: CrateMetrics,
    pub prefetch: PrefetchMetrics,
    pub storage: StorageMetrics,
    pub api: ApiMetrics,
    /// The dashboard's state beyond counters.
    pub activity: Activity,
    started_ms: u64,
}

/// The HTTP surface: requests, connections, response times, bytes sent.
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    /// Client connections accepted, by how they are served.
    pub connections: IntCounterVec,
    pub duration: HistogramVec,
    pub served_bytes: IntCounterVec,
    /// The same bodies counted as the upstream sends them (see
    /// [`UpstreamBytes`]): what serving them from here spared the upstream's
    /// link, to set against `upstream.fetched_bytes`, which counts what it
    /// sent on the wire.
    pub served_upstream_bytes: IntCounterVec,
}

/// A response extension: what the upstream sends on the wire for this
/// response's body, when that is not the body's own length. An index file
/// the upstream sent plain is served gzip'd, yet it would have cost its plain
/// length from the upstream; without the extension a body counts as itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamBytes(pub u64);

/// The index cache and its sled store.
pub struct IndexMetrics {
    pub lookups: IntCounterVec,
    pub negative_hits: IntCounter,
    pub store_loads: IntCounter,
    /// Stored index files lost to a damaged database, by how it showed:
    /// `missing` (stored at the last stop, gone at the start), `undecodable`
    /// (read, but not a record of ours), `unreadable` (sled failed to read it).
    pub records_lost: IntCounterVec,
    pub not_modified: IntCounter,
    /// Index files stored in sled (a gauge set from the store's counter).
    pub files: IntGauge,
    /// The hot cache: bytes held (the gzip bodies, what `hot-cache-size`
    /// bounds) and what those files are plain (gauges set from its counters).
    pub memory_bytes: IntGauge,
    pub memory_plain_bytes: IntGauge,
}

/// Exchanges with the upstream, for index files and crate downloads alike.
pub struct UpstreamMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub retries: IntCounterVec,
    pub circuit_open: IntGauge,
    pub redirects_refused: IntCounterVec,
    pub fetched_bytes: IntCounterVec,
    /// Requests that joined a fetch already under way, by kind.
    pub coalesced_waits: IntCounterVec,
}

/// The download path.
pub struct CrateMetrics {
    pub downloads: IntCounterVec,
    pub checksum_failures: IntCounter,
}

/// Index files fetched ahead of clients.
pub struct PrefetchMetrics {
    pub started: IntCounter,
    pub useful: IntCounter,
    pub wasted: IntCounter,
    pub skipped: IntCounterVec,
}

/// The registry web API passed through to the upstream (`registry_api`).
pub struct ApiMetrics {
    /// By endpoint (search, crate, write) and result (hit, miss, not_found,
    /// error, bad_request, refused).
    pub requests: IntCounterVec,
}

/// Crate storage gauges, set from the stores' counters.
pub struct StorageMetrics {
    pub objects: IntGauge,
    pub bytes: IntGauge,
    /// Without labels, and without a sample while storage is unbounded: a
    /// 0 would read as "no room at all" (set through `set_quota`).
    quota_bytes: IntGaugeVec,
    pub memory_bytes: IntGauge,
    /// Crates evicted to keep under the quota, their bytes, and eviction
    /// passes that failed: what to alert on (a cache near its quota is
    /// healthy; one that cannot evict, or evicts what it just fetched, is not).
    pub evicted: IntCounter,
    pub evicted_bytes: IntCounter,
    pub eviction_failures: IntCounter,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Registers `made` (a metric just built, or why it could not be) under
/// `name`. Names and labels are constants, so a failure is a mistake here,
/// and panics in every test.
fn registered<M>(registry: &Registry, name: &str, made: prometheus::Result<M>) -> M
where
    M: Collector + Clone + 'static,
{
    let metric = made.unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, name, IntCounter::new(name, help))
}

/// A metric with `labels`, made by `new` (`IntCounterVec::new`, ...).
fn labelled<M>(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    new: fn(Opts, &[&str]) -> prometheus::Result<M>,
) -> M
where
    M: Collector + Clone + 'static,
{
    registered(registry, name, new(Opts::new(name, help), labels))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    labelled(registry, name, help, labels, IntCounterVec::new)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, name, IntGauge::new(name, help))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    labelled(registry, name, help, labels, IntGaugeVec::new)
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    registered(registry, name, HistogramVec::new(opts, labels))
}

impl HttpMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            requests: counter_vec(
                r,
                "crate_mirror_http_requests_total",
                "HTTP requests answered, by route, method (GET, HEAD, ... or other) and status.",
                &["route", "method", "status"],
            ),
            connections: counter_vec(
                r,
                "crate_mirror_http_connections_total",
                "Client connections accepted on the plain listener, by protocol (http1, h2c-upgrade, h2c-prior-knowledge).",
                &["protocol"],
            ),
            duration: histogram_vec(
                r,
                "crate_mirror_http_request_duration_seconds",
                "Time to answer an HTTP request (to the response head), by route and status.",
                &["route", "status"],
            ),
            served_bytes: counter_vec(
                r,
                "crate_mirror_served_bytes_total",
                "Body bytes sent to clients, by route.",
                &["route"],
            ),
            served_upstream_bytes: counter_vec(
                r,
                "crate_mirror_served_upstream_bytes_total",
                "Body bytes sent to clients, counted as the upstream sends them (an index file it sent plain counts its plain length, though served gzip'd), by route.",
                &["route"],
            ),
        }
    }
}

impl IndexMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            lookups: counter_vec(
                r,
                "crate_mirror_index_lookups_total",
                "Index file lookups by result: hit, miss, revalidated, stale.",
                &["result"],
            ),
            negative_hits: counter(
                r,
                "crate_mirror_index_negative_hits_total",
                "Lookups answered from the negative cache (a remembered 404/410/451).",
            ),
            store_loads: counter(
                r,
                "crate_mirror_index_store_loads_total",
                "Index files read from sled into memory.",
            ),
            records_lost: {
                let lost = counter_vec(
                    r,
                    "crate_mirror_index_records_lost_total",
                    "Stored index files lost to a damaged database (fetched again), by how it showed: missing, undecodable, unreadable.",
                    &["reason"],
                );
                // The fixed label set, exported at 0 from the start.
                for reason in ["missing", "undecodable", "unreadable"] {
                    lost.with_label_values(&[reason]);
                }
                lost
            },
            not_modified: counter(
                r,
                "crate_mirror_index_upstream_not_modified_total",
                "Revalidations the upstream answered with 304.",
            ),
            files: gauge(r, "crate_mirror_index_files", "Index files stored in sled."),
            memory_bytes: gauge(
                r,
                "crate_mirror_index_memory_bytes",
                "Bytes of index files held in memory, gzip'd as they are served (what hot-cache-size bounds).",
            ),
            memory_plain_bytes: gauge(
                r,
                "crate_mirror_index_memory_plain_bytes",
                "What the index files held in memory are uncompressed.",
            ),
        }
    }
}

impl UpstreamMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            requests: counter_vec(
                r,
                "crate_mirror_upstream_requests_total",
                "Requests to the upstream by kind (index, config, download, api), status (code, timeout, error) and origin (client, prefetch, revalidation).",
                &["kind", "status", "origin"],
            ),
            duration: histogram_vec(
                r,
                "crate_mirror_upstream_request_duration_seconds",
                "Upstream response time (to the response head), by kind.",
                &["kind"],
            ),
            retries: counter_vec(
                r,
                "crate_mirror_upstream_retries_total",
                "Upstream requests retried after a failure, by kind.",
                &["kind"],
            ),
            redirects_refused: counter_vec(
                r,
                "crate_mirror_upstream_redirects_refused_total",
                "Upstream redirects not followed, by reason (host: not an upstream or listed host; too_many: over the limit).",
                &["reason"],
            ),
            circuit_open: gauge(
                r,
                "crate_mirror_upstream_circuit_open",
                "1 while the upstream circuit breaker is open (requests fail fast).",
            ),
            fetched_bytes: counter_vec(
                r,
                "crate_mirror_upstream_fetched_bytes_total",
                "Body bytes received from the upstream, by kind.",
                &["kind"],
            ),
            coalesced_waits: counter_vec(
                r,
                "crate_mirror_coalesced_waits_total",
                "Requests that joined an upstream fetch already under way, by kind.",
                &["kind"],
            ),
        }
    }

    /// Counts one exchange and its response time.
    fn exchange(&self, kind: &str, origin: &str, status: &str, seconds: f64) {
        self.requests
            .with_label_values(&[kind, status, origin])
            .inc();
        self.duration.with_label_values(&[kind]).observe(seconds);
    }
}

impl CrateMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            downloads: counter_vec(
                r,
                "crate_mirror_crate_downloads_total",
                "Crate downloads by result: hit, miss, joined, redirect, error.",
                &["result"],
            ),
            checksum_failures: counter(
                r,
                "crate_mirror_checksum_failures_total",
                "Upstream crate bodies whose sha256 did not match the index cksum.",
            ),
        }
    }
}

impl PrefetchMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            started: counter(
                r,
                "crate_mirror_prefetch_started_total",
                "Index files fetched ahead of clients, from the dependencies of fetched ones.",
            ),
            useful: counter(
                r,
                "crate_mirror_prefetch_useful_total",
                "Prefetched index files that a client then asked for.",
            ),
            wasted: counter(
                r,
                "crate_mirror_prefetch_wasted_total",
                "Prefetched index files that expired before any client asked for them.",
            ),
            skipped: counter_vec(
                r,
                "crate_mirror_prefetch_skipped_total",
                "Prefetches not made, by reason (budget, depth).",
                &["reason"],
            ),
        }
    }
}

impl ApiMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            requests: counter_vec(
                r,
                "crate_mirror_api_requests_total",
                "Registry web API requests, by endpoint (search, crate, write) and result (hit, miss, not_found, error, bad_request, refused).",
                &["endpoint", "result"],
            ),
        }
    }
}

impl StorageMetrics {
    fn register(r: &Registry) -> Self {
        Self {
            objects: gauge(
                r,
                "crate_mirror_storage_objects",
                "Crate files in local storage.",
            ),
            bytes: gauge(
                r,
                "crate_mirror_storage_bytes",
                "Bytes of crate files in local storage.",
            ),
            memory_bytes: gauge(
                r,
                "crate_mirror_crate_memory_bytes",
                "Bytes of hot crate files held in memory.",
            ),
            evicted: counter(
                r,
                "crate_mirror_storage_evicted_total",
                "Crate files evicted to keep local storage under its quota.",
            ),
            evicted_bytes: counter(
                r,
                "crate_mirror_storage_evicted_bytes_total",
                "Bytes of crate files evicted to keep local storage under its quota.",
            ),
            eviction_failures: counter(
                r,
                "crate_mirror_storage_eviction_failures_total",
                "Eviction passes that failed (a file or the database could not be changed).",
            ),
            quota_bytes: gauge_vec(
                r,
                "crate_mirror_storage_quota_bytes",
                "The local storage quota (absent when unbounded).",
                &[],
            ),
        }
    }

    /// Exports the quota, or nothing when there is none.
    pub fn set_quota(&self, quota: Option<u64>) {
        match quota {
            Some(bytes) => self
                .quota_bytes
                .with_label_values(&[] as &[&str])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX)),
            None => self.quota_bytes.reset(),
        }
    }

    /// The exported quota, if any.
    #[cfg(test)]
    pub fn quota(&self) -> Option<i64> {
        let families = self.quota_bytes.collect();
        let sample = families.first()?.get_metric().first()?;
        Some(sample.get_gauge().get_value() as i64)
    }
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
        let build_info = gauge_vec(
            &r,
            "crate_mirror_build_info",
            "Build information; always 1.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // The process's CPU, memory, file descriptors and start time, read
        // from /proc at each scrape (there is no /proc elsewhere).
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .unwrap_or_else(|e| panic!("register the process collector: {e}"));
        let metrics = Self {
            http: HttpMetrics::register(&r),
            index: IndexMetrics::register(&r),
            upstream: UpstreamMetrics::register(&r),
            crates: CrateMetrics::register(&r),
            prefetch: PrefetchMetrics::register(&r),
            storage: StorageMetrics::register(&r),
            api: ApiMetrics::register(&r),
            registry: r,
            activity: Activity::default(),
            started_ms: now_ms(),
        };
        metrics.initialise_labels();
        metrics
    }

    /// Creates every series of a fixed label set at 0 (see `HTTP_CONNECTIONS`).
    /// Statuses are open-ended: only the usual success is created.
    fn initialise_labels(&self) {
        let routes: Vec<&str> = Route::ALL.iter().map(|r| r.as_str()).collect();
        let single_label: [(&IntCounterVec, &[&str]); 7] = [
            (&self.http.served_bytes, &routes),
            (&self.http.served_upstream_bytes, &routes),
            (&self.http.connections, HTTP_CONNECTIONS),
            (&self.index.lookups, INDEX_RESULTS),
            (&self.crates.downloads, DOWNLOAD_RESULTS),
            (&self.prefetch.skipped, PREFETCH_SKIPS),
            (&self.upstream.redirects_refused, REDIRECT_REFUSALS),
        ];
        for (family, values) in single_label {
            for value in values {
                family.with_label_values(&[value]);
            }
        }
        for (endpoint, results) in API_RESULTS {
            for result in *results {
                self.api.requests.with_label_values(&[endpoint, result]);
            }
        }
        let upstream = &self.upstream;
        for kind in UPSTREAM_KINDS {
            upstream.retries.with_label_values(&[kind]);
            // Only index files are fetched by the prefetcher or refreshed.
            let origins = if *kind == "index" {
                UPSTREAM_ORIGINS
            } else {
                &["client"]
            };
            for origin in origins {
                upstream.requests.with_label_values(&[kind, "200", origin]);
            }
        }
        // Bytes and waits are counted as `index` and `crate`; API bytes too.
        for kind in ["index", "crate"] {
            upstream.fetched_bytes.with_label_values(&[kind]);
            upstream.coalesced_waits.with_label_values(&[kind]);
        }
        upstream.fetched_bytes.with_label_values(&["api"]);
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Counts one upstream exchange and remembers whether the upstream answered.
    pub fn upstream_exchange(
        &self,
        kind: &str,
        origin: &str,
        status: &str,
        seconds: f64,
        healthy: bool,
    ) {
        self.upstream.exchange(kind, origin, status, seconds);
        // The dashboard's upstream health is the registry's: the web API is
        // another service (with a circuit of its own).
        if kind != "api" {
            self.activity.upstream_answered(healthy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_build_info() {
        let metrics = Metrics::new();
        metrics.index.lookups.with_label_values(&["hit"]).inc_by(3);
        metrics.upstream_exchange("index", "prefetch", "200", 0.01, true);
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(text.contains("crate_mirror_build_info{version=\""));
        assert!(text.contains("crate_mirror_index_lookups_total{result=\"hit\"} 3"));
        assert!(text.contains("crate_mirror_upstream_request_duration_seconds_bucket"));
        assert!(
            text.contains("crate_mirror_upstream_requests_total{kind=\"index\",origin=\"prefetch\",status=\"200\"} 1")
        );
        assert!(metrics.activity.upstream_health().last_success_ms > 0);
    }

    #[test]
    fn methods_outside_the_fixed_set_are_other() {
        for known in ["GET", "HEAD", "POST", "PATCH", "TRACE"] {
            assert_eq!(method_label(known), known);
        }
        for made_up in ["get", "FROBNICATE", "", "GETX", &"M".repeat(8192)] {
            assert_eq!(method_label(made_up), "other", "{made_up:.20}");
        }
        // `other` is spelled so that no method can be mistaken for it.
        assert!(METHOD_LABELS
            .iter()
            .all(|m| *m == "other" || m.bytes().all(|b| b.is_ascii_uppercase())));
    }

    /// Every family the mirror exports, with its type and labels, by name.
    const FAMILIES: &[(&str, &str, &[&str])] = &[
        (
            "crate_mirror_api_requests_total",
            "counter",
            &["endpoint", "result"],
        ),
        ("crate_mirror_build_info", "gauge", &["version"]),
        ("crate_mirror_checksum_failures_total", "counter", &[]),
        ("crate_mirror_coalesced_waits_total", "counter", &["kind"]),
        ("crate_mirror_crate_downloads_total", "counter", &["result"]),
        ("crate_mirror_crate_memory_bytes", "gauge", &[]),
        (
            "crate_mirror_http_connections_total",
            "counter",
            &["protocol"],
        ),
        (
            "crate_mirror_http_request_duration_seconds",
            "histogram",
            &["route", "status"],
        ),
        (
            "crate_mirror_http_requests_total",
            "counter",
            &["route", "method", "status"],
        ),
        ("crate_mirror_index_files", "gauge", &[]),
        ("crate_mirror_index_lookups_total", "counter", &["result"]),
        ("crate_mirror_index_memory_bytes", "gauge", &[]),
        ("crate_mirror_index_memory_plain_bytes", "gauge", &[]),
        ("crate_mirror_index_negative_hits_total", "counter", &[]),
        (
            "crate_mirror_index_records_lost_total",
            "counter",
            &["reason"],
        ),
        ("crate_mirror_index_store_loads_total", "counter", &[]),
        (
            "crate_mirror_index_upstream_not_modified_total",
            "counter",
            &[],
        ),
        (
            "crate_mirror_prefetch_skipped_total",
            "counter",
            &["reason"],
        ),
        ("crate_mirror_prefetch_started_total", "counter", &[]),
        ("crate_mirror_prefetch_useful_total", "counter", &[]),
        ("crate_mirror_prefetch_wasted_total", "counter", &[]),
        ("crate_mirror_served_bytes_total", "counter", &["route"]),
        (
            "crate_mirror_served_upstream_bytes_total",
            "counter",
            &["route"],
        ),
        ("crate_mirror_storage_bytes", "gauge", &[]),
        ("crate_mirror_storage_evicted_bytes_total", "counter", &[]),
        ("crate_mirror_storage_evicted_total", "counter", &[]),
        (
            "crate_mirror_storage_eviction_failures_total",
            "counter",
            &[],
        ),
        ("crate_mirror_storage_objects", "gauge", &[]),
        ("crate_mirror_storage_quota_bytes", "gauge", &[]),
        ("crate_mirror_upstream_circuit_open", "gauge", &[]),
        (
            "crate_mirror_upstream_fetched_bytes_total",
            "counter",
            &["kind"],
        ),
        (
            "crate_mirror_upstream_redirects_refused_total",
            "counter",
            &["reason"],
        ),
        (
            "crate_mirror_upstream_request_duration_seconds",
            "histogram",
            &["kind"],
        ),
        (
            "crate_mirror_upstream_requests_total",
            "counter",
            &["kind", "status", "origin"],
        ),
        ("crate_mirror_upstream_retries_total", "counter", &["kind"]),
        // The prometheus crate's process collector (Linux only).
        ("process_cpu_seconds_total", "counter", &[]),
        ("process_max_fds", "gauge", &[]),
        ("process_open_fds", "gauge", &[]),
        ("process_resident_memory_bytes", "gauge", &[]),
        ("process_start_time_seconds", "gauge", &[]),
        ("process_threads", "gauge", &[]),
        ("process_virtual_memory_bytes", "gauge", &[]),
    ];

    /// The metrics table (docs/operating.md) lists every exported family once, with
    /// its labels: operators write their queries from it.
    #[test]
    fn the_readme_lists_every_family_once_with_its_labels() {
        let readme = include_str!("../docs/operating.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|line| !line.starts_with("**Metrics**"))
            .skip_while(|line| !line.starts_with("| metric |"))
            .take_while(|line| line.starts_with('|'))
            .collect();
        for (name, _, labels) in FAMILIES {
            let short = name.strip_prefix("crate_mirror_").unwrap_or(name);
            let listed = format!("`{short}`");
            let found: Vec<&&str> = rows.iter().filter(|row| row.contains(&listed)).collect();
            assert_eq!(found.len(), 1, "{short} in the metrics table");
            let label_column = found[0].split('|').nth(2).unwrap();
            for label in *labels {
                assert!(label_column.contains(label), "{short}: label {label}");
            }
        }
        // And nothing that is not exported.
        for row in rows.iter().skip(2) {
            let names = row.split('|').nth(1).unwrap();
            for listed in names.split('`').skip(1).step_by(2) {
                assert!(
                    FAMILIES.iter().any(|(name, _, _)| name
                        .strip_prefix("crate_mirror_")
                        .unwrap_or(name)
                        == listed),
                    "{listed} is in the metrics table but not exported"
                );
            }
        }
    }

    /// Fixed label values are there from the start, at 0 (else `rate()`
    /// misses the first increments); the quota only while there is one.
    #[test]
    fn fixed_label_values_start_at_zero_and_an_unbounded_quota_is_absent() {
        let metrics = Metrics::new();
        let text = String::from_utf8(metrics.encode()).unwrap();
        for series in [
            "crate_mirror_index_lookups_total{result=\"stale\"} 0",
            "crate_mirror_crate_downloads_total{result=\"joined\"} 0",
            "crate_mirror_http_connections_total{protocol=\"h2c-upgrade\"} 0",
            "crate_mirror_served_bytes_total{route=\"download\"} 0",
            "crate_mirror_prefetch_skipped_total{reason=\"budget\"} 0",
            "crate_mirror_upstream_redirects_refused_total{reason=\"host\"} 0",
            "crate_mirror_upstream_requests_total{kind=\"index\",origin=\"revalidation\",status=\"200\"} 0",
            "crate_mirror_upstream_requests_total{kind=\"download\",origin=\"client\",status=\"200\"} 0",
            "crate_mirror_coalesced_waits_total{kind=\"crate\"} 0",
            "crate_mirror_api_requests_total{endpoint=\"search\",result=\"hit\"} 0",
            "crate_mirror_api_requests_total{endpoint=\"write\",result=\"refused\"} 0",
            "crate_mirror_upstream_requests_total{kind=\"api\",origin=\"client\",status=\"200\"} 0",
            "crate_mirror_served_bytes_total{route=\"api\"} 0",
        ] {
            assert!(text.contains(&format!("\n{series}\n")), "{series} in\n{text}");
        }
        assert!(
            !text.contains("crate_mirror_storage_quota_bytes "),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");

        metrics.storage.set_quota(Some(4096));
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(text.contains("\ncrate_mirror_storage_quota_bytes 4096\n"));
        metrics.storage.set_quota(None);
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(
            !text.contains("crate_mirror_storage_quota_bytes "),
            "{text}"
        );
    }

    /// Every family the mirror exports, with its type and labels: `/metrics`
    /// is an interface (dashboards, alerts), so a rename must be deliberate.
    #[test]
    fn exported_families_are_unchanged() {
        let metrics = Metrics::new();
        // A label vector without samples is not encoded: give each one a sample.
        for family in metrics.registry.gather() {
            let name = family.name();
            let Some((_, _, labels)) = FAMILIES.iter().find(|(n, _, _)| *n == name) else {
                panic!("{name} is exported but not listed here");
            };
            assert!(
                !labels.is_empty() || !family.get_metric().is_empty(),
                "{name}"
            );
        }
        let http = &metrics.http;
        http.requests.with_label_values(&["a", "b", "c"]).inc();
        http.connections.with_label_values(&["a"]).inc();
        http.duration.with_label_values(&["a", "b"]).observe(1.0);
        http.served_bytes.with_label_values(&["a"]).inc();
        http.served_upstream_bytes.with_label_values(&["a"]).inc();
        metrics.index.lookups.with_label_values(&["a"]).inc();
        let upstream = &metrics.upstream;
        upstream.requests.with_label_values(&["a", "b", "c"]).inc();
        upstream.duration.with_label_values(&["a"]).observe(1.0);
        upstream.retries.with_label_values(&["a"]).inc();
        upstream.redirects_refused.with_label_values(&["a"]).inc();
        upstream.fetched_bytes.with_label_values(&["a"]).inc();
        upstream.coalesced_waits.with_label_values(&["a"]).inc();
        metrics.crates.downloads.with_label_values(&["a"]).inc();
        metrics.prefetch.skipped.with_label_values(&["a"]).inc();
        metrics.api.requests.with_label_values(&["a", "b"]).inc();
        metrics.storage.set_quota(Some(1));
        let text = String::from_utf8(metrics.encode()).unwrap();
        let mut exported = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                exported.push((name.to_string(), kind.to_string()));
            } else if !line.starts_with('#') {
                // A sample: its labels are the family's (histograms add `le`).
                let (series, _) = line.rsplit_once(' ').unwrap();
                let (name, labels) = series.split_once('{').unwrap_or((series, ""));
                let family = FAMILIES
                    .iter()
                    .find(|(n, kind, _)| {
                        *n == name
                            || (*kind == "histogram"
                                && ["_bucket", "_sum", "_count"]
                                    .iter()
                                    .any(|s| name.strip_suffix(s) == Some(n)))
                    })
                    .unwrap_or_else(|| panic!("sample of an unlisted family: {line}"));
                let mut names: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| pair.split_once('=').unwrap().0)
                    .filter(|label| *label != "le")
                    .collect();
                // The encoder sorts labels by name.
                names.sort_unstable();
                let mut listed = family.2.to_vec();
                listed.sort_unstable();
                assert_eq!(names, listed, "labels of {line}");
            }
        }
        let expected: Vec<(String, String)> = FAMILIES
            .iter()
            .map(|(name, kind, _)| (name.to_string(), kind.to_string()))
            .collect();
        assert_eq!(exported, expected);
    }
}
