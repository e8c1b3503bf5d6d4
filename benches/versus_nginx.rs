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

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::ACCEPT_ENCODING;
use sha2::{Digest, Sha256};

use common::registry::{self, CrateSpec, Dep};
use common::upstream::{DlStyle, TestUpstream};
use support::{
    build_mirror_binary, download_path, fail, index_path, Flags, MirrorProcess, PeakSampler,
    WARM_CONCURRENCY,
};

/// Index files served from the upstream (besides those of the download crates).
const INDEX_FILES: usize = 600;
/// Size bands of the index files: (share in percent, least and most versions).
/// Most crates have a handful of versions; a few have thousands, which with
/// their dependency lists makes index files of several hundred KB to ~1 MB.
const VERSION_BANDS: [(usize, usize, usize); 4] =
    [(70, 1, 8), (20, 9, 60), (8, 61, 400), (2, 600, 2000)];
/// Crates downloaded in the downloads run, log-spaced in size between these.
const DOWNLOAD_CRATES: usize = 40;
const DOWNLOAD_MIN_BYTES: usize = 4 * 1024;
const DOWNLOAD_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Large crates: warmed and served, but not part of the downloads run, whose
/// figures they would turn into a bulk-copy test.
const LARGE_CRATES: [(&str, usize); 2] = [("large-crate", 8 << 20), ("huge-crate", 30 << 20)];
/// The crate of the MISS measurement.
const TTFB_CRATE: &str = "huge-crate";
/// Added to every upstream response: a registry across the internet.
const UPSTREAM_DELAY_MS: u64 = 50;
/// Pause between the upstream's 16 KiB body chunks during the MISS
/// measurement, so that a 30 MiB body takes several seconds to arrive.
const CHUNK_DELAY_MS: u64 = 2;
/// Concurrency of the warm-up fetches.
/// Per-request timeout of the warm-up and MISS fetches (not of wrk).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// wrk's own per-request timeout: a slower response counts as an error.
const WRK_TIMEOUT_S: u64 = 10;
/// How often the servers' memory is sampled during a run.
/// The mirror's version line, for the report.
const MIRROR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Command-line options (after cargo's own `--bench`).
struct Options {
    duration: Duration,
    connections: usize,
    /// wrk threads: one per CPU, as the three programs share them anyway.
    threads: usize,
    /// `worker_processes`; `auto` when not given.
    nginx_workers: Option<usize>,
    /// A mirror binary to use instead of building the release binary: to
    /// compare builds, or a wrapper script that changes the environment.
    mirror_binary: Option<PathBuf>,
    /// Where the Markdown report goes.
    results: PathBuf,
    /// Whether to run the MISS measurement (about 30 s).
    ttfb: bool,
    /// The nginx configuration template (to compare variants of it).
    nginx_template: PathBuf,
    /// The loads to run (all by default; a subset for profiling one of them).
    scenarios: Vec<Scenario>,
    /// Rounds of runs; each server's median round per load is reported.
    rounds: usize,
}

fn parse_options() -> Options {
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

fn log(message: &str) {
    eprintln!("versus_nginx: {message}");
}

fn tail(file: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/// A running nginx (master in the foreground) with a fresh prefix dir, so a
/// fresh, empty cache; stopped when dropped.
struct NginxProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    prefix: tempfile::TempDir,
}

impl NginxProcess {
    fn start(template_path: &Path, upstream: SocketAddr, workers: Option<usize>) -> Self {
        let prefix = tempfile::tempdir().expect("create a temp dir for nginx");
        // The master runs as root and its workers as `nobody`, which must be
        // able to reach the cache and temp dirs below the prefix.
        set_mode(prefix.path(), 0o755);
        let template = std::fs::read_to_string(template_path)
            .unwrap_or_else(|e| fail(&format!("read {}: {e}", template_path.display())));
        let port = free_port();
        let conf = template
            .replace(
                "@@WORKERS@@",
                &workers.map_or("auto".to_string(), |n| n.to_string()),
            )
            .replace("@@PREFIX@@", &prefix.path().display().to_string())
            .replace("@@LISTEN@@", &format!("127.0.0.1:{port}"))
            .replace("@@UPSTREAM@@", &upstream.to_string());
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let p = prefix.path().display();
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg(format!(
                "daemon off; pid {p}/nginx.pid; error_log {p}/error.log;"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot run nginx (apt-get install nginx): {e}")));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("nginx address");
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                fail(&format!(
                    "nginx exited ({status}): {stderr}\n{}",
                    tail(&prefix.path().join("error.log"), 20)
                ));
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                fail("nginx did not start listening within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        NginxProcess {
            child,
            url: format!("http://{addr}"),
            prefix,
        }
    }

    /// The master and every process it forked (workers, cache manager and loader).
    fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids
    }

    fn error_log_tail(&self, lines: usize) -> String {
        tail(&self.prefix.path().join("error.log"), lines)
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers and
        // exits. (SIGKILL on the master alone would orphan the workers.)
        let pids = self.pids();
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().rev() {
            signal(*pid, "KILL");
        }
        let _ = self.child.wait();
    }
}

/// Sends a signal to one process by pid (the bench has no libc binding).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| fail(&format!("chmod {}: {e}", path.display())));
}

/// A port that was free a moment ago (nginx needs a number in its config).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port address").port()
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// The fields of /proc/PID/stat after the command name (which may hold spaces):
/// index 0 is the state, 1 the parent pid, 11 utime, 12 stime.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            proc_stat_fields(*pid)
                .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == parent)
        })
        .collect()
}

/// User plus system CPU time of the processes so far, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let fields = proc_stat_fields(*pid)?;
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

/// Proportional set size in KiB: shared pages (nginx's cache zone, mapped by
/// every worker) are divided among the processes that map them, so the sum
/// over nginx's processes is its real footprint.
fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            rollup.lines().find_map(|line| {
                let rest = line.strip_prefix("Pss:")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .sum()
}

// ---------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------

/// xorshift64: a fixed-seed generator, so every run serves the same registry.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `least..=most`.
    fn between(&mut self, least: usize, most: usize) -> usize {
        least + (self.next() % (most - least + 1) as u64) as usize
    }
}

/// Names index lines depend on, so that lines carry realistic dependency lists.
const DEP_NAMES: [&str; 8] = [
    "serde",
    "serde_json",
    "tokio",
    "log",
    "thiserror",
    "bytes",
    "futures-util",
    "once_cell",
];

/// The generated registry and the paths the runs request.
struct BenchRegistry {
    upstream: TestUpstream,
    /// Every index file: the generated ones and those of the download crates.
    index_paths: Vec<String>,
    /// Sizes of the index files in bytes, sorted.
    index_sizes: Vec<usize>,
    /// The path of the largest index file.
    largest_index: String,
    /// The crates of the downloads run, and their sizes.
    download_paths: Vec<String>,
    download_sizes: Vec<usize>,
    /// The large crates: (download path, size).
    large: Vec<(String, usize)>,
    /// The MISS measurement's crate: (name, version, sha256, size).
    ttfb_crate: (String, String, String, usize),
}

/// Generates the registry and starts the delayed upstream serving it.
fn bench_registry() -> BenchRegistry {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut specs = Vec::new();
    let mut download_paths = Vec::new();
    let mut download_sizes = Vec::new();
    // Log-spaced sizes: as many small crates as large ones per doubling.
    let ratio = (DOWNLOAD_MAX_BYTES as f64 / DOWNLOAD_MIN_BYTES as f64).ln();
    for n in 0..DOWNLOAD_CRATES {
        let share = n as f64 / (DOWNLOAD_CRATES - 1) as f64;
        let size = (DOWNLOAD_MIN_BYTES as f64 * (ratio * share).exp()) as usize;
        let name = format!("dl-crate-{n}");
        specs.push(CrateSpec::new(&name, "1.0.0").padding(size));
        download_paths.push(download_path(&name, "1.0.0"));
    }
    for (name, size) in LARGE_CRATES {
        specs.push(CrateSpec::new(name, "1.0.0").padding(size));
    }
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let published = upstream.publish_all(&specs);
    let mut large = Vec::new();
    let mut ttfb_crate = None;
    for p in &published {
        let path = download_path(&p.name, &p.vers);
        if download_paths.contains(&path) {
            download_sizes.push(p.tarball.len());
        } else {
            large.push((path, p.tarball.len()));
        }
        if p.name == TTFB_CRATE {
            ttfb_crate = Some((
                p.name.clone(),
                p.vers.clone(),
                p.cksum.clone(),
                p.tarball.len(),
            ));
        }
    }
    let mut index_paths: Vec<String> = specs.iter().map(|s| index_path(&s.name)).collect();
    let mut index_sizes: Vec<usize> = published.iter().map(|p| p.line.len() + 1).collect();
    let mut largest_index = (0, String::new());

    // The index-only crates: bodies set directly, with checksums no tarball
    // backs (nobody downloads them), which is far faster than building tens
    // of thousands of tarballs.
    let mut band_starts = Vec::new();
    let mut acc = 0;
    for (share, least, most) in VERSION_BANDS {
        band_starts.push((acc, least, most));
        acc += INDEX_FILES * share / 100;
    }
    for n in 0..INDEX_FILES {
        let (_, least, most) = band_starts
            .iter()
            .rev()
            .find(|(start, _, _)| n >= *start)
            .copied()
            .expect("the first band starts at 0");
        let versions = rng.between(least, most);
        let name = format!("idx-crate-{n}");
        let mut body = String::new();
        for v in 0..versions {
            let mut spec =
                CrateSpec::new(&name, &format!("{}.{}.{}", v / 100, v % 100 / 10, v % 10));
            for dep in 0..rng.between(0, 5) {
                spec = spec.dep(Dep::new(DEP_NAMES[(n + dep) % DEP_NAMES.len()], "^1"));
            }
            if rng.between(0, 3) == 0 {
                spec = spec.feature("default", &["std"]).feature("std", &[]);
            }
            let cksum = registry::sha256_hex(format!("{name}@{v}").as_bytes());
            body.push_str(&registry::index_line(&spec, &cksum));
            body.push('\n');
        }
        index_sizes.push(body.len());
        upstream.set_index(&name, 200, &body);
        index_paths.push(index_path(&name));
        if body.len() > largest_index.0 {
            largest_index = (body.len(), index_path(&name));
        }
    }
    index_sizes.sort_unstable();
    BenchRegistry {
        upstream,
        index_paths,
        index_sizes,
        largest_index: largest_index.1,
        download_paths,
        download_sizes,
        large,
        ttfb_crate: ttfb_crate.expect("the MISS crate is published"),
    }
}

/// The upstream's `host:port`, for nginx's `upstream` block.
fn upstream_addr(upstream: &TestUpstream) -> SocketAddr {
    upstream
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/index/")
        .parse()
        .expect("the test upstream URL is http://HOST:PORT/index/")
}

// ---------------------------------------------------------------------------
// Warming
// ---------------------------------------------------------------------------

/// An HTTP client with no proxy and raw bodies, pooled for warming.
fn http_client() -> reqwest::Client {
    support::http_client(WARM_CONCURRENCY)
}

/// GETs every path once, `WARM_CONCURRENCY` at a time; the errors.
async fn fetch_all(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    gzip: bool,
) -> Vec<String> {
    support::fetch_all(client, base, paths, gzip, REQUEST_TIMEOUT)
        .await
        .1
}

/// Fetches every index file (plain and gzip'd, so that the mirror has
/// compressed each once, as it would in steady state) and every crate once.
async fn warm(server: &str, base: &str, registry: &BenchRegistry) {
    let client = http_client();
    let started = Instant::now();
    let mut errors = fetch_all(&client, base, &registry.index_paths, false).await;
    errors.extend(fetch_all(&client, base, &registry.index_paths, true).await);
    let mut crates = registry.download_paths.clone();
    crates.extend(registry.large.iter().map(|(path, _)| path.clone()));
    errors.extend(fetch_all(&client, base, &crates, false).await);
    if let Some(first) = errors.first() {
        fail(&format!(
            "warming {server} failed ({} errors), first: {first}",
            errors.len()
        ));
    }
    log(&format!(
        "warmed {server}: {} index files and {} crates in {:.1?}",
        registry.index_paths.len(),
        crates.len(),
        started.elapsed()
    ));
}

/// Checks that the server now answers an index file and a crate from its
/// cache: a warm-up that left them uncached would make the runs measure the
/// upstream instead.
async fn check_cached(server: &str, base: &str, header: &str, registry: &BenchRegistry) {
    let client = http_client();
    let probes = [
        &registry.index_paths[registry.index_paths.len() / 2],
        &registry.download_paths[0],
    ];
    for path in probes {
        let url = format!("{base}{path}");
        let response = client
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
        let cache = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        if cache != "HIT" {
            fail(&format!(
                "{server}: {path} answered with {header}: {cache} after warming"
            ));
        }
    }
}

/// What a server sends for one index file, plain and with `Accept-Encoding: gzip`.
struct Encoding {
    source: String,
    content_type: String,
    plain_bytes: usize,
    /// `Content-Encoding` of the gzip request (`-` for none).
    gzip_encoding: String,
    gzip_bytes: usize,
}

/// Fetches the largest index file both ways and notes what came back, so the
/// report shows that both servers compressed (a server sending identity
/// bodies to gzip clients would make the gzip runs meaningless).
async fn encoding_check(source: &str, base: &str, path: &str) -> Encoding {
    let client = http_client();
    let url = format!("{base}{path}");
    let mut seen = Vec::new();
    for gzip in [false, true] {
        let mut request = client.get(&url).timeout(REQUEST_TIMEOUT);
        if gzip {
            request = request.header(ACCEPT_ENCODING, "gzip");
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (content_type, encoding) = (header("content-type"), header("content-encoding"));
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: body: {e}")));
        seen.push((content_type, encoding, body.len()));
    }
    let (gzip_encoding, gzip_bytes) = (seen[1].1.clone(), seen[1].2);
    let (content_type, _, plain_bytes) = seen.swap_remove(0);
    Encoding {
        source: source.to_string(),
        content_type,
        plain_bytes,
        gzip_encoding,
        gzip_bytes,
    }
}

// ---------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------

/// What is requested in one load run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    IndexPlain,
    IndexGzip,
    Downloads,
}

impl Scenario {
    const ALL: [Scenario; 3] = [
        Scenario::IndexPlain,
        Scenario::IndexGzip,
        Scenario::Downloads,
    ];

    fn from_name(name: &str) -> Option<Scenario> {
        match name {
            "identity" => Some(Scenario::IndexPlain),
            "gzip" => Some(Scenario::IndexGzip),
            "downloads" => Some(Scenario::Downloads),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::IndexPlain => "index, identity",
            Scenario::IndexGzip => "index, gzip",
            Scenario::Downloads => "crate downloads",
        }
    }
}

/// Figures parsed from wrk's output.
#[derive(Clone, Default)]
struct WrkStats {
    requests: u64,
    seconds: f64,
    req_per_s: f64,
    bytes_per_s: f64,
    p50: Duration,
    p75: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    socket_errors: u64,
    non_2xx: u64,
}

impl WrkStats {
    fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// `1.23ms`, `850.00us`, `2.01s`, `1.00m` as a duration.
fn parse_wrk_time(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let secs = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// `123.45MB` (wrk's units are powers of 1024) as bytes.
fn parse_wrk_bytes(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(value * scale)
}

fn parse_wrk(output: &str) -> Option<WrkStats> {
    let mut stats = WrkStats::default();
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", t] => stats.p50 = parse_wrk_time(t)?,
            ["75%", t] => stats.p75 = parse_wrk_time(t)?,
            ["90%", t] => stats.p90 = parse_wrk_time(t)?,
            ["99%", t] => stats.p99 = parse_wrk_time(t)?,
            ["Latency", _avg, _stdev, max, ..] => stats.max = parse_wrk_time(max)?,
            // `123456 requests in 20.00s, 1.23GB read`
            [count, "requests", "in", secs, ..] => {
                stats.requests = count.parse().ok()?;
                stats.seconds = parse_wrk_time(secs.trim_end_matches(','))?.as_secs_f64();
            }
            ["Requests/sec:", rate] => stats.req_per_s = rate.parse().ok()?,
            ["Transfer/sec:", rate] => stats.bytes_per_s = parse_wrk_bytes(rate)?,
            // `Socket errors: connect 0, read 0, write 0, timeout 0`
            ["Socket", "errors:", rest @ ..] => {
                stats.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", count] => stats.non_2xx = count.parse().ok()?,
            _ => {}
        }
    }
    (stats.requests > 0 && stats.req_per_s > 0.0).then_some(stats)
}

/// Runs wrk against `base` for the scenario; wrk stops itself after the
/// duration, and a watchdog kills it if it has not after a minute more.
fn run_wrk(base: &str, paths_file: &Path, gzip: bool, options: &Options) -> (WrkStats, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/rotate_paths.lua");
    let mut command = Command::new("wrk");
    command
        .arg("-t")
        .arg(options.threads.to_string())
        .arg("-c")
        .arg(options.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", options.duration.as_secs()))
        .arg("--timeout")
        .arg(format!("{WRK_TIMEOUT_S}s"))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(base)
        .arg("--")
        .arg(paths_file);
    if gzip {
        command.arg("gzip");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run wrk (apt-get install wrk): {e}")));
    let mut stdout = child.stdout.take().expect("wrk stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + options.duration + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for wrk") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            fail("wrk did not stop a minute after its duration");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap_or_default();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        fail(&format!("wrk failed ({status}): {stderr}\n{output}"));
    }
    let stats = parse_wrk(&output)
        .unwrap_or_else(|| fail(&format!("cannot read wrk's output:\n{output}\n{stderr}")));
    (stats, output)
}

/// One load run against one server.
#[derive(Clone)]
struct RunResult {
    wrk: WrkStats,
    /// The server's CPU time during the run (all its processes).
    cpu_secs: f64,
    peak_pss_kib: u64,
    /// Requests that reached the upstream during the run (revalidations).
    upstream_requests: usize,
    raw: String,
}

impl RunResult {
    /// Server CPU time per request, in microseconds.
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_secs * 1e6 / self.wrk.requests.max(1) as f64
    }

    /// Average share of the machine's CPUs the server used.
    fn cpu_share(&self, cpus: usize) -> f64 {
        self.cpu_secs / (self.wrk.seconds.max(0.001) * cpus as f64)
    }
}

/// The paths files of the scenarios, written once for wrk to read.
struct PathsFiles {
    _dir: tempfile::TempDir,
    index: PathBuf,
    downloads: PathBuf,
}

impl PathsFiles {
    fn write(registry: &BenchRegistry) -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir for the paths files");
        let index = dir.path().join("index-paths.txt");
        let downloads = dir.path().join("download-paths.txt");
        std::fs::write(&index, registry.index_paths.join("\n") + "\n").expect("write index paths");
        std::fs::write(&downloads, registry.download_paths.join("\n") + "\n")
            .expect("write download paths");
        PathsFiles {
            _dir: dir,
            index,
            downloads,
        }
    }

    fn for_scenario(&self, scenario: Scenario) -> &Path {
        match scenario {
            Scenario::Downloads => &self.downloads,
            _ => &self.index,
        }
    }
}

/// Runs every scenario against one warmed server.
fn load_runs(
    server: &str,
    base: &str,
    pids: &[u32],
    upstream: &TestUpstream,
    files: &PathsFiles,
    options: &Options,
    ticks_per_second: f64,
) -> Vec<RunResult> {
    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        log(&format!(
            "{server}: {} for {} s, {} connections",
            scenario.label(),
            options.duration.as_secs(),
            options.connections
        ));
        let upstream_before = upstream.total_requests();
        let ticks_before = cpu_ticks(pids);
        let sampler = {
            let pids = pids.to_vec();
            PeakSampler::start(move || Some(pss_kib(&pids)))
        };
        let gzip = scenario == Scenario::IndexGzip;
        let (wrk, raw) = run_wrk(base, files.for_scenario(scenario), gzip, options);
        let peak_pss_kib = sampler.finish();
        let cpu_secs = (cpu_ticks(pids).saturating_sub(ticks_before)) as f64 / ticks_per_second;
        log(&format!(
            "  {:.0} req/s, p50 {}, p99 {}, errors {}",
            wrk.req_per_s,
            ms(wrk.p50),
            ms(wrk.p99),
            wrk.errors()
        ));
        results.push(RunResult {
            wrk,
            cpu_secs,
            peak_pss_kib,
            upstream_requests: upstream.total_requests() - upstream_before,
            raw,
        });
    }
    results
}

// ---------------------------------------------------------------------------
// MISS: time to first byte
// ---------------------------------------------------------------------------

/// One large download, timed.
struct Timed {
    source: String,
    status: u16,
    headers: Duration,
    first_byte: Duration,
    total: Duration,
    bytes: usize,
    sha_ok: bool,
}

/// GETs `url`, timing the response head, the first body chunk and the end,
/// and checking the body against the expected sha256.
async fn timed_download(source: &str, url: &str, sha256: &str) -> Timed {
    let client = http_client();
    let started = Instant::now();
    let response = client
        .get(url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
    let headers = started.elapsed();
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut first_byte = None;
    let mut hasher = Sha256::new();
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| fail(&format!("GET {url}: body: {e}")));
        if chunk.is_empty() {
            continue;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len();
        hasher.update(&chunk);
    }
    let total = started.elapsed();
    Timed {
        source: source.to_string(),
        status,
        headers,
        first_byte: first_byte.unwrap_or(total),
        total,
        bytes,
        sha_ok: hex::encode(hasher.finalize()) == sha256,
    }
}

/// Polls the mirror's `/ready` until it knows the upstream's config.json, so
/// that the MISS is timed as a running mirror would serve it.
async fn wait_ready(base: &str) {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let ready = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail("the fresh mirror was not ready within 15 s");
}

/// The large crate on a MISS: directly from the slowed upstream, through a
/// fresh mirror (without and with its index file cached) and through a fresh
/// nginx; then once more through each (HIT).
async fn ttfb_phase(binary: &Path, registry: &BenchRegistry, options: &Options) -> Vec<Timed> {
    let upstream = &registry.upstream;
    let (name, version, sha, _) = &registry.ttfb_crate;
    let path = download_path(name, version);
    let upstream_base = upstream.url.trim_end_matches("/index/");
    upstream
        .switches
        .chunk_delay_ms
        .store(CHUNK_DELAY_MS, Ordering::SeqCst);
    let mut timings = Vec::new();
    log("MISS: directly from the upstream");
    timings.push(
        timed_download(
            "upstream, direct",
            &format!("{upstream_base}/dl/{name}/{version}/download"),
            sha,
        )
        .await,
    );
    log("MISS: through a fresh mirror, index file not cached");
    let mirror = MirrorProcess::start(binary, &upstream.url, &[]);
    wait_ready(&mirror.url).await;
    timings.push(
        timed_download(
            "mirror, MISS, index file not cached",
            &format!("{}{path}", mirror.url),
            sha,
        )
        .await,
    );
    // cargo resolves before it downloads, so in real use the index file is
    // usually cached when the crate is asked for: the mirror then needs one
    // upstream round trip instead of two.
    log("MISS: through a fresh mirror, index file cached");
    let second = MirrorProcess::start(binary, &upstream.url, &[]);
    wait_ready(&second.url).await;
    let index_errors = fetch_all(&http_client(), &second.url, &[index_path(name)], false).await;
    if let Some(error) = index_errors.first() {
        fail(&format!("fetching the index file of {name}: {error}"));
    }
    timings.push(
        timed_download(
            "mirror, MISS, index file cached",
            &format!("{}{path}", second.url),
            sha,
        )
        .await,
    );
    drop(second);
    log("MISS: through a fresh nginx");
    let nginx = NginxProcess::start(
        &options.nginx_template,
        upstream_addr(upstream),
        options.nginx_workers,
    );
    timings.push(timed_download("nginx, MISS", &format!("{}{path}", nginx.url), sha).await);
    // nginx renames its temp file into the cache when the upstream response
    // ends, the mirror after its checksum check: give both a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    timings.push(timed_download("mirror, HIT", &format!("{}{path}", mirror.url), sha).await);
    timings.push(timed_download("nginx, HIT", &format!("{}{path}", nginx.url), sha).await);
    upstream.switches.chunk_delay_ms.store(0, Ordering::SeqCst);
    timings
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn mib_bytes(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// The first line a command prints on stdout or stderr (`nginx -v` uses
/// stderr, `wrk --version` exits 1 after its version line).
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

fn nearest_rank(sorted: &[usize], q: f64) -> usize {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Per load, the round with the median requests per second (the lower middle
/// one of an even count).
fn median_runs(rounds: &[Vec<RunResult>]) -> Vec<RunResult> {
    let loads = rounds.first().map_or(0, Vec::len);
    (0..loads)
        .map(|load| {
            let mut runs: Vec<&RunResult> = rounds.iter().map(|r| &r[load]).collect();
            runs.sort_by(|a, b| a.wrk.req_per_s.total_cmp(&b.wrk.req_per_s));
            runs[(runs.len() - 1) / 2].clone()
        })
        .collect()
}

/// Everything the report needs.
struct Report<'a> {
    options: &'a Options,
    registry: &'a BenchRegistry,
    /// Per load, the median round of each server.
    mirror: Vec<RunResult>,
    nginx: Vec<RunResult>,
    /// Every round: `[round][load]`.
    mirror_rounds: Vec<Vec<RunResult>>,
    nginx_rounds: Vec<Vec<RunResult>>,
    encodings: Vec<Encoding>,
    timings: Vec<Timed>,
    cpus: usize,
    nginx_workers: usize,
}

impl Report<'_> {
    fn comparison_table(&self) -> String {
        let mut md = String::new();
        md.push_str(
            "| load | server | req/s | p50 | p90 | p99 | max | MiB/s | errors | server CPU | CPU µs/req | peak PSS | upstream requests |\n",
        );
        md.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            for (server, run) in [("crate-mirror", &self.mirror[i]), ("nginx", &self.nginx[i])] {
                let w = &run.wrk;
                let _ = writeln!(
                    md,
                    "| {} | {server} | {:.0} | {} | {} | {} | {} | {:.0} | {} | {:.0}% | {:.0} | {} | {} |",
                    scenario.label(),
                    w.req_per_s,
                    ms(w.p50),
                    ms(w.p90),
                    ms(w.p99),
                    ms(w.max),
                    w.bytes_per_s / (1024.0 * 1024.0),
                    w.errors(),
                    run.cpu_share(self.cpus) * 100.0,
                    run.cpu_us_per_request(),
                    mib_bytes(run.peak_pss_kib as f64 * 1024.0),
                    run.upstream_requests
                );
            }
        }
        md
    }

    fn rounds_table(&self) -> String {
        let mut md = String::new();
        let rounds = self.mirror_rounds.len();
        md.push_str("| load | server |");
        for round in 1..=rounds {
            let _ = write!(md, " round {round} req/s |");
        }
        md.push_str(" round 1 to last, mirror / nginx |\n| --- | --- |");
        md.push_str(&" ---: |".repeat(rounds + 1));
        md.push('\n');
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            for (server, all) in [
                ("crate-mirror", &self.mirror_rounds),
                ("nginx", &self.nginx_rounds),
            ] {
                let _ = write!(md, "| {} | {server} |", scenario.label());
                for round in all {
                    let _ = write!(md, " {:.0} |", round[i].wrk.req_per_s);
                }
                if server == "crate-mirror" {
                    let ratios: Vec<String> = self
                        .mirror_rounds
                        .iter()
                        .zip(&self.nginx_rounds)
                        .map(|(m, n)| {
                            format!("{:.2}", m[i].wrk.req_per_s / n[i].wrk.req_per_s.max(1e-9))
                        })
                        .collect();
                    let _ = writeln!(md, " {} |", ratios.join(", "));
                } else {
                    md.push_str(" |\n");
                }
            }
        }
        md
    }

    fn ratio_table(&self) -> String {
        let mut md = String::new();
        md.push_str("| load | req/s mirror / nginx | p50 mirror / nginx | p99 mirror / nginx | CPU per request mirror / nginx |\n");
        md.push_str("| --- | ---: | ---: | ---: | ---: |\n");
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            let (m, n) = (&self.mirror[i], &self.nginx[i]);
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                scenario.label(),
                m.wrk.req_per_s / n.wrk.req_per_s.max(1e-9),
                ratio(m.wrk.p50, n.wrk.p50),
                ratio(m.wrk.p99, n.wrk.p99),
                m.cpu_us_per_request() / n.cpu_us_per_request().max(1e-9)
            );
        }
        md
    }

    fn encoding_table(&self) -> String {
        let mut md = String::new();
        md.push_str("| source | Content-Type | identity body | gzip request: Content-Encoding | gzip body |\n");
        md.push_str("| --- | --- | ---: | --- | ---: |\n");
        for e in &self.encodings {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | `{}` | {} |",
                e.source,
                e.content_type,
                kib(e.plain_bytes),
                e.gzip_encoding,
                kib(e.gzip_bytes)
            );
        }
        md
    }

    fn ttfb_table(&self) -> String {
        let mut md = String::new();
        md.push_str("| source | status | response head | first body byte | complete | MiB/s | bytes | sha256 |\n");
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
        for t in &self.timings {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} |",
                t.source,
                t.status,
                ms(t.headers),
                ms(t.first_byte),
                ms(t.total),
                t.bytes as f64 / (1024.0 * 1024.0) / t.total.as_secs_f64().max(1e-9),
                t.bytes,
                if t.sha_ok { "ok" } else { "MISMATCH" }
            );
        }
        md
    }

    fn registry_line(&self) -> String {
        let r = self.registry;
        let sizes = &r.index_sizes;
        let total: usize = sizes.iter().sum();
        let downloads: usize = r.download_sizes.iter().sum();
        let large: Vec<String> = r
            .large
            .iter()
            .map(|(_, size)| mib_bytes(*size as f64))
            .collect();
        format!(
            "{} index files, {} in all: p50 {}, p90 {}, p99 {}, largest {} \
             ({} over 100 KiB); {} crates in the downloads run ({} to {}, {} in all); \
             large crates of {} (warmed, not in the runs)",
            sizes.len(),
            mib_bytes(total as f64),
            kib(nearest_rank(sizes, 0.5)),
            kib(nearest_rank(sizes, 0.9)),
            kib(nearest_rank(sizes, 0.99)),
            kib(*sizes.last().unwrap_or(&0)),
            sizes.iter().filter(|s| **s > 100 * 1024).count(),
            r.download_sizes.len(),
            kib(*r.download_sizes.iter().min().unwrap_or(&0)),
            kib(*r.download_sizes.iter().max().unwrap_or(&0)),
            mib_bytes(downloads as f64),
            large.join(" and ")
        )
    }

    fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "registry: {}", self.registry_line());
        let _ = writeln!(
            out,
            "load: wrk -t{} -c{} -d{}s, {} CPUs, nginx worker_processes {}",
            self.options.threads,
            self.options.connections,
            self.options.duration.as_secs(),
            self.cpus,
            self.nginx_workers
        );
        out.push_str(&self.comparison_table());
        out.push('\n');
        out.push_str(&self.ratio_table());
        out.push('\n');
        out.push_str(&self.rounds_table());
        out.push('\n');
        out.push_str(&self.encoding_table());
        if !self.timings.is_empty() {
            out.push('\n');
            out.push_str(&self.ttfb_table());
        }
        out
    }

    fn markdown(&self, date: &str) -> String {
        let o = self.options;
        let nginx_version = command_line("nginx", &["-v"]).unwrap_or_else(|| "?".into());
        let wrk_version = command_line("wrk", &["--version"]).unwrap_or_else(|| "?".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let kernel = command_line("uname", &["-r"]).unwrap_or_else(|| "?".into());
        // Which source the binary was built from: the tree may be ahead of HEAD.
        let root = env!("CARGO_MANIFEST_DIR");
        let commit = command_line("git", &["-C", root, "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "?".into());
        let dirty = command_line("git", &["-C", root, "status", "--porcelain", "src"])
            .map_or("", |_| " with uncommitted changes in src/");
        let mut md = String::new();
        md.push_str("# crate-mirror versus nginx proxy_cache\n\n");
        let _ = writeln!(
            md,
            "Generated by `cargo bench --bench versus_nginx -- --duration {} --connections {} \
             --rounds {}` on {date}.\n",
            o.duration.as_secs(),
            o.connections,
            o.rounds
        );
        let _ = writeln!(
            md,
            "- machine: {} CPUs ({cpu_model}), Linux {kernel}; the server under test, wrk \
             and the test upstream share them, all on 127.0.0.1",
            self.cpus
        );
        let _ = writeln!(
            md,
            "- crate-mirror {MIRROR_VERSION} ({}, default settings: {} actix workers on this \
             machine, 60 s index TTL, `--index-max-stale 0`, access log (`RUST_LOG=info`) to a file)",
            o.mirror_binary.as_ref().map_or(
                format!("release build of commit {commit}{dirty}"),
                |b| format!("`{}`", b.display())
            ),
            self.cpus
        );
        let _ = writeln!(
            md,
            "- {nginx_version}, `benches/nginx-proxy-cache.conf.template`: proxy_cache \
             (index files 60 s, crates 30 d), `proxy_cache_use_stale error timeout updating`, \
             `proxy_cache_lock on`, gzip on (level 1, text/plain and application/json), \
             sendfile, keepalive to the upstream, access_log to a file, \
             worker_processes {} ({} workers)",
            o.nginx_workers
                .map_or("auto".to_string(), |n| n.to_string()),
            self.nginx_workers
        );
        let _ = writeln!(
            md,
            "- {wrk_version}: `wrk -t{} -c{} -d{}s --latency --timeout {WRK_TIMEOUT_S}s -s \
             benches/rotate_paths.lua`, every connection rotating over all paths",
            o.threads,
            o.connections,
            o.duration.as_secs()
        );
        let _ = writeln!(
            md,
            "- upstream: the tests' `TestUpstream` with {UPSTREAM_DELAY_MS} ms added to every \
             request\n- registry: {}\n",
            self.registry_line()
        );
        md.push_str(
            "Two deliberate departures from a stock configuration, both explained in the \
             template: `gzip_types *` in `/index/`, because the test upstream sends index \
             files without a Content-Type and nginx would otherwise send them uncompressed; \
             and no `tcp_nopush`, which on this machine's loopback held the end of most \
             responses until the client's delayed ACK (~40 ms, p90 35 ms) and would have \
             measured that stall rather than the cache.\n\n",
        );
        md.push_str("## Warm caches under load\n\n");
        md.push_str(
            "The runs come in rounds; in each round each server is warmed right before its \
             runs (every index file plain and gzip'd, every crate once), checked to answer \
             from its cache, and loaded; rounds alternate which server goes first. The \
             tables show each server's median round per load (by req/s); all rounds are \
             listed after them. `server CPU` is \
             the server's user+system time over the run as a share of all CPUs (nginx: \
             master and workers); `peak PSS` is its proportional memory (nginx's shared \
             cache zone counted once); `upstream requests` reached the upstream during the \
             run.\n\n",
        );
        md.push_str(&self.comparison_table());
        md.push_str("\nRatios (req/s above 1 and latency or CPU below 1 favour the mirror):\n\n");
        md.push_str(&self.ratio_table());
        md.push_str("\nEvery round (the ratios pair the servers' runs of the same round):\n\n");
        md.push_str(&self.rounds_table());
        md.push_str(
            "\nWhat each sends for the largest index file (the mirror compresses each file \
             once, at level 6, and keeps the result; nginx compresses every response, at its \
             default level 1):\n\n",
        );
        md.push_str(&self.encoding_table());
        if !self.timings.is_empty() {
            let (_, _, _, size) = &self.registry.ttfb_crate;
            md.push_str("\n## A large crate on a MISS\n\n");
            let _ = writeln!(
                md,
                "The {} crate `{TTFB_CRATE}` with the upstream sending its body in 16 KiB \
                 chunks {CHUNK_DELAY_MS} ms apart (plus the {UPSTREAM_DELAY_MS} ms per \
                 request), fetched directly, through a fresh mirror (once with nothing \
                 cached: the mirror fetches the index file for the checksum, then the \
                 crate; once after the index file was fetched, as cargo's resolve \
                 leaves it) and through a fresh nginx; then once more through each. \
                 `first body byte` is when the client got the first chunk of the body; \
                 `complete` near the direct time means the server streamed the body as \
                 it arrived instead of first storing it.\n",
                mib_bytes(*size as f64)
            );
            md.push_str(&self.ttfb_table());
        }
        md.push_str("\n## wrk output (the median rounds)\n\n");
        for (i, scenario) in self.options.scenarios.iter().enumerate() {
            for (server, run) in [("crate-mirror", &self.mirror[i]), ("nginx", &self.nginx[i])] {
                let _ = writeln!(
                    md,
                    "{server}, {}:\n\n```\n{}\n```\n",
                    scenario.label(),
                    run.raw.trim_end()
                );
            }
        }
        md
    }
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
    let mirror = MirrorProcess::start(&binary, &upstream.url, &["--index-max-stale", "0"]);
    let nginx = NginxProcess::start(
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
