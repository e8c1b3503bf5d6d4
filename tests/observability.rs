//! Operations: /metrics after a real cargo run (validated by promtool and matched
//! against what happened), JSON access logs, the dashboard in headless Chromium
//! (public, and private where it asks for a token), and the shipped Prometheus
//! configuration and alert rules.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::cargo::{new_token, project, CargoHome};
use support::mirror::Mirror;
use support::parse_samples;
use support::registry::{graph_project_manifest, graph_registry, publish};
use support::upstream::{DlStyle, TestUpstream};

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}"))
}

fn sum_matching(samples: &BTreeMap<String, f64>, prefix: &str, fragment: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(fragment))
        .map(|(_, v)| v)
        .sum()
}

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by .ci/run)");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

async fn metrics_text(mirror: &Mirror) -> String {
    mirror.get("/metrics").await.text().await.unwrap()
}

#[tokio::test]
async fn metrics_after_a_cargo_run_match_what_happened() {
    let specs = graph_registry();
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    // Prefetch off, so that every upstream index request is a client's miss.
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--prefetch", "off"])
        .start();
    let target = tempfile::tempdir().unwrap();
    let app = project(&graph_project_manifest());
    CargoHome::new(&mirror.index_url()).run_ok(app.path(), target.path(), &["fetch"]);

    let text = metrics_text(&mirror).await;
    let check = promtool(&["check", "metrics"], Some(text.as_bytes()));
    assert!(
        check.status.success(),
        "promtool rejected /metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let samples = parse_samples(&text);
    let crates_fetched = upstream.count_matching("/dl/") as f64;
    let index_fetched =
        (upstream.count_matching("/index/") - upstream.count("/index/config.json")) as f64;
    assert!(crates_fetched >= 20.0);

    assert_eq!(
        sample(
            &samples,
            "crate_mirror_crate_downloads_total{result=\"miss\"}"
        ),
        crates_fetched
    );
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_upstream_requests_total{kind=\"download\",origin=\"client\",status=\"200\"}"
        ),
        crates_fetched
    );
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_upstream_requests_total{kind=\"index\",origin=\"client\",status=\"200\"}"
        ),
        index_fetched
    );
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_index_lookups_total{result=\"miss\"}"
        ),
        index_fetched
    );
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_http_requests_total{method=\"GET\",route=\"download\",status=\"200\"}"
        ),
        crates_fetched
    );
    assert_eq!(
        sample(&samples, "crate_mirror_checksum_failures_total"),
        0.0
    );
    assert_eq!(
        sample(
            &samples,
            &format!(
                "crate_mirror_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(
        sample(&samples, "crate_mirror_storage_objects"),
        crates_fetched
    );
    // Bytes fetched for crates are exactly the tarballs that were downloaded.
    let stored: u64 = mirror
        .stored_files(".crate")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_upstream_fetched_bytes_total{kind=\"crate\"}"
        ),
        stored as f64
    );
    assert_eq!(
        sample(&samples, "crate_mirror_storage_bytes"),
        stored as f64
    );
    assert!(
        sample(
            &samples,
            "crate_mirror_served_bytes_total{route=\"download\"}"
        ) >= stored as f64
    );
    assert!(
        sum_matching(
            &samples,
            "crate_mirror_http_request_duration_seconds_count",
            "route=\"index\""
        ) > 0.0
    );

    // A second cargo with a fresh CARGO_HOME: every crate is a hit, nothing new upstream.
    let again = project(&graph_project_manifest());
    std::fs::copy(
        app.path().join("Cargo.lock"),
        again.path().join("Cargo.lock"),
    )
    .unwrap();
    CargoHome::new(&mirror.index_url()).run_ok(again.path(), target.path(), &["fetch"]);
    let samples = parse_samples(&metrics_text(&mirror).await);
    assert_eq!(
        sample(
            &samples,
            "crate_mirror_crate_downloads_total{result=\"hit\"}"
        ),
        crates_fetched
    );
    assert_eq!(upstream.count_matching("/dl/") as f64, crates_fetched);
    assert!(sample(&samples, "crate_mirror_index_lookups_total{result=\"hit\"}") >= index_fetched);
}

/// A fresh mirror already exports each fixed label value at 0 (so `rate()`
/// sees the first increments), the process's figures, and no quota while
/// storage is unbounded; a client's fetch and the prefetch it causes are
/// told apart by `origin`.
#[tokio::test]
async fn fresh_metrics_have_the_fixed_series_and_upstream_requests_by_origin() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let text = metrics_text(&mirror).await;
    let samples = parse_samples(&text);
    for series in [
        "crate_mirror_index_lookups_total{result=\"stale\"}",
        "crate_mirror_crate_downloads_total{result=\"joined\"}",
        "crate_mirror_upstream_requests_total{kind=\"index\",origin=\"prefetch\",status=\"200\"}",
    ] {
        assert_eq!(sample(&samples, series), 0.0, "{series}");
    }
    assert!(sample(&samples, "process_resident_memory_bytes") > 0.0);
    assert!(sample(&samples, "process_start_time_seconds") > 0.0);
    assert!(
        !text.contains("crate_mirror_storage_quota_bytes"),
        "a quota is exported while storage is unbounded:\n{text}"
    );

    // `abc` depends on `a`, which the prefetcher fetches after the answer.
    assert_eq!(mirror.get("/index/3/a/abc").await.status(), 200);
    let by_origin = |origin: &str| {
        format!(
            "crate_mirror_upstream_requests_total{{kind=\"index\",origin=\"{origin}\",status=\"200\"}}"
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let samples = mirror.metrics().await;
        if sample(&samples, &by_origin("prefetch")) >= 1.0 {
            assert_eq!(sample(&samples, &by_origin("client")), 1.0);
            assert_eq!(sample(&samples, &by_origin("revalidation")), 0.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no prefetch request counted: {samples:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let bounded = Mirror::builder(&upstream.url)
        .args(&["--max-storage", "1000000"])
        .start();
    assert_eq!(
        sample(&bounded.metrics().await, "crate_mirror_storage_quota_bytes"),
        1_000_000.0
    );
}

#[tokio::test]
async fn json_logs_have_one_line_per_request() {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    upstream.add(&publish(&support::registry::CrateSpec::new(
        "logged", "1.0.0",
    )));
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--log-format", "json"])
        .start();
    let response = mirror.get("/index/lo/gg/logged").await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = mirror.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["path"] == "/index/lo/gg/logged")
        .unwrap_or_else(|| panic!("no JSON access line in:\n{log}"));
    assert_eq!(line["fields"]["method"], "GET");
    assert_eq!(line["fields"]["status"], 200);
    assert_eq!(line["fields"]["cache"], "MISS");
    assert!(line["fields"]["latency_ms"].as_f64().is_some());
    assert_eq!(line["level"], "INFO");
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            // Lets the page's fetches and two polling rounds finish.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (Debian's chromium package, installed by .ci/run)")
}

/// The page's DOM once chromium has run its script, and chromium's console
/// output; fails the test if chromium failed or the page counted script errors.
fn dump_dom(page: &str) -> (String, String) {
    let dumped = chromium(&["--dump-dom"], page);
    let dom = String::from_utf8_lossy(&dumped.stdout).into_owned();
    let console = String::from_utf8_lossy(&dumped.stderr).into_owned();
    assert!(dumped.status.success(), "{console}");
    assert!(
        dom.contains("data-errors=\"0\""),
        "the page reported script errors:\n{console}"
    );
    (dom, console)
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let open_end = at + dom[at..].find('>').unwrap() + 1;
    let close = open_end + dom[open_end..].find('<').unwrap();
    &dom[open_end..close]
}

/// A byte count as the dashboard writes it (`bytes()` in static/app.js): the
/// form the mirror's commands print sizes in too.
fn dashboard_bytes(n: u64) -> String {
    crate_mirror::bundle::human_bytes(n)
}

/// The dashboard's byte figure back in bytes (to the shown precision).
fn parse_bytes(text: &str) -> f64 {
    let (value, unit) = text.split_once(' ').expect("a value and a unit");
    let value: f64 = value.parse().expect("a number");
    let power = ["B", "KiB", "MiB", "GiB", "TiB"]
        .iter()
        .position(|u| *u == unit)
        .expect("a known unit");
    value * 1024f64.powi(power as i32)
}

#[tokio::test]
async fn the_dashboard_renders_live_figures_in_chromium() {
    let upstream = TestUpstream::start(&graph_registry()[..6], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    // Traffic: index files and downloads, some of them twice.
    // Fetching abc prefetches its dependency a; wait until that has happened.
    mirror.get("/index/3/a/abc").await;
    for _ in 0..100 {
        let stats = mirror.stats().await;
        if stats["prefetch"]["started"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // What the test itself received, to check the page's figures against.
    let mut received = 0u64;
    let mut crate_sizes = std::collections::BTreeMap::new();
    for _ in 0..2 {
        for (path, name, version) in [
            ("3/a/abc", "abc", "1.0.0"),
            ("1/a", "a", "1.0.0"),
            ("2/ab", "ab", "0.2.0"),
        ] {
            let index = mirror.get(&format!("/index/{path}")).await;
            received += index.bytes().await.unwrap().len() as u64;
            let download = mirror
                .get(&format!("/api/v1/crates/{name}/{version}/download"))
                .await;
            assert_eq!(download.status(), 200);
            let body = download.bytes().await.unwrap();
            received += body.len() as u64;
            crate_sizes.insert(name, body.len() as u64);
        }
    }
    let page = format!("{}/", mirror.url);
    let (dom, console) = dump_dom(&page);
    assert!(
        !dom.contains("data-loaded=\"0\""),
        "the page never loaded /api/stats"
    );
    assert!(!console.contains("Uncaught"), "{console}");
    assert_eq!(
        element_text(&dom, "index-url"),
        format!("{}/index/", mirror.url)
    );
    let requests: u64 = element_text(&dom, "requests")
        .replace(',', "")
        .parse()
        .unwrap();
    // One index request before the loop, twelve in it, and the polls.
    assert!(requests >= 13, "requests shown: {requests}");
    // The page's figures against what the test did: the hit ratio of its
    // lookups (nothing has looked up an index file since), the bytes it was
    // sent (the page's own assets and polls come on top, a few KiB), and the
    // three crates it downloaded, stored once each.
    let stats = mirror.stats().await;
    let ratio = stats["hit_ratio"].as_f64().expect("a hit ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    assert_eq!(
        element_text(&dom, "hit-ratio"),
        format!("{:.1} %", ratio * 100.0)
    );
    let served = parse_bytes(element_text(&dom, "bytes-served"));
    assert!(
        served >= received as f64 * 0.95 && served <= received as f64 + 512.0 * 1024.0,
        "served {served} B shown, the test received {received} B"
    );
    let stored: u64 = crate_sizes.values().sum();
    assert_eq!(stats["storage"]["bytes"].as_u64(), Some(stored));
    assert_eq!(element_text(&dom, "storage"), dashboard_bytes(stored));
    assert_eq!(element_text(&dom, "upstream-pill"), "upstream: healthy");
    assert!(
        dom.contains("<td>abc</td>"),
        "most requested crates missing"
    );
    // abc depends on a: fetching abc prefetched a, which was asked for next.
    assert_eq!(element_text(&dom, "prefetch-ratio"), "100.0 %");

    for (name, size) in [
        ("dashboard-desktop.png", "1280,1000"),
        ("dashboard-phone.png", "390,844"),
    ] {
        screenshot(&page, name, size);
    }
}

/// The opening tag of the element with `id` in a dumped DOM.
fn element_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let open = dom[..at].rfind('<').unwrap();
    &dom[open..at + dom[at..].find('>').unwrap() + 1]
}

#[tokio::test]
async fn a_private_dashboard_asks_for_a_token_instead_of_showing_blank_cards() {
    let upstream = TestUpstream::start(&graph_registry()[..2], DlStyle::Plain);
    let (_, client_hash) = new_token();
    let (_, metrics_hash) = new_token();
    let mirror = Mirror::builder(&upstream.url)
        .private(&client_hash)
        .args(&["--metrics-tokens", &metrics_hash])
        .start();
    // What the page meets: /api/stats refuses it; the page itself is open.
    let stats = mirror.get("/api/stats").await;
    assert_eq!(stats.status(), 401);

    let page = format!("{}/", mirror.url);
    let (dom, console) = dump_dom(&page);
    assert!(!console.contains("Uncaught"), "{console}");
    // The prompt shows, with its form; the empty cards do not.
    assert!(!element_tag(&dom, "locked").contains("hidden"), "{dom}");
    assert_eq!(element_text(&dom, "locked-title"), "This mirror is private");
    assert!(
        element_text(&dom, "locked-message").contains("paste a client or metrics token"),
        "{dom}"
    );
    assert!(element_tag(&dom, "token-input").contains("type=\"password\""));
    assert!(dom.contains("data-locked=\"1\""), "the page never locked");
    assert!(element_tag(&dom, "figures").contains("hidden"), "{dom}");
    assert!(element_tag(&dom, "tables").contains("hidden"), "{dom}");
    // The snippet still names the index, from the page's own origin.
    assert_eq!(
        element_text(&dom, "index-url"),
        format!("{}/index/", mirror.url)
    );

    screenshot(&page, "dashboard-private.png", "1280,800");
}

/// Headless Chromium's screenshot of `page` at `size` ("WIDTH,HEIGHT"),
/// kept as `name` in the screenshot folder; fails unless it is a real image.
fn screenshot(page: &str, name: &str, size: &str) {
    let path = screenshot_dir().join(name);
    let _ = std::fs::remove_file(&path);
    let shot = chromium(
        &[
            &format!("--window-size={size}"),
            &format!("--screenshot={}", path.display()),
        ],
        page,
    );
    support::assert_success(&shot);
    let png = std::fs::read(&path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{name} looks empty"
    );
}

#[test]
fn shipped_prometheus_config_and_alert_rules_pass_promtool() {
    // The shipped config names the scrape token's file where an operator puts
    // it; promtool insists it exists, so the check runs on a copy naming a
    // token file that does.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "cmt_example\n").unwrap();
    let config = std::fs::read_to_string(shipped.join("prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/crate-mirror-metrics-token",
            &token.to_string_lossy(),
        );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    for file in ["alerts.yml", "alerts.test.yml"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    let dir = dir.path();
    // `test rules`: the shipped unit tests of the alerts (a full cache that
    // eviction keeps near its quota raises nothing; failing eviction, storage
    // stuck over the quota and churn do).
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        support::run_ok(
            Command::new("promtool").args(&args).current_dir(dir),
            String::new,
        );
    }
    // The Grafana dashboard is valid JSON whose queries use only exported metrics.
    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/crate-mirror.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Every metric is named once, in src/metrics.rs (label vectors without samples
    // are absent from /metrics, so the source is the complete list).
    let defined = include_str!("../src/metrics.rs");
    // Job and instance variables, and every query limited to them: a
    // dashboard over several nodes must not add one node's gauges to
    // another's (a sum of quotas is no node's quota).
    let variables: Vec<&str> = grafana["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"job") && variables.contains(&"instance"));
    let titles: Vec<&str> = grafana["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in ["Prefetch", "circuit breaker", "Eviction"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no {wanted} panel"
        );
    }
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let selectors = expr.matches('{').count();
            assert_eq!(
                expr.matches("job=~\"$job\",instance=~\"$instance\"")
                    .count(),
                selectors,
                "every selector limited to $job and $instance: {expr}"
            );
            assert!(selectors > 0, "{expr}");
            assert!(
                !expr.starts_with("sum(crate_mirror_storage"),
                "per-node gauges are not summed: {expr}"
            );
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(base) = word.strip_prefix("crate_mirror_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .fold(base, |b, suffix| b.strip_suffix(suffix).unwrap_or(b));
                    assert!(
                        defined.contains(&format!("\"crate_mirror_{family}\"")),
                        "the Grafana dashboard queries unknown metric {word}"
                    );
                }
            }
        }
    }
}
