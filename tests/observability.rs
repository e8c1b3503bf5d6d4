//! Operations: /metrics after a real cargo run (validated by promtool and matched
//! against what happened), JSON access logs, the dashboard in headless Chromium
//! at desktop and phone widths (public, idle, and private where it asks for a
//! token), its private-mode snippet pasted into real cargo, and the shipped
//! Prometheus configuration and alert rules.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::browser::Browser;
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

/// The viewports the dashboard is checked at (CSS pixels).
const DESKTOP: (u32, u32) = (1280, 1000);
const PHONE: (u32, u32) = (375, 812);

/// Opens the dashboard at `page` in a viewport of `size` and waits (in real
/// time, the page polling as it does) until `ready`, a JavaScript condition
/// on `s`, the page's `#dashboard-state` data; returns the DOM then. Fails
/// the test if the page counted script errors or anything made the page
/// wider than the viewport.
fn dashboard_dom(page: &str, size: (u32, u32), ready: &str) -> String {
    let mut browser = Browser::open(page, size.0, size.1);
    let state = "document.getElementById('dashboard-state').dataset";
    browser.wait_until(
        &format!("(s => {ready})({state})"),
        std::time::Duration::from_secs(30),
        &format!("JSON.stringify({state})"),
    );
    let dom = browser.dom();
    assert!(
        dom.contains("data-errors=\"0\""),
        "the page reported script errors: {}",
        element_tag(&dom, "dashboard-state")
    );
    let widths = browser.eval("[document.scrollingElement.scrollWidth, window.innerWidth]");
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert_eq!(inner, u64::from(size.0), "the viewport is not {size:?}");
    assert!(
        scroll <= inner,
        "at {size:?} the page is {scroll} px wide for a {inner} px viewport"
    );
    dom
}

/// A `data-NAME` value of the page's `#dashboard-state`.
fn state_value<'a>(dom: &'a str, name: &str) -> &'a str {
    let tag = element_tag(dom, "dashboard-state");
    let marker = format!("data-{name}=\"");
    let at = tag
        .find(&marker)
        .unwrap_or_else(|| panic!("no data-{name} in {tag}"))
        + marker.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text of the element with `id` in a dumped DOM (up to its first child).
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let open_end = at + dom[at..].find('>').unwrap() + 1;
    let close = open_end + dom[open_end..].find('<').unwrap();
    &dom[open_end..close]
}

/// The inner HTML of the element with `id`, up to `</tag>` (for a `tbody`).
fn element_inner<'a>(dom: &'a str, id: &str, tag: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let open_end = at + dom[at..].find('>').unwrap() + 1;
    let close = open_end + dom[open_end..].find(&format!("</{tag}>")).unwrap();
    &dom[open_end..close]
}

/// The rows of a table body as the cells' texts (markup dropped).
fn table_rows(dom: &str, tbody: &str) -> Vec<Vec<String>> {
    element_inner(dom, tbody, "tbody")
        .split("</tr>")
        .filter(|row| row.contains("<td"))
        .map(|row| {
            row.split("</td>")
                .filter_map(|cell| cell.rsplit_once('>').map(|(_, text)| unescape(text)))
                .collect()
        })
        .collect()
}

/// Text as the DOM dump escapes it, back.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
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

/// Index paths of crates the upstream does not have: each a 404.
const MISSING: [&str; 4] = [
    "/index/no/ne/none-such",
    "/index/no/ne/none-other",
    "/index/3/z/zzz",
    "/index/2/zq",
];

/// What the test's mirror is given that must never be shown.
const AWS_SECRET: &str = "aws-secret-that-must-not-show";
const UPSTREAM_PASSWORD: &str = "upstream-pw-that-must-not-show";

#[tokio::test]
async fn the_dashboard_renders_live_figures_in_chromium() {
    let upstream = TestUpstream::start(&graph_registry()[..6], DlStyle::Plain);
    // The upstream named with a user and password (the test upstream ignores
    // them), and an S3 key in the environment: neither may be shown.
    let with_userinfo = upstream
        .url
        .replacen("://", &format!("://ops:{UPSTREAM_PASSWORD}@"), 1);
    let mirror = Mirror::builder(&with_userinfo)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .start();
    // Traffic: index files and downloads, some of them twice.
    // Fetching abc prefetches its dependency a; wait until that has happened.
    let first = mirror.get("/index/3/a/abc").await;
    let first_len = first.bytes().await.unwrap().len() as u64;
    for _ in 0..100 {
        let stats = mirror.stats().await;
        if stats["prefetch"]["started"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // What the test itself received, to check the page's figures against.
    let mut received = first_len;
    let mut crate_sizes = std::collections::BTreeMap::new();
    let mut download = async |name: &str, version: &str| {
        let download = mirror
            .get(&format!("/api/v1/crates/{name}/{version}/download"))
            .await;
        assert_eq!(download.status(), 200);
        let body = download.bytes().await.unwrap();
        crate_sizes.insert(format!("{name} {version}"), body.len() as u64);
        body.len() as u64
    };
    for _ in 0..2 {
        for (path, name, version) in [
            ("3/a/abc", "abc", "1.0.0"),
            ("1/a", "a", "1.0.0"),
            ("2/ab", "ab", "0.2.0"),
        ] {
            let index = mirror.get(&format!("/index/{path}")).await;
            received += index.bytes().await.unwrap().len() as u64;
            received += download(name, version).await;
        }
    }
    received += download("ab", "0.1.0").await;
    // Four crates that do not exist.
    for path in MISSING {
        let missing = mirror.get(path).await;
        assert_eq!(missing.status(), 404, "{path}");
        received += missing.bytes().await.unwrap().len() as u64;
    }
    let page = format!("{}/", mirror.url);
    let stats = mirror.stats().await;
    for size in [DESKTOP, PHONE] {
        let dom = dashboard_dom(&page, size, "s.loaded >= 1 && s.settingsLoaded >= 1");
        assert_eq!(
            element_text(&dom, "index-url"),
            format!("{}/index/", mirror.url)
        );
        let requests: u64 = element_text(&dom, "requests")
            .replace(',', "")
            .parse()
            .unwrap();
        // Client requests only: one index request before the loop, six
        // index requests and six downloads in it, one more download, four
        // 404s; not the page's polls, nor the test's own /api/stats.
        assert_eq!(requests, 18, "client requests shown at {size:?}");
        assert_eq!(stats["requests"]["client"], 18);
        // The page's figures against what the test did: the hit ratio of its
        // lookups (nothing has looked up an index file since), the bytes it
        // was sent (the page's own assets and polls are not counted), and
        // the four crate files it downloaded, stored once each.
        let ratio = stats["hit_ratio"].as_f64().expect("a hit ratio");
        assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
        assert_eq!(
            element_text(&dom, "hit-ratio"),
            format!("{:.1} %", ratio * 100.0)
        );
        assert_eq!(stats["bytes"]["served"].as_u64(), Some(received));
        assert_eq!(
            parse_bytes(element_text(&dom, "bytes-served")),
            parse_bytes(&dashboard_bytes(received))
        );
        let fetched = stats["bytes"]["fetched"].as_u64().unwrap();
        let avoided = received.saturating_sub(fetched);
        assert_eq!(stats["bytes"]["avoided"].as_u64(), Some(avoided));
        assert_eq!(
            element_text(&dom, "bytes-avoided"),
            dashboard_bytes(avoided)
        );
        let stored: u64 = crate_sizes.values().sum();
        assert_eq!(stats["storage"]["bytes"].as_u64(), Some(stored));
        assert_eq!(element_text(&dom, "storage"), dashboard_bytes(stored));
        // Index files are held compressed: the page shows both sizes (these
        // few small files are not much smaller gzip'd; see the benchmark).
        let memory = &stats["index_memory"];
        let (held, plain) = (
            memory["bytes"].as_u64().unwrap(),
            memory["plain_bytes"].as_u64().unwrap(),
        );
        assert!(held > 0 && plain > 0, "{memory}");
        assert_eq!(
            element_text(&dom, "index-memory-plain"),
            dashboard_bytes(plain)
        );
        assert_eq!(element_text(&dom, "upstream-pill"), "upstream: healthy");
        assert!(
            dom.contains("<td>abc</td>"),
            "most requested crates missing"
        );
        // abc depends on a: fetching abc prefetched a, which was asked for next.
        assert_eq!(element_text(&dom, "prefetch-ratio"), "100.0 %");
        // Every card says what it shows.
        for label in [
            "Cache hit ratio",
            "Client requests",
            "Upstream bytes avoided",
            "Storage",
            "Upstream latency",
            "Prefetch useful",
            "Cache hits: index / crates",
            "Uptime",
        ] {
            assert!(dom.contains(&format!("<h3>{label}</h3>")), "card {label}");
        }
        assert_eq!(dom.matches("class=\"card kpi\"").count(), 8);
        // The four 404s, each with its path, apart from the failures.
        let missing = table_rows(&dom, "missing");
        assert_eq!(missing.len(), 4, "{missing:?}");
        for path in MISSING {
            assert!(
                missing
                    .iter()
                    .any(|row| row[1] == format!("GET {path}") && row[2] == "404"),
                "{path} not listed: {missing:?}"
            );
        }
        assert_eq!(table_rows(&dom, "errors"), [["none"]]);
        // Upstream and version; the settings in use, secrets hidden.
        assert_eq!(
            element_text(&dom, "about-upstream"),
            upstream.url.replacen("://", "://***@", 1)
        );
        assert_eq!(
            element_text(&dom, "about-version"),
            env!("CARGO_PKG_VERSION")
        );
        let settings = table_rows(&dom, "settings");
        let setting = |key: &str| {
            settings
                .iter()
                .find(|row| row[0] == key)
                .unwrap_or_else(|| panic!("{key} not in {settings:?}"))
                .clone()
        };
        assert_eq!(
            setting("aws-secret-access-key"),
            [
                "aws-secret-access-key",
                "(set, hidden)",
                "environment variable AWS_SECRET_ACCESS_KEY"
            ]
        );
        assert_eq!(setting("index-ttl"), ["index-ttl", "60", "default"]);
        assert_eq!(setting("upstream")[2], "command line");
        for secret in [AWS_SECRET, UPSTREAM_PASSWORD] {
            assert!(!dom.contains(secret), "{secret} shown at {size:?}");
        }
    }
    // Nor is either in the JSON the page reads.
    for path in ["/api/stats", "/api/settings", "/api/crates"] {
        let body = mirror.get(path).await.text().await.unwrap();
        for secret in [AWS_SECRET, UPSTREAM_PASSWORD] {
            assert!(!body.contains(secret), "{secret} in {path}: {body}");
        }
    }

    // The cached crates, searched (a link opens the list with its search):
    // `ab` finds ab, with both its versions and their sizes, and abc.
    for size in [DESKTOP, PHONE] {
        let dom = dashboard_dom(&format!("{page}?crates=ab"), size, "s.cratesLoaded >= 1");
        let listed = table_rows(&dom, "crates");
        let names: Vec<&str> = listed.iter().map(|row| row[0].as_str()).collect();
        assert_eq!(names, ["ab", "abc"], "{listed:?}");
        let version = |name: &str, version: &str| {
            format!(
                "{version} ({})",
                dashboard_bytes(crate_sizes[&format!("{name} {version}")])
            )
        };
        assert_eq!(
            listed[0][1],
            format!("{}, {}", version("ab", "0.2.0"), version("ab", "0.1.0"))
        );
        let ab_bytes = crate_sizes["ab 0.2.0"] + crate_sizes["ab 0.1.0"];
        assert_eq!(listed[0][2], dashboard_bytes(ab_bytes));
        assert!(listed[0][3].ends_with(" ago"), "{listed:?}");
        assert_eq!(
            element_text(&dom, "crates-summary"),
            "matching “ab”: 2 crates, 3 versions, ".to_string()
                + &dashboard_bytes(ab_bytes + crate_sizes["abc 1.0.0"])
        );
    }
    let json =
        support::json_of(support::client().get(format!("{}/api/crates?q=AB&page=1", mirror.url)))
            .await;
    assert_eq!(json["crates_matching"], 2);
    assert_eq!(json["crates"][0]["versions"][0]["version"], "0.2.0");
    assert_eq!(
        json["crates"][0]["versions"][0]["size"].as_u64(),
        Some(crate_sizes["ab 0.2.0"])
    );
    assert!(json["crates"][0]["last_access_ms"].as_u64().is_some());
    let wrong = mirror.get("/api/crates?page=many").await;
    assert_eq!(wrong.status(), 400);

    for (name, size) in [
        ("dashboard-desktop.png", (1280, 1800)),
        ("dashboard-phone.png", (375, 4200)),
    ] {
        screenshot(&page, name, size);
    }
    screenshot(
        &format!("{page}?crates=ab"),
        "dashboard-crates-phone.png",
        (375, 2600),
    );
}

/// An idle mirror's dashboard shows no traffic however long it polls: its
/// own requests for figures are not client requests.
#[tokio::test]
async fn an_idle_dashboard_shows_no_requests_per_second() {
    let upstream = TestUpstream::start(&graph_registry()[..2], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let page = format!("{}/", mirror.url);
    // Four polls: three rates computed, eight seconds of the page's own traffic.
    let dom = dashboard_dom(&page, PHONE, "s.loaded >= 5");
    let polls: u32 = state_value(&dom, "loaded").parse().unwrap();
    assert_eq!(element_text(&dom, "rps"), "0.0");
    assert_eq!(element_text(&dom, "requests"), "0");
    // The polls happened (the metrics count them under their own route).
    let samples = mirror.metrics().await;
    assert!(
        sum_matching(
            &samples,
            "crate_mirror_http_requests_total",
            "route=\"stats\""
        ) >= f64::from(polls)
    );
    assert_eq!(mirror.stats().await["requests"]["client"], 0);
}

/// The opening tag of the element with `id` in a dumped DOM.
fn element_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let open = dom[..at].rfind('<').unwrap();
    &dom[open..at + dom[at..].find('>').unwrap() + 1]
}

/// A private mirror with a client and a metrics token; returns it and the tokens.
fn private_mirror(upstream: &TestUpstream) -> (Mirror, String, String) {
    let (client_token, client_hash) = new_token();
    let (metrics_token, metrics_hash) = new_token();
    let mirror = Mirror::builder(&upstream.url)
        .private(&client_hash)
        .args(&["--metrics-tokens", &metrics_hash])
        .start();
    (mirror, client_token, metrics_token)
}

#[tokio::test]
async fn a_private_dashboard_asks_for_a_token_instead_of_showing_blank_cards() {
    let upstream = TestUpstream::start(&graph_registry()[..2], DlStyle::Plain);
    let (mirror, _, metrics_token) = private_mirror(&upstream);
    // What the page meets: its figures refuse it; the page and the snippet
    // are open.
    for path in ["/api/stats", "/api/settings", "/api/crates"] {
        assert_eq!(mirror.get(path).await.status(), 401, "{path}");
    }
    assert_eq!(mirror.get("/api/cargo-config").await.status(), 200);

    let page = format!("{}/", mirror.url);
    for size in [DESKTOP, PHONE] {
        let dom = dashboard_dom(&page, size, "s.locked === '1' && s.snippet === '1'");
        // The prompt shows, with its form; the empty cards do not.
        assert!(!element_tag(&dom, "locked").contains("hidden"), "{dom}");
        assert_eq!(element_text(&dom, "locked-title"), "This mirror is private");
        assert!(
            element_text(&dom, "locked-message").contains("paste a client or metrics token"),
            "{dom}"
        );
        assert!(element_tag(&dom, "token-input").contains("type=\"password\""));
        assert!(dom.contains("data-locked=\"1\""), "the page never locked");
        for guarded in ["figures", "tables", "crates-card", "about-card"] {
            assert!(element_tag(&dom, guarded).contains("hidden"), "{guarded}");
        }
        // The snippet still names the index, as a registry cargo sends the
        // token to, and says how to give cargo the token.
        assert_eq!(
            element_text(&dom, "index-url"),
            format!("{}/index/", mirror.url)
        );
        let snippet = unescape(element_text(&dom, "snippet-text"));
        assert!(snippet.contains("[registries.mirror]"), "{snippet}");
        assert!(
            snippet.contains("credential-provider = [\"cargo:token\"]"),
            "{snippet}"
        );
        assert!(!element_tag(&dom, "snippet-login").contains("hidden"));
        assert_eq!(
            element_text(&dom, "snippet-login-command"),
            "cargo login --registry mirror"
        );
        assert_eq!(
            element_text(&dom, "snippet-token-env"),
            "CARGO_REGISTRIES_MIRROR_TOKEN"
        );
    }

    // Refusals are counted under the route that refused them (the gate runs
    // inside the route), and listed among the failures, not the missing.
    assert_eq!(mirror.get("/index/1/a").await.status(), 401);
    let text = support::client()
        .get(format!("{}/metrics", mirror.url))
        .bearer_auth(&metrics_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_samples(&text);
    for route in ["stats", "index"] {
        let refused = format!(
            "crate_mirror_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"401\"}}"
        );
        assert!(sample(&samples, &refused) >= 1.0, "{refused}");
    }
    let stats = mirror
        .stats_authorized(Some(&format!("Bearer {metrics_token}")))
        .await;
    let failures = stats["recent_errors"]["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|e| e["path"] == "/index/1/a" && e["status"] == 401),
        "{failures:?}"
    );
    assert_eq!(stats["recent_errors"]["missing"], serde_json::json!([]));

    screenshot(&page, "dashboard-private.png", (1280, 800));
    screenshot(&page, "dashboard-private-phone.png", PHONE);
}

/// The private-mode snippet as the dashboard shows it, pasted as it is into
/// a new CARGO_HOME's config.toml, works with real cargo: with the token
/// from `CARGO_REGISTRIES_MIRROR_TOKEN`, and from `cargo login --registry
/// mirror`, as the page says.
#[tokio::test]
async fn the_private_snippet_works_with_cargo_as_pasted() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let (mirror, token, _) = private_mirror(&upstream);
    let config =
        support::json_of(support::client().get(format!("{}/api/cargo-config", mirror.url))).await;
    let snippet = config["config_toml"].as_str().unwrap().to_string();
    // What the page renders is that text.
    let dom = dashboard_dom(&format!("{}/", mirror.url), DESKTOP, "s.snippet === '1'");
    assert_eq!(unescape(element_text(&dom, "snippet-text")), snippet);
    assert_eq!(config["token_env"], "CARGO_REGISTRIES_MIRROR_TOKEN");
    assert_eq!(config["login_command"], "cargo login --registry mirror");

    let target = tempfile::tempdir().unwrap();
    let cargo = support::cargo::cargo_binary();
    // Without the token cargo asks for it, naming the registry (no
    // complaint about a missing credential provider).
    let home = CargoHome::with_config(&snippet);
    let app = project(&graph_project_manifest());
    let refused = support::cargo::run_with_env(
        &home,
        app.path(),
        target.path(),
        &["generate-lockfile"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("no token found for `mirror`"), "{stderr}");
    assert!(!stderr.contains("credential-provider"), "{stderr}");
    // With the token in the environment.
    let with_env = support::cargo::run_with_env(
        &home,
        app.path(),
        target.path(),
        &["fetch"],
        &[("CARGO_REGISTRIES_MIRROR_TOKEN", token.as_ref())],
    );
    support::assert_success(&with_env);
    assert!(std::fs::read_to_string(app.path().join("Cargo.lock"))
        .unwrap()
        .contains("MixedCase"));

    // With `cargo login --registry mirror`, the token pasted on its input.
    let home = CargoHome::with_config(&snippet);
    let mut login = Command::new(&cargo)
        .args(["login", "--registry", "mirror"])
        .env("CARGO_HOME", home.path())
        .env_remove("CARGO_REGISTRIES_MIRROR_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    support::assert_success(&login.wait_with_output().unwrap());
    let app = project(&graph_project_manifest());
    let logged_in = support::cargo::run_with_env(&home, app.path(), target.path(), &["fetch"], &[]);
    support::assert_success(&logged_in);
}

/// The dashboard at `page` in a window of `size`, kept as `name` in the
/// screenshot folder (`target/tmp/dashboard/`) to look at.
fn screenshot(page: &str, name: &str, size: (u32, u32)) {
    support::browser::screenshot(page, size.0, size.1, &screenshot_dir().join(name));
}

#[test]
fn shipped_prometheus_config_and_alert_rules_pass_promtool() {
    // The shipped config as it is (its token lines, commented out, are
    // checked uncommented by tests/deploy_files.rs).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let dir = tempfile::tempdir().unwrap();
    for file in ["prometheus.yml", "alerts.yml", "alerts.test.yml"] {
        std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
    }
    let dir = dir.path();
    // `test rules`: the shipped unit tests of the alerts (a full cache that
    // eviction keeps near its quota raises nothing; failing eviction, storage
    // stuck over the quota and churn do; a total upstream outage, a circuit
    // stuck open and a burst of 5xx page, healthy traffic does not).
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
