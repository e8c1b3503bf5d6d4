//! Memory and disk held for cached index files (issue #18, "Keep index files
//! compressed"), measured for a baseline binary and a candidate in one run.
//!
//! **Fixture.** A test upstream (HTTPS, HTTP/2, gzip'd answers with ETags,
//! `bench/real_index.rs`) serves the real-index fixture's 626 files. A
//! release mirror (prefetch off, so only the files asked for are cached;
//! default `hot-cache-size`) is asked for every one of them with
//! `Accept-Encoding: gzip`, as cargo asks, a few at a time. Its RSS is read at
//! start and after a short settle; then it is stopped with SIGTERM (which
//! flushes sled) and `<data-dir>/sled` is measured: the sum of its file sizes
//! and the blocks allocated (as `du` counts). Both are held against the
//! issue's limits: RSS at most 40 MB + 1.3× the files' gzip size (level 6),
//! sled at most 8 MB + 1.5× it.
//!
//! **Synthetic.** An upstream serving N distinct index files (100,000 by
//! default) drawn from the fixture's size distribution: file k is the
//! fixture's file k mod 626 (in path order) with its `"name":"…"` fields
//! renamed `synth-NNNNNN`, gzip'd once by the bench at level 6 and served
//! gzip'd (as the fixture's upstream serves it; the plain bodies, about 7.5 GB
//! at 100,000, would not fit in memory). A mirror with default memory settings
//! fetches them in order, and after each step (10k, 50k, 100k) and a settle:
//! RSS, `/api/stats` (median and p90 of 100 calls one after another), the
//! mirror's own hot-cache figures if its `/metrics` has any, and how many of
//! the files fetched so far memory still holds: 1,000 of them, evenly spread,
//! are asked again, and those the mirror had to load from sled
//! (`index.store_loads` in `/api/stats`, the counter
//! `crate_mirror_index_store_loads_total`) were not in memory. `--index-ttl`
//! is a day there, so no file expires during the run and every answer is a
//! hit from memory or from sled, never a refresh.
//!
//! Run against the code before the change and this tree's (built here):
//!
//! ```text
//! cargo bench --bench compressed_index -- --before /tmp/crate-mirror-99b14e1
//! ```
//!
//! where `/tmp/crate-mirror-99b14e1` is a release build of commit 99b14e1
//! (`git worktree add /tmp/cm-before 99b14e1`, `cargo build --release --bin
//! crate-mirror` there with `CARGO_TARGET_DIR` set to this tree's `target`,
//! copy the binary, `git worktree remove /tmp/cm-before`). Other flags:
//! `--candidate PATH` (measure that binary instead of building this tree),
//! `--only fixture|synthetic`, `--files N`, `--steps 10000,50000,100000`,
//! `--sample N`, `--calls N`, `--hot-cache-size SIZE` (given to every mirror,
//! to tell the hot cache's share of RSS from the rest). Writes
//! `benches/results/compressed_index.md`, unless `--only` or
//! `--hot-cache-size` made it a study (then it prints only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use support::bench::real_index::{IndexFile, IndexFiles, RealIndex, RealUpstream, TestCa};
use support::bench::{
    api_stats, build_mirror_binary, code_measured, fail, fetch_all_at, http_client, index_path, ms,
    release_mirror, run_date, start_mirror, time_stats, write_results, Flags, Latency, PeakSampler,
    WARM_CONCURRENCY,
};
use support::mirror::Mirror;

const STEPS: [usize; 3] = [10_000, 50_000, 100_000];
/// Files asked again at each step to see how many memory still holds.
const SAMPLE: usize = 1_000;
/// `/api/stats` calls timed at each step.
const CALLS: u64 = 100;
/// "A few at a time" for the fixture: the figures are of what is held once
/// the files are in, not of a burst.
const FIXTURE_CONCURRENCY: usize = 4;
/// Requests at a time when the sample is asked again.
const SAMPLE_CONCURRENCY: usize = 8;
/// Between the last answer and the RSS reading: sled's background flush and
/// moka's pending work run, the allocator returns what it frees.
const SETTLE: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The issue's limits, in bytes (MB as the fixture's README counts them: 10^6).
const RSS_BASE: f64 = 40e6;
const RSS_FACTOR: f64 = 1.3;
const SLED_BASE: f64 = 8e6;
const SLED_FACTOR: f64 = 1.5;
const GZIP_LEVEL: u32 = 6;

/// A binary measured, by its role in the report.
struct Binary {
    label: &'static str,
    path: PathBuf,
}

/// What one binary held after caching the fixture.
struct FixtureFigures {
    rss_start: u64,
    rss: u64,
    rss_peak: u64,
    /// Bytes the mirror sent (gzip'd, as cargo receives them).
    served: u64,
    fetch_time: Duration,
    sled: DiskUse,
}

/// The size of a directory tree: file lengths and allocated blocks.
#[derive(Clone, Copy)]
struct DiskUse {
    apparent: u64,
    allocated: u64,
}

impl DiskUse {
    fn of(dir: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let mut usage = DiskUse {
            apparent: 0,
            allocated: 0,
        };
        for path in support::files_below(dir) {
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            usage.apparent += meta.len();
            // st_blocks counts 512-byte units whatever the block size.
            usage.allocated += meta.blocks() * 512;
        }
        usage
    }

    /// What is held against the limit: the larger, so that neither sparse
    /// files nor preallocated blocks flatter the figure.
    fn counted(self) -> u64 {
        self.apparent.max(self.allocated)
    }
}

/// One binary's figures at one step of the synthetic run.
struct StepFigures {
    files: usize,
    rss: u64,
    rss_peak: u64,
    fetch_time: Duration,
    stats: Latency,
    /// Of the sample asked again, answered `x-cache: HIT`.
    sample_hits: usize,
    /// Of the sample asked again, loaded from sled (not in memory).
    sample_loads: u64,
    /// The mirror's own hot-cache figures from `/metrics`, if it has any.
    hot_figures: Vec<(String, f64)>,
}

impl StepFigures {
    /// Files held in memory, estimated from the sample.
    fn held(&self, sample: usize) -> u64 {
        let kept = sample.saturating_sub(self.sample_loads as usize);
        (kept as f64 / sample.max(1) as f64 * self.files as f64).round() as u64
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn rss_bytes(mirror: &Mirror) -> u64 {
    mirror.status_kib("VmRSS") * 1024
}

fn verdict(figure: u64, limit: f64) -> &'static str {
    if (figure as f64) <= limit {
        "pass"
    } else {
        "**fail**"
    }
}

/// What the mirrors of one part share: the upstream (stopped when this is
/// dropped), the CA that vouches for it, and the flags given to every mirror
/// (`--hot-cache-size` if set).
struct Setup<'a> {
    upstream: RealUpstream,
    ca: &'a TestCa,
    args: &'a [&'a str],
}

impl<'a> Setup<'a> {
    fn start(files: IndexFiles, ca: &'a TestCa, args: &'a [&'a str]) -> Self {
        Setup {
            upstream: RealUpstream::start(files, ca),
            ca,
            args,
        }
    }

    /// A mirror run by `binary` on `data`, prefetch off.
    fn mirror(&self, binary: &Binary, data: &Path, args: &[&str]) -> Mirror {
        start_mirror(
            release_mirror(&binary.path, &self.upstream.index_url)
                .args(&["--prefetch", "off"])
                .args(self.args)
                .args(args)
                // The mirror's upstream client trusts the native roots, which
                // rustls reads from this file when it is set.
                .env("SSL_CERT_FILE", &self.ca.ca)
                .data_dir(data),
        )
    }
}

/// Fetches `paths` through the mirror with `Accept-Encoding: gzip`, ending
/// the bench on any failure; the bytes sent.
async fn fetch_or_fail(
    client: &reqwest::Client,
    mirror: &Mirror,
    paths: &[String],
    concurrency: usize,
) -> u64 {
    let (bytes, errors) = fetch_all_at(
        client,
        &mirror.url,
        paths,
        true,
        REQUEST_TIMEOUT,
        concurrency,
    )
    .await;
    if !errors.is_empty() {
        fail(&format!(
            "{} of {} requests failed, first: {}; mirror log:\n{}",
            errors.len(),
            paths.len(),
            errors[0],
            mirror.log_tail(20)
        ));
    }
    bytes
}

async fn fixture_run(binary: &Binary, setup: &Setup<'_>, paths: &[String]) -> FixtureFigures {
    let temp = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let data = temp.path().join("data");
    let mirror = setup.mirror(binary, &data, &[]);
    let pid = mirror.pid();
    let rss_start = rss_bytes(&mirror);
    let peak = PeakSampler::start(move || {
        support::procfs::proc_status_kib(pid, "VmRSS").map(|kib| kib * 1024)
    });
    let client = http_client(FIXTURE_CONCURRENCY);
    let started = Instant::now();
    let served = fetch_or_fail(&client, &mirror, paths, FIXTURE_CONCURRENCY).await;
    let fetch_time = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss = rss_bytes(&mirror);
    let rss_peak = peak.finish();
    let stored = api_stats(&client, &mirror.url).await["index_files_stored"].as_u64();
    if stored != Some(paths.len() as u64) {
        fail(&format!(
            "{}: {stored:?} index files stored of {}",
            binary.label,
            paths.len()
        ));
    }
    mirror.stop();
    FixtureFigures {
        rss_start,
        rss,
        rss_peak,
        served,
        fetch_time,
        sled: DiskUse::of(&data.join("sled")),
    }
}

/// The fixture's bodies in path order, each checked to open every line with
/// its own name (which the synthetic copies rename).
fn templates(files: &IndexFiles) -> Vec<String> {
    let mut paths: Vec<&String> = files.keys().collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = String::from_utf8_lossy(&files[path].body).into_owned();
            if let Some(line) = text
                .lines()
                .find(|line| !line.is_empty() && name_span(line).is_none())
            {
                fail(&format!(
                    "fixture {path}: a line that does not open with its name: {}",
                    line.chars().take(80).collect::<String>()
                ));
            }
            text
        })
        .collect()
}

/// Where an index line's own name stands: its first key is `"name"` (the
/// fixture writes some lines `{"name":"x"`, others `{"name": "x"`). Names
/// never hold a quote or an escape.
fn name_span(line: &str) -> Option<std::ops::Range<usize>> {
    let rest = line.strip_prefix("{\"name\":")?;
    let start = line.len() - rest.trim_start().len() + 1;
    let value = line[start - 1..].strip_prefix('"')?;
    Some(start..start + value.find('"')?)
}

/// `body` with every line's own name replaced by `name`; its dependencies'
/// names are left alone.
fn renamed(body: &str, name: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    for line in body.split_inclusive('\n') {
        match name_span(line) {
            Some(span) => {
                out.push_str(&line[..span.start]);
                out.push_str(name);
                out.push_str(&line[span.end..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

fn synthetic_name(k: usize) -> String {
    format!("synth-{k:06}")
}

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::new(GZIP_LEVEL),
    );
    encoder
        .write_all(body)
        .and_then(|_| encoder.finish())
        .map(Bytes::from)
        .unwrap_or_else(|e| fail(&format!("gzip in memory: {e}")))
}

/// The synthetic set: `count` files by upstream key, their mirror paths in
/// order, and their total plain and gzip'd sizes. Compressing is most of the
/// cost, spread over every CPU.
fn synthetic(templates: &[String], count: usize) -> (IndexFiles, Vec<String>, u64, u64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let made: Vec<Vec<(usize, String, IndexFile, u64)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|k| {
                            let template = &templates[k % templates.len()];
                            let name = synthetic_name(k);
                            let body = renamed(template, &name);
                            let path = index_path(&name);
                            let key = path.trim_start_matches("/index/").to_string();
                            // Distinct per file and stable: all an ETag must be.
                            let file =
                                IndexFile::gzip_only(gzip(body.as_bytes()), format!("\"{name}\""));
                            (k, key, file, body.len() as u64)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| fail("a synthetic file maker panicked"))
            })
            .collect()
    });
    let mut files = IndexFiles::with_capacity(count);
    let mut paths = vec![String::new(); count];
    let (mut plain, mut gzipped) = (0, 0);
    for (k, key, file, plain_len) in made.into_iter().flatten() {
        plain += plain_len;
        gzipped += file.gzip.len() as u64;
        paths[k] = format!("/index/{key}");
        files.insert(key, file);
    }
    (files, paths, plain, gzipped)
}

/// Asks for `paths` again; how many were answered `x-cache: HIT`.
async fn ask_again(client: &reqwest::Client, mirror: &Mirror, paths: &[String]) -> usize {
    let answers: Vec<Result<bool, String>> = futures_util::stream::iter(paths)
        .map(|path| async move {
            let url = format!("{}{path}", mirror.url);
            let response = client
                .get(&url)
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::ACCEPT_ENCODING, "gzip")
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("GET {url}: HTTP {}", response.status()));
            }
            let hit = response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v.as_bytes() == b"HIT");
            response
                .bytes()
                .await
                .map_err(|e| format!("GET {url}: body: {e}"))?;
            Ok(hit)
        })
        .buffer_unordered(SAMPLE_CONCURRENCY)
        .collect()
        .await;
    let mut hits = 0;
    for answer in answers {
        match answer {
            Ok(hit) => hits += usize::from(hit),
            Err(e) => fail(&format!("asking the sample again: {e}")),
        }
    }
    hits
}

/// The mirror's own figures for index files in memory, if `/metrics` has any
/// (the code before the change has none).
async fn hot_figures(client: &reqwest::Client, mirror: &Mirror) -> Vec<(String, f64)> {
    let text = match client.get(format!("{}/metrics", mirror.url)).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(e) => fail(&format!("GET /metrics: {e}")),
    };
    text.lines()
        .filter(|line| {
            line.starts_with("crate_mirror_index_hot")
                || line.starts_with("crate_mirror_index_memory")
        })
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn store_loads(client: &reqwest::Client, mirror: &Mirror) -> u64 {
    api_stats(client, &mirror.url).await["index"]["store_loads"]
        .as_u64()
        .unwrap_or_else(|| fail("/api/stats has no index.store_loads"))
}

/// Fetches the synthetic files step by step; the figures at each step and
/// sled's size at the end.
async fn synthetic_run(
    binary: &Binary,
    setup: &Setup<'_>,
    paths: &[String],
    options: &Options,
) -> (u64, Vec<StepFigures>, DiskUse) {
    let (sample, calls) = (options.sample, options.calls);
    let temp = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let data = temp.path().join("data");
    // A day: nothing expires during the run, so the sample's answers are
    // hits from memory or sled, never refreshes that would move memory.
    let mirror = setup.mirror(binary, &data, &["--index-ttl", "86400"]);
    let pid = mirror.pid();
    let rss_start = rss_bytes(&mirror);
    let client = http_client(WARM_CONCURRENCY);
    let mut rows = Vec::new();
    let mut fetched = 0;
    for &step in &options.steps {
        eprintln!("bench: {}: fetching files {fetched}..{step}", binary.label);
        let peak = PeakSampler::start(move || {
            support::procfs::proc_status_kib(pid, "VmRSS").map(|kib| kib * 1024)
        });
        let started = Instant::now();
        fetch_or_fail(&client, &mirror, &paths[fetched..step], WARM_CONCURRENCY).await;
        let fetch_time = started.elapsed();
        fetched = step;
        tokio::time::sleep(SETTLE).await;
        let rss = rss_bytes(&mirror);
        let rss_peak = peak.finish();
        let stats = time_stats(&client, &mirror.url, calls).await;
        let hot = hot_figures(&client, &mirror).await;
        let chosen: Vec<String> = (0..sample)
            .map(|i| paths[i * step / sample].clone())
            .collect();
        let loads_before = store_loads(&client, &mirror).await;
        let sample_hits = ask_again(&client, &mirror, &chosen).await;
        let sample_loads = store_loads(&client, &mirror).await - loads_before;
        let row = StepFigures {
            files: step,
            rss,
            rss_peak,
            fetch_time,
            stats,
            sample_hits,
            sample_loads,
            hot_figures: hot,
        };
        eprintln!(
            "bench: {}: {step} files, RSS {}, stats median {}, {} of {sample} loaded from sled",
            binary.label,
            mb(rss as f64),
            ms(stats.median),
            sample_loads
        );
        rows.push(row);
    }
    mirror.stop();
    (rss_start, rows, DiskUse::of(&data.join("sled")))
}

struct Options {
    before: Option<PathBuf>,
    candidate: Option<PathBuf>,
    fixture: bool,
    synthetic: bool,
    steps: Vec<usize>,
    sample: usize,
    calls: u64,
    /// `--hot-cache-size` for every mirror (a study; the record uses the default).
    hot_cache: Option<String>,
}

fn options() -> Options {
    let mut options = Options {
        before: None,
        candidate: None,
        fixture: true,
        synthetic: true,
        steps: STEPS.to_vec(),
        sample: SAMPLE,
        calls: CALLS,
        hot_cache: None,
    };
    let mut files = None;
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--before" => options.before = Some(PathBuf::from(flags.text("--before"))),
            "--candidate" => options.candidate = Some(PathBuf::from(flags.text("--candidate"))),
            "--only" => match flags.text("--only").as_str() {
                "fixture" => options.synthetic = false,
                "synthetic" => options.fixture = false,
                other => fail(&format!("--only: fixture or synthetic, not {other}")),
            },
            "--files" => files = Some(flags.count("--files") as usize),
            "--steps" => {
                options.steps = flags
                    .text("--steps")
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse()
                            .unwrap_or_else(|_| fail(&format!("--steps: not a number: {s}")))
                    })
                    .collect();
            }
            "--sample" => options.sample = flags.count("--sample") as usize,
            "--calls" => options.calls = flags.count("--calls"),
            "--hot-cache-size" => options.hot_cache = Some(flags.text("--hot-cache-size")),
            other => fail(&format!("unknown flag {other}")),
        }
    }
    options.steps.sort_unstable();
    options.steps.dedup();
    if let Some(files) = files {
        options.steps.retain(|&step| step < files);
        options.steps.push(files);
    }
    options.steps.retain(|&step| step > 0);
    if options.steps.is_empty() {
        fail("no steps");
    }
    for path in options.before.iter().chain(&options.candidate) {
        if !path.is_file() {
            fail(&format!("no binary at {}", path.display()));
        }
    }
    options
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = options();
    let run_started = Instant::now();
    let candidate = options
        .candidate
        .clone()
        .unwrap_or_else(build_mirror_binary);
    let mut binaries = Vec::new();
    if let Some(path) = &options.before {
        binaries.push(Binary {
            label: "before",
            path: path.clone(),
        });
    }
    binaries.push(Binary {
        label: "candidate",
        path: candidate,
    });
    let ca = TestCa::new();
    let index = RealIndex::unpack();
    let files = index.files();
    drop(index);
    let gzip_total: u64 = files.values().map(|f| f.gzip.len() as u64).sum();
    let plain_total: u64 = files.values().map(|f| f.body.len() as u64).sum();
    let fixture_count = files.len();
    let rss_limit = RSS_BASE + RSS_FACTOR * gzip_total as f64;
    let sled_limit = SLED_BASE + SLED_FACTOR * gzip_total as f64;

    let mirror_args: Vec<&str> = match &options.hot_cache {
        Some(size) => vec!["--hot-cache-size", size],
        None => Vec::new(),
    };
    let hot_cache = match &options.hot_cache {
        Some(size) => format!("`--hot-cache-size {size}`"),
        None => "default `hot-cache-size` of 256 MiB".to_string(),
    };
    let mut report = format!(
        "# Index files kept compressed: memory and disk (issue #18)\n\nGenerated by `cargo bench --bench compressed_index` on {}, {} CPUs, in {{RUN_TIME}}.\n\n",
        run_date(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    report.push_str("**Code measured:** ");
    for binary in &binaries {
        let what = if binary.label == "candidate" && options.candidate.is_none() {
            code_measured()
                .trim_start_matches("**Code measured:** ")
                .trim_end_matches('.')
                .to_string()
        } else {
            format!("the binary `{}`", binary.path.display())
        };
        report.push_str(&format!("{} = {what}; ", binary.label));
    }
    report.truncate(report.len() - 2);
    report.push_str(".\n\nRe-run against new code: `cargo bench --bench compressed_index -- --before /tmp/crate-mirror-99b14e1` (the baseline built as the module doc of `benches/compressed_index.rs` says; the candidate is built from the tree).\n\n");

    if options.fixture {
        let fixture_paths: Vec<String> = {
            let mut keys: Vec<String> = files.keys().map(|k| format!("/index/{k}")).collect();
            keys.sort();
            keys
        };
        let setup = Setup::start(files.clone(), &ca, &mirror_args);
        let mut rows = Vec::new();
        for binary in &binaries {
            eprintln!("bench: fixture, {}", binary.label);
            rows.push((
                binary.label,
                fixture_run(binary, &setup, &fixture_paths).await,
            ));
        }
        drop(setup);
        report.push_str(&format!(
            "## The fixture: {fixture_count} real index files\n\nA test upstream (HTTPS, HTTP/2, gzip'd answers with ETags) serves the real-index fixture: {fixture_count} files, {} plain, {} gzip'd at level {GZIP_LEVEL} (computed here). A release mirror (prefetch off, {hot_cache}) is asked for each file once with `Accept-Encoding: gzip`, {FIXTURE_CONCURRENCY} at a time. RSS is read at start and {} s after the last answer (peak: sampled every 250 ms meanwhile); then the mirror is stopped with SIGTERM, which flushes sled, and `<data-dir>/sled` is measured (file sizes, and blocks allocated as `du` counts them; the limit is held against the larger). Limits from the issue, MB = 10^6 bytes: RSS ≤ 40 MB + 1.3 × {} = **{}**; sled ≤ 8 MB + 1.5 × {} = **{}**.\n\n| binary | RSS at start | RSS after | growth | peak | RSS verdict | sled (file sizes) | sled (allocated) | sled verdict | sent to the client | fetch time |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
            mb(plain_total as f64),
            mb(gzip_total as f64),
            SETTLE.as_secs(),
            mb(gzip_total as f64),
            mb(rss_limit),
            mb(gzip_total as f64),
            mb(sled_limit),
        ));
        for (label, f) in &rows {
            report.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
                mb(f.rss_start as f64),
                mb(f.rss as f64),
                mb(f.rss.saturating_sub(f.rss_start) as f64),
                mb(f.rss_peak as f64),
                verdict(f.rss, rss_limit),
                mb(f.sled.apparent as f64),
                mb(f.sled.allocated as f64),
                verdict(f.sled.counted(), sled_limit),
                mb(f.served as f64),
                f.fetch_time.as_secs_f64(),
            ));
        }
        report.push('\n');
    }

    if options.synthetic {
        let count = options.steps[options.steps.len() - 1];
        let templates = templates(&files);
        eprintln!("bench: making {count} synthetic index files");
        let made = Instant::now();
        let (synthetic_files, paths, plain, gzipped) = synthetic(&templates, count);
        let make_time = made.elapsed();
        drop(templates);
        let setup = Setup::start(synthetic_files, &ca, &mirror_args);
        let mut runs = Vec::new();
        for binary in &binaries {
            eprintln!("bench: synthetic, {}", binary.label);
            let (rss_start, rows, sled) = synthetic_run(binary, &setup, &paths, &options).await;
            runs.push((binary.label, rss_start, rows, sled));
        }
        drop(setup);
        let sample = options.sample;
        report.push_str(&format!(
            "## Synthetic: {count} files from the fixture's size distribution\n\nFile k is the fixture's file k mod {fixture_count} (in path order) with its `\"name\"` fields renamed `synth-NNNNNN`: {count} files, {} plain, {} gzip'd at level {GZIP_LEVEL} ({} a file on average; made by the bench in {:.0} s and served gzip'd, as the fixture's upstream serves them: the plain bodies would not fit in the bench's memory). A release mirror (prefetch off, {hot_cache}, `--index-ttl` a day so nothing expires during the run) fetches them in order, {WARM_CONCURRENCY} at a time, with `Accept-Encoding: gzip`. At each step, {} s after the last answer: RSS (peak sampled during the step), `/api/stats` ({} calls one after another, median and p90), then {sample} of the files fetched so far, evenly spread, are asked again: every answer was `x-cache: HIT` unless the table says otherwise, and those the mirror loaded from sled (`index.store_loads` in `/api/stats`, i.e. `crate_mirror_index_store_loads_total`) were not in memory. \"Held in memory\" is the share not loaded times the files fetched: an estimate, and a generous one where memory holds the newest files, since the sample reaches back evenly to the first. Asking the sample again loads those files into memory, which may evict others before the next step.\n\n| files | binary | RSS | peak | `/api/stats` median | p90 | sample loaded from sled | held in memory (est.) | mirror's hot-cache figures | step's fetch time |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
            mb(plain as f64),
            mb(gzipped as f64),
            format_args!("{:.1} KB", gzipped as f64 / count as f64 / 1e3),
            make_time.as_secs_f64(),
            SETTLE.as_secs(),
            options.calls,
        ));
        for (i, &step) in options.steps.iter().enumerate() {
            for (label, _, rows, _) in &runs {
                let r = &rows[i];
                let hot = if r.hot_figures.is_empty() {
                    "none exposed".to_string()
                } else {
                    r.hot_figures
                        .iter()
                        .map(|(series, value)| format!("`{series}` {value}"))
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let misses = if r.sample_hits == sample {
                    String::new()
                } else {
                    format!(" ({} not HIT)", sample - r.sample_hits)
                };
                report.push_str(&format!(
                    "| {step} | {label} | {} | {} | {} | {} | {} of {sample}{misses} | {} ({:.0}%) | {hot} | {:.1} s |\n",
                    mb(r.rss as f64),
                    mb(r.rss_peak as f64),
                    ms(r.stats.median),
                    ms(r.stats.p90),
                    r.sample_loads,
                    r.held(sample),
                    r.held(sample) as f64 / step as f64 * 100.0,
                    r.fetch_time.as_secs_f64(),
                ));
            }
        }
        report.push_str("\nRSS at the mirror's start, and sled on disk after the last step (mirror stopped with SIGTERM):\n\n| binary | RSS at start | files | sled (file sizes) | sled (allocated) | vs the files' gzip size |\n| --- | --- | --- | --- | --- | --- |\n");
        for (label, rss_start, _, sled) in &runs {
            report.push_str(&format!(
                "| {label} | {} | {count} | {} | {} | {:.2}× |\n",
                mb(*rss_start as f64),
                mb(sled.apparent as f64),
                mb(sled.allocated as f64),
                sled.counted() as f64 / gzipped as f64,
            ));
        }
        report.push('\n');
    }

    let run_time = run_started.elapsed();
    let report = report.replace(
        "{RUN_TIME}",
        &format!("{:.1} min", run_time.as_secs_f64() / 60.0),
    );
    println!("{report}");
    if options.fixture && options.synthetic && options.hot_cache.is_none() {
        write_results("compressed_index.md", &report);
    } else {
        eprintln!("bench: --only or --hot-cache-size: results printed, not written");
    }
    ExitCode::SUCCESS
}
