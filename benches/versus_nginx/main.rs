//! Side-by-side benchmark: `crate-mirror` against nginx `proxy_cache`, the
//! classic way to cache a registry, on the same machine in one run.
//!
//! Run with `cargo bench --bench versus_nginx` (20 s per load run, 64
//! connections) or e.g. `cargo bench --bench versus_nginx -- --duration 5
//! --connections 16`. Needs Debian's `nginx` and `wrk` on the PATH. Everything
//! stays on 127.0.0.1, and every load loop is bounded in time.
//!
//! 1. generates a registry: 600 index files whose sizes spread like a real
//!    registry's (most a few versions, a few with thousands of versions and
//!    around a megabyte), plus 40 crates of 4 KiB to 2 MiB and two large
//!    crates of 8 and 30 MiB,
//! 2. serves it from the integration tests' `TestUpstream` with 50 ms added to
//!    every request, as a distant upstream would,
//! 3. builds and starts the release mirror, and nginx with
//!    `benches/nginx-proxy-cache.conf.template` (proxy_cache, gzip, keepalive
//!    to the upstream, `worker_processes auto`), both in front of it,
//! 4. for each server in turn: warms it (every index file, plain and gzip,
//!    and every crate once), checks that it now answers from its cache, then
//!    drives `wrk --latency` with `benches/rotate_paths.lua` rotating over all
//!    index paths, plain and then with `Accept-Encoding: gzip`, and over the
//!    crate downloads; records requests/s, latency percentiles, the server's
//!    CPU time and memory (PSS, so nginx's shared cache zone counts once),
//!    and how many requests reached the upstream,
//! 5. measures a 30 MiB crate download on a MISS, with the upstream's body
//!    slowed to take seconds: time to the first body byte and to the end,
//!    directly from the upstream, through a fresh mirror (without and with
//!    the crate's index file cached) and through a fresh nginx (then a HIT
//!    through each),
//! 6. prints a summary and writes `benches/results/versus_nginx.md`.
//!
//! Options: `--duration SECS` and `--connections N` of each load run,
//! `--threads N` of wrk (default: one per CPU), `--nginx-workers N` (default
//! `auto`), `--nginx-template FILE` to measure a variant of the nginx
//! configuration, `--mirror-binary FILE` to use a given binary (or a wrapper
//! script that changes its environment) instead of building the release
//! binary, `--no-ttfb` to skip step 5, `--results FILE` to write the report
//! elsewhere.
//!
//! Each server is warmed right before its own runs so that both are measured
//! with equally fresh caches: index files are fresh for 60 s in both, and the
//! default two 20 s index runs finish inside that window. Longer runs see
//! revalidations in both; the upstream request counts show them.
//!
//! The process exits non-zero if any load request failed.

mod generated;
mod nginx;
mod procfs;
mod report;
mod ttfb;
mod warm;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::bench::{build_mirror_binary, fail, release_mirror, start_mirror, Flags};

use crate::generated::{bench_registry, upstream_addr};
use crate::nginx::start_nginx;
use crate::procfs::clock_ticks_per_second;
use crate::report::{command_line, median_runs, Report};
use crate::ttfb::ttfb_phase;
use crate::warm::{check_cached, encoding_check, warm};
use crate::wrk::{load_runs, PathsFiles, RunResult, Scenario};

/// Index files served from the upstream (besides those of the download crates).
pub const INDEX_FILES: usize = 600;
/// Size bands of the index files: (share in percent, least and most versions).
/// Most crates have a handful of versions; a few have thousands, which with
/// their dependency lists makes index files of several hundred KB to ~1 MB.
pub const VERSION_BANDS: [(usize, usize, usize); 4] =
    [(70, 1, 8), (20, 9, 60), (8, 61, 400), (2, 600, 2000)];
/// Crates downloaded in the downloads run, log-spaced in size between these.
pub const DOWNLOAD_CRATES: usize = 40;
pub const DOWNLOAD_MIN_BYTES: usize = 4 * 1024;
pub const DOWNLOAD_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Large crates: warmed and served, but not part of the downloads run, whose
/// figures they would turn into a bulk-copy test.
pub const LARGE_CRATES: [(&str, usize); 2] = [("large-crate", 8 << 20), ("huge-crate", 30 << 20)];
/// The crate of the MISS measurement.
pub const TTFB_CRATE: &str = "huge-crate";
/// Added to every upstream response: a registry across the internet.
pub const UPSTREAM_DELAY_MS: u64 = 50;
/// Pause between the upstream's 16 KiB body chunks during the MISS
/// measurement, so that a 30 MiB body takes several seconds to arrive.
pub const CHUNK_DELAY_MS: u64 = 2;
/// Concurrency of the warm-up fetches.
/// Per-request timeout of the warm-up and MISS fetches (not of wrk).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// wrk's own per-request timeout: a slower response counts as an error.
pub const WRK_TIMEOUT_S: u64 = 10;
/// How often the servers' memory is sampled during a run.
/// The mirror's version line, for the report.
pub const MIRROR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Command-line options (after cargo's own `--bench`).
pub struct Options {
    pub duration: Duration,
    pub connections: usize,
    /// wrk threads: one per CPU, as the three programs share them anyway.
    pub threads: usize,
    /// `worker_processes`; `auto` when not given.
    pub nginx_workers: Option<usize>,
    /// A mirror binary to use instead of building the release binary: to
    /// compare builds, or a wrapper script that changes the environment.
    pub mirror_binary: Option<PathBuf>,
    /// Where the Markdown report goes.
    pub results: PathBuf,
    /// Whether to run the MISS measurement (about 30 s).
    pub ttfb: bool,
    /// The nginx configuration template (to compare variants of it).
    pub nginx_template: PathBuf,
    /// The loads to run (all by default; a subset for profiling one of them).
    pub scenarios: Vec<Scenario>,
    /// Rounds of runs; each server's median round per load is reported.
    pub rounds: usize,
}

pub fn parse_options() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut options = Options {
        duration: Duration::from_secs(20),
        connections: 64,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        nginx_workers: None,
        mirror_binary: None,
        results: root.join("benches/results/versus_nginx.md"),
        ttfb: true,
        nginx_template: root.join("benches/nginx-proxy-cache.conf.template"),
        scenarios: Scenario::ALL.to_vec(),
        rounds: 3,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--duration" => options.duration = Duration::from_secs(flags.count("--duration")),
            "--connections" => options.connections = flags.count("--connections") as usize,
            "--threads" => options.threads = flags.count("--threads") as usize,
            "--nginx-workers" => {
                options.nginx_workers = Some(flags.count("--nginx-workers") as usize)
            }
            "--mirror-binary" => {
                options.mirror_binary = Some(PathBuf::from(flags.text("--mirror-binary")))
            }
            "--results" => options.results = PathBuf::from(flags.text("--results")),
            "--no-ttfb" => options.ttfb = false,
            "--rounds" => options.rounds = flags.count("--rounds") as usize,
            "--nginx-template" => {
                options.nginx_template = PathBuf::from(flags.text("--nginx-template"))
            }
            "--scenarios" => {
                options.scenarios = flags
                    .text("--scenarios")
                    .split(',')
                    .map(|name| {
                        Scenario::from_name(name).unwrap_or_else(|| {
                            fail(&format!("--scenarios: {name}? (identity, gzip, downloads)"))
                        })
                    })
                    .collect()
            }
            other => eprintln!("versus_nginx: ignoring unknown argument {other:?}"),
        }
    }
    // wrk gives each thread a share of the connections; it needs one each.
    options.threads = options.threads.min(options.connections);
    options
}

pub fn log(message: &str) {
    eprintln!("versus_nginx: {message}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = parse_options();
    for (tool, args) in [("wrk", ["--version"]), ("nginx", ["-v"])] {
        if command_line(tool, &args).is_none() {
            fail(&format!(
                "{tool} is not installed (apt-get install -y {tool})"
            ));
        }
    }
    let binary = match &options.mirror_binary {
        Some(binary) => binary.clone(),
        None => build_mirror_binary(),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks_per_second = clock_ticks_per_second();

    let generating = Instant::now();
    let registry = bench_registry();
    log(&format!(
        "upstream with {} index files generated in {:.1?}",
        registry.index_paths.len(),
        generating.elapsed()
    ));
    let files = PathsFiles::write(&registry);
    let upstream = &registry.upstream;
    upstream
        .switches
        .delay_ms
        .store(UPSTREAM_DELAY_MS, Ordering::SeqCst);

    // Both start now; each is warmed right before its own runs (see above).
    // Clients wait for revalidation past the TTL (no serving while updating),
    // so that each round's warm-up leaves every file fresh before its runs.
    let mirror =
        start_mirror(release_mirror(&binary, &upstream.url).args(&["--index-max-stale", "0"]));
    let nginx = start_nginx(
        &options.nginx_template,
        upstream_addr(upstream),
        options.nginx_workers,
    );
    let nginx_workers = nginx.pids().len().saturating_sub(1);
    log(&format!(
        "mirror at {}, nginx at {} ({} processes besides the master)",
        mirror.url, nginx.url, nginx_workers
    ));

    let largest = &registry.largest_index;
    let upstream_base = upstream.url.trim_end_matches("/index/");
    let mut encodings = vec![encoding_check("upstream", upstream_base, largest).await];
    let mirror_pids = vec![mirror.pid()];
    let nginx_pids = nginx.pids();
    let servers = [
        ("crate-mirror", mirror.url.as_str(), "x-cache", &mirror_pids),
        ("nginx", nginx.url.as_str(), "x-cache-status", &nginx_pids),
    ];
    // Rounds alternate which server goes first, so that a drift in the
    // machine's speed over the minutes of the bench favours neither.
    let mut rounds: [Vec<Vec<RunResult>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..options.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (server, url, header, pids) = servers[which];
            log(&format!(
                "round {} of {}: {server}",
                round + 1,
                options.rounds
            ));
            // Warmed (again) right before its runs: entries older than the
            // 60 s TTL are revalidated here, not during a run.
            warm(server, url, &registry).await;
            check_cached(server, url, header, &registry).await;
            if round == 0 {
                let encoding = encoding_check(server, url, largest).await;
                if encoding.gzip_encoding != "gzip" {
                    fail(&format!(
                        "{server} answered a gzip request with Content-Encoding {}",
                        encoding.gzip_encoding
                    ));
                }
                encodings.push(encoding);
            }
            let runs = tokio::task::block_in_place(|| {
                load_runs(
                    server,
                    url,
                    pids,
                    upstream,
                    &files,
                    &options,
                    ticks_per_second,
                )
            });
            rounds[which].push(runs);
        }
    }
    encodings[1..].sort_by_key(|e| e.source != "crate-mirror");
    let [mirror_rounds, nginx_rounds] = rounds;
    let mirror_runs = median_runs(&mirror_rounds);
    let nginx_runs = median_runs(&nginx_rounds);
    let errors: u64 = mirror_rounds
        .iter()
        .chain(&nginx_rounds)
        .flatten()
        .map(|r| r.wrk.errors())
        .sum();
    if errors > 0 {
        log(&format!("mirror log tail:\n{}", mirror.log_tail(20)));
        log(&format!(
            "nginx error log tail:\n{}",
            nginx.error_log_tail(20)
        ));
    }
    drop(mirror);
    drop(nginx);

    let timings = if options.ttfb {
        ttfb_phase(&binary, &registry, &options).await
    } else {
        Vec::new()
    };

    let report = Report {
        options: &options,
        registry: &registry,
        mirror: mirror_runs,
        nginx: nginx_runs,
        mirror_rounds,
        nginx_rounds,
        encodings,
        timings,
        cpus,
        // Workers, cache manager and cache loader are all children; the
        // loader exits after a minute, so count workers from the config.
        nginx_workers: options.nginx_workers.unwrap_or(cpus),
    };
    println!("{}", report.summary());
    let date = command_line("date", &[]).unwrap_or_else(|| "unknown date".into());
    if let Some(dir) = options.results.parent() {
        std::fs::create_dir_all(dir).expect("create the results dir");
    }
    std::fs::write(&options.results, report.markdown(&date)).expect("write the results");
    println!("results written to {}", options.results.display());

    if errors > 0 {
        log(&format!("{errors} load requests failed"));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
