//! Cold and warm resolution of a large dependency graph: `cargo generate-lockfile`
//! against a test upstream that adds 50 ms to every request, directly and
//! through the mirror (cold with prefetch off, cold with prefetch on, and warm).
//! Run with `cargo bench --bench resolution [-- --runs N]`; writes
//! `benches/results/resolution.md`.
//!
//! Its "direct" is plain HTTP/1.1 on a generated graph, which is not what users
//! have (HTTPS with HTTP/2 from a real index): read it as a study of prefetch
//! on a deep graph. The benchmark of record is `benches/real_world.rs`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::bench::{build_mirror_binary, code_measured, fail, release_mirror, start_mirror};
use support::cargo::{project, run, CargoHome};
use support::registry::layered_graph;
use support::upstream::{DlStyle, TestUpstream};

/// Levels and width of the generated graph: 8 x 64 = 512 crates, 2 versions each.
const LEVELS: usize = 8;
const WIDTH: usize = 64;
const UPSTREAM_DELAY_MS: u64 = 50;

fn runs() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

struct Run {
    time: Duration,
    upstream_index_requests: usize,
    lockfile: String,
    prefetch: Option<serde_json::Value>,
}

impl Run {
    /// A run without prefetch figures (the cold, prefetching one adds them).
    fn new(time: Duration, lockfile: String, upstream_index_requests: usize) -> Self {
        Run {
            time,
            upstream_index_requests,
            lockfile,
            prefetch: None,
        }
    }
}

fn index_requests(upstream: &TestUpstream) -> usize {
    upstream.count_matching("/index/") - upstream.count("/index/config.json")
}

/// One `cargo generate-lockfile` with a fresh CARGO_HOME against `index_url`.
fn resolve(index_url: &str, manifest: &str) -> (Duration, String) {
    let home = CargoHome::new(index_url);
    let app = project(manifest);
    let target = tempfile::tempdir().expect("target dir");
    let started = Instant::now();
    let output = run(&home, app.path(), target.path(), &["generate-lockfile"]);
    let time = started.elapsed();
    if !output.status.success() {
        fail(&format!(
            "cargo generate-lockfile failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let lockfile = std::fs::read_to_string(app.path().join("Cargo.lock")).expect("Cargo.lock");
    (time, lockfile)
}

fn delayed_upstream(specs: &[support::registry::CrateSpec]) -> TestUpstream {
    let upstream = TestUpstream::start(specs, DlStyle::Plain);
    upstream
        .switches
        .delay_ms
        .store(UPSTREAM_DELAY_MS, Ordering::SeqCst);
    upstream
}

fn stats(url: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        support::json_of(support::client().get(format!("{url}/api/stats"))).await
    })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> ExitCode {
    let binary = build_mirror_binary();
    let (specs, manifest) = layered_graph(LEVELS, WIDTH);
    let runs = runs();
    eprintln!(
        "resolution: {} crates in {LEVELS} levels, upstream delay {UPSTREAM_DELAY_MS} ms, {runs} runs each",
        LEVELS * WIDTH
    );

    let mut direct = Vec::new();
    let mut cold_off = Vec::new();
    let mut cold_on = Vec::new();
    let mut warm = Vec::new();
    let mut reference: Option<String> = None;
    let mut check = |lockfile: &str, what: &str| match &reference {
        Some(expected) if expected != lockfile => fail(&format!("{what}: a different Cargo.lock")),
        Some(_) => {}
        None => reference = Some(lockfile.to_string()),
    };
    for round in 0..runs {
        eprintln!("resolution: round {}", round + 1);
        let upstream = delayed_upstream(&specs);
        let (time, lockfile) = resolve(&upstream.url, &manifest);
        check(&lockfile, "direct");
        direct.push(Run::new(time, lockfile, index_requests(&upstream)));

        let upstream = delayed_upstream(&specs);
        let mirror =
            start_mirror(release_mirror(&binary, &upstream.url).args(&["--prefetch", "off"]));
        let (time, lockfile) = resolve(&format!("{}/index/", mirror.url), &manifest);
        check(&lockfile, "cold, prefetch off");
        cold_off.push(Run::new(time, lockfile, index_requests(&upstream)));

        let upstream = delayed_upstream(&specs);
        let depth = LEVELS.to_string();
        let mirror = start_mirror(
            release_mirror(&binary, &upstream.url).args(&["--prefetch-depth", &depth]),
        );
        let index_url = format!("{}/index/", mirror.url);
        let (time, lockfile) = resolve(&index_url, &manifest);
        check(&lockfile, "cold, prefetch on");
        // Let stragglers finish before counting.
        std::thread::sleep(Duration::from_millis(500));
        cold_on.push(Run {
            prefetch: Some(stats(&mirror.url)["prefetch"].clone()),
            ..Run::new(time, lockfile, index_requests(&upstream))
        });

        // Counted, not assumed: what the warm resolve itself asked upstream.
        let before = index_requests(&upstream);
        let (time, lockfile) = resolve(&index_url, &manifest);
        check(&lockfile, "warm");
        warm.push(Run::new(time, lockfile, index_requests(&upstream) - before));
    }

    let t = |runs: &[Run]| median(runs.iter().map(|r| r.time).collect());
    let direct_t = t(&direct);
    let rows = [
        ("directly against the delayed upstream", &direct),
        ("through a cold mirror, prefetch off", &cold_off),
        ("through a cold mirror, prefetch on", &cold_on),
        ("through the warm mirror (fresh CARGO_HOME)", &warm),
    ];
    let mut report = format!(
        "# Resolution benchmark\n\nGenerated by `cargo bench --bench resolution` on {}, {} CPUs. `cargo generate-lockfile` with a fresh CARGO_HOME for a root depending on 4 crates of a layered graph: {} crates in {LEVELS} levels, each depending on 3 crates of the next level (plus a dev-dependency and an older major series that resolution does not need); the test upstream adds {UPSTREAM_DELAY_MS} ms to every request. Median of {runs} runs; every run produced the same Cargo.lock ({} packages).\n\n{}\n\nThe upstream here speaks plain HTTP/1.1 and the graph is generated, so \"direct\" is not what users have: the benchmark of record is `cargo bench --bench real_world` (`benches/results/real_world.md`).\n\n| resolution | time | vs direct | upstream index requests |\n| --- | --- | --- | --- |\n",
        String::from_utf8_lossy(&std::process::Command::new("date").output().map(|o| o.stdout).unwrap_or_default()).trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        LEVELS * WIDTH,
        direct[0].lockfile.matches("[[package]]").count() - 1,
        code_measured(),
    );
    for (label, runs) in rows {
        let time = t(runs);
        let requests = runs[0].upstream_index_requests;
        report.push_str(&format!(
            "| {label} | {:.2} s | {:.2}x | {} |\n",
            time.as_secs_f64(),
            time.as_secs_f64() / direct_t.as_secs_f64(),
            if requests == 0 {
                "0".to_string()
            } else {
                requests.to_string()
            }
        ));
    }
    let prefetch = cold_on[0].prefetch.clone().unwrap_or_default();
    report.push_str(&format!(
        "\nPrefetch in the first prefetch-on run: {} started, {} useful (later requested by cargo), useful ratio {}.\nUpstream index requests with prefetch / without: {:.2}.\n",
        prefetch["started"], prefetch["useful"], prefetch["useful_ratio"],
        cold_on[0].upstream_index_requests as f64 / cold_off[0].upstream_index_requests.max(1) as f64,
    ));
    println!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).expect("results dir");
    std::fs::write(dir.join("resolution.md"), report).expect("write results");
    ExitCode::SUCCESS
}
