//! The dashboard's figures against what happened: upstream bytes avoided by a
//! warm real-cargo fetch equal what its answers would have cost from the
//! upstream (an upstream that sends index files plain, and one that gzips
//! them, across a restart); the in-memory index figure moves with requests
//! whatever encoding they take; a private dashboard's badge without a token,
//! in headless Chromium; and the warning, at start and on the page, that a
//! private mirror on a plain-http public URL has its tokens sent in clear.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use support::browser::Browser;
use support::cargo::{new_token, project, CargoHome};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry, CrateSpec};
use support::upstream::{gzip_of, DlStyle, TestUpstream};

/// `bytes.avoided` of `/api/stats`.
async fn avoided(mirror: &Mirror) -> u64 {
    let stats = mirror.stats().await;
    stats["bytes"]["avoided"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bytes.avoided in {stats}"))
}

/// Requests `config.json` answered so far (cargo asks for it on each run).
async fn config_requests(mirror: &Mirror) -> u64 {
    let samples = mirror.metrics().await;
    samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with("crate_mirror_http_requests_total{")
                && series.contains("route=\"config\"")
                && series.contains("method=\"GET\"")
                && series.contains("status=\"200\"")
        })
        .map(|(_, n)| *n as u64)
        .sum()
}

/// The index files and crate files the upstream was asked for since its
/// `from`th request, by path (`config.json` aside).
fn upstream_paths(upstream: &TestUpstream, from: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut index, mut crates) = (BTreeSet::new(), BTreeSet::new());
    for seen in upstream.seen().split_off(from) {
        if seen.path.ends_with("/config.json") {
            continue;
        }
        if seen.path.contains("/dl/") {
            crates.insert(seen.path);
        } else {
            index.insert(seen.path);
        }
    }
    (index, crates)
}

/// What the upstream sends for the index file at `path` (`.../index/3/a/abc`):
/// its body, gzip'd as it gzips when `gzips`.
fn index_cost(upstream: &TestUpstream, path: &str, gzips: bool) -> u64 {
    let name = path.rsplit('/').next().unwrap();
    let body = upstream
        .index_body(name)
        .unwrap_or_else(|| panic!("the upstream has no {name}"));
    if gzips {
        gzip_of(body.as_bytes()).len() as u64
    } else {
        body.len() as u64
    }
}

/// A fresh CARGO_HOME's `cargo ARGS` in the graph project with `lock` as its
/// lock file (when given), through the sparse index at `index_url`; returns
/// the lock file after.
fn cargo(index_url: &str, lock: Option<&str>, target: &Path, args: &[&str]) -> String {
    let app = project(&graph_project_manifest());
    if let Some(lock) = lock {
        std::fs::write(app.path().join("Cargo.lock"), lock).unwrap();
    }
    CargoHome::new(index_url).run_ok(app.path(), target, args);
    std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap()
}

/// The mirror's own `config.json`, in bytes (what cargo is sent for it).
/// Asking for it counts as a client's request.
async fn config_len(mirror: &Mirror) -> u64 {
    mirror
        .get("/index/config.json")
        .await
        .bytes()
        .await
        .unwrap()
        .len() as u64
}

/// `avoided` and `config.json` requests, now.
async fn figures(mirror: &Mirror) -> (u64, u64) {
    (avoided(mirror).await, config_requests(mirror).await)
}

/// A warm fetch (a new CARGO_HOME, so every index file and crate is asked
/// for, and all are answered from the mirror) avoids exactly what those
/// answers cost from the upstream: each index file as the upstream sends it
/// (plain from one upstream, gzip'd from another, across a restart), each
/// crate file, and `config.json` as sent; the cold fetch before it avoided
/// only its `config.json` (every index file and crate was a miss). Before,
/// index files the upstream sent plain counted as fetched plain but served
/// gzip'd, and the cold fetch left the figure at 0.
#[tokio::test]
async fn a_warm_cargo_fetch_avoids_what_its_answers_cost_from_the_upstream() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let target = temp.path().join("target");
    // One lock file for every fetch, made from the upstream itself, so that
    // each fetch asks for the same files.
    let lock = cargo(&upstream.url, None, &target, &["generate-lockfile"]);
    let fetch = |mirror: &Mirror| cargo(&mirror.index_url(), Some(&lock), &target, &["fetch"]);
    // Prefetch off: the cold fetch's misses are the files cargo asked for.
    let start = || {
        Mirror::builder(&upstream.url)
            .data_dir(&data)
            .args(&["--prefetch", "off"])
            .start()
    };
    let mirror = start();

    // Cold: everything from the upstream, which sends index files plain.
    let asked_before = upstream.seen().len();
    fetch(&mirror);
    let (index, crates) = upstream_paths(&upstream, asked_before);
    assert!(
        index.len() >= 20 && crates.len() >= 20,
        "{index:?} {crates:?}"
    );
    let crate_bytes: u64 = mirror
        .stored_files(".crate")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let (cold, cold_configs) = figures(&mirror).await;
    let config = config_len(&mirror).await;
    assert!(cold_configs >= 1);
    assert_eq!(
        cold,
        cold_configs * config,
        "the cold fetch avoided nothing else"
    );

    // Warm, in the same process.
    let asked_before = upstream.seen().len();
    let (before, configs_before) = figures(&mirror).await;
    fetch(&mirror);
    assert_eq!(
        upstream_paths(&upstream, asked_before),
        Default::default(),
        "the warm fetch asked the upstream for nothing"
    );
    let (after, configs_after) = figures(&mirror).await;
    let plain_index: u64 = index.iter().map(|p| index_cost(&upstream, p, false)).sum();
    let expected = plain_index + crate_bytes + (configs_after - configs_before) * config;
    assert!(after > before);
    assert_eq!(
        after - before,
        expected,
        "index files {plain_index}, crates {crate_bytes}"
    );
    mirror.stop();

    // An upstream that gzips: the same files, now as it sends them, fetched
    // by a mirror on a new data dir, then served warm by that mirror
    // restarted (which knows whose gzip bytes it holds from its store).
    upstream
        .switches
        .gzip_index
        .store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::remove_dir_all(&data).unwrap();
    let mirror = start();
    fetch(&mirror);
    mirror.stop();
    let mirror = start();
    let asked_before = upstream.seen().len();
    fetch(&mirror);
    assert_eq!(upstream_paths(&upstream, asked_before), Default::default());
    let (warm, configs) = figures(&mirror).await;
    let gzip_index: u64 = index.iter().map(|p| index_cost(&upstream, p, true)).sum();
    assert!(gzip_index < plain_index);
    assert_eq!(
        warm,
        gzip_index + crate_bytes + configs * config_len(&mirror).await,
        "index files {gzip_index}, crates {crate_bytes}"
    );
}

/// `index_memory` of `/api/stats` as (bytes held, plain bytes), checked
/// against the `/metrics` gauges.
async fn index_memory(mirror: &Mirror) -> (u64, u64) {
    let stats = mirror.stats().await;
    let memory = &stats["index_memory"];
    let figures = (
        memory["bytes"].as_u64().unwrap(),
        memory["plain_bytes"].as_u64().unwrap(),
    );
    let gauges = mirror.metrics().await;
    assert_eq!(
        (
            gauges["crate_mirror_index_memory_bytes"] as u64,
            gauges["crate_mirror_index_memory_plain_bytes"] as u64
        ),
        figures
    );
    figures
}

/// The in-memory index figure follows what memory holds as soon as a file
/// is there, whatever encoding the client took. Before, the bytes held
/// stood at 0 after requests without gzip until some later lookup.
#[tokio::test]
async fn the_memory_figure_moves_with_requests_without_gzip() {
    let specs = [
        CrateSpec::new("alpha", "1.0.0"),
        CrateSpec::new("bravo", "1.0.0"),
    ];
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    assert_eq!(index_memory(&mirror).await, (0, 0));

    // The test's client asks without Accept-Encoding: served plain.
    let mut plain_total = 0;
    let mut previous = 0;
    for name in ["alpha", "bravo"] {
        let path = format!("/index/{}/{}/{name}", &name[..2], &name[2..4]);
        let response = mirror.get(&path).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none());
        plain_total += response.bytes().await.unwrap().len() as u64;
        let (held, plain) = index_memory(&mirror).await;
        assert!(held > previous, "{name}: {held} held, {previous} before");
        assert_eq!(plain, plain_total);
        previous = held;
        // A hit, plain again, and one with gzip: the same file, the same figure.
        assert_eq!(mirror.get(&path).await.status(), 200);
        assert_eq!(index_memory(&mirror).await, (held, plain));
        let gzip = support::client()
            .get(format!("{}{path}", mirror.url))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gzip.headers()["content-encoding"], "gzip");
        assert_eq!(index_memory(&mirror).await, (held, plain));
    }
}

/// Opens the dashboard and waits until `ready` (a condition on `s`, the
/// page's `#dashboard-state` data); fails on script errors.
fn open_dashboard(mirror: &Mirror, ready: &str) -> Browser {
    let mut browser = Browser::open(&format!("{}/", mirror.url), 1280, 1000);
    wait_for(&mut browser, ready);
    browser
}

fn wait_for(browser: &mut Browser, ready: &str) {
    let state = "document.getElementById('dashboard-state').dataset";
    browser.wait_until(
        &format!("(s => {ready})({state})"),
        Duration::from_secs(30),
        &format!("JSON.stringify({state})"),
    );
    assert_eq!(
        browser.eval(&format!("{state}.errors")),
        "0",
        "the page reported script errors"
    );
}

/// The text of the element `id`, as the page shows it.
fn text(browser: &mut Browser, id: &str) -> String {
    let value = browser.eval(&format!("document.getElementById('{id}').textContent"));
    value
        .as_str()
        .unwrap_or_else(|| panic!("no #{id}"))
        .to_string()
}

fn hidden(browser: &mut Browser, id: &str) -> bool {
    browser.eval(&format!("document.getElementById('{id}').hidden")) == serde_json::json!(true)
}

/// Pastes `token` into the page's form and waits for the figures.
fn give_token(browser: &mut Browser, token: &str) {
    browser.eval(&format!(
        "document.getElementById('token-input').value = {token:?}; \
         document.getElementById('token-form').requestSubmit(); true"
    ));
    wait_for(browser, "s.locked === '0' && Number(s.loaded) >= 1");
}

/// A private dashboard without a token says that the figures need one,
/// not that the upstream does (the upstream needs nothing from the page);
/// with a token its badge tells the upstream's health as a public one's.
#[tokio::test]
async fn a_private_dashboard_badge_says_the_figures_need_a_token() {
    let upstream = TestUpstream::start(&graph_registry()[..2], DlStyle::Plain);
    let (token, hash) = new_token();
    let mirror = Mirror::builder(&upstream.url).private(&hash).start();
    let mut browser = open_dashboard(&mirror, "s.locked === '1'");
    assert_eq!(text(&mut browser, "upstream-pill"), "figures need a token");

    give_token(&mut browser, &token);
    let badge = text(&mut browser, "upstream-pill");
    assert!(badge.starts_with("upstream: "), "{badge}");
    // A client's request, and the badge says how the upstream answered.
    let index = support::client()
        .get(format!("{}/index/1/a", mirror.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    browser.wait_until(
        "document.getElementById('upstream-pill').textContent === 'upstream: healthy'",
        Duration::from_secs(30),
        "document.getElementById('upstream-pill').textContent",
    );
    // Its public URL is on loopback: nothing is sent in clear.
    assert!(hidden(&mut browser, "tokens-in-clear"));
}

/// The start's warning about tokens in clear, counted in the log once the
/// mirror has stopped (so that every line it wrote is there).
fn clear_token_warnings(mut mirror: Mirror) -> (usize, String) {
    mirror.terminate();
    assert!(mirror.wait_exit(Duration::from_secs(10)).is_some());
    let log = mirror.log();
    assert!(log.contains("crate-mirror started"), "{log}");
    (log.matches("tokens travel in clear").count(), log)
}

/// A private mirror whose public URL is plain http to another machine warns
/// at start, once, that its tokens travel in clear, and its dashboard says
/// so; with an https public URL, or one on loopback, neither.
#[tokio::test]
async fn a_private_mirror_on_plain_http_warns_that_tokens_travel_in_clear() {
    let upstream = TestUpstream::start(&graph_registry()[..2], DlStyle::Plain);
    let (token, hash) = new_token();
    let private_at = |public_url: &str| {
        Mirror::builder(&upstream.url)
            .args(&["--auth-tokens", &hash, "--public-url", public_url])
            .start()
    };

    let mirror = private_at("http://mirror.example.com");
    // The page (asked for by a loopback name, which it answers to).
    let mut browser = open_dashboard(&mirror, "s.locked === '1'");
    give_token(&mut browser, &token);
    assert!(!hidden(&mut browser, "tokens-in-clear"));
    assert!(text(&mut browser, "tokens-in-clear").contains("Tokens travel in clear"));
    let stats = mirror
        .stats_authorized(Some(&format!("Bearer {token}")))
        .await;
    assert_eq!(stats["mirror"]["tokens_in_clear"], true);
    drop(browser);
    let (warnings, log) = clear_token_warnings(mirror);
    assert_eq!(warnings, 1, "{log}");
    let line = log
        .lines()
        .find(|line| line.contains("tokens travel in clear"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("http://mirror.example.com"), "{line}");

    let mut quiet = BTreeMap::new();
    for public_url in ["https://mirror.example.com", "http://localhost:1"] {
        let mirror = private_at(public_url);
        let stats = mirror
            .stats_authorized(Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(stats["mirror"]["tokens_in_clear"], false, "{public_url}");
        quiet.insert(public_url, clear_token_warnings(mirror));
    }
    for (public_url, (warnings, log)) in quiet {
        assert_eq!(warnings, 0, "{public_url}: {log}");
    }
}
