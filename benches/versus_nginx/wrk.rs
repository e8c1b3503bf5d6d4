//! The load runs: `wrk --latency` over the index paths (plain and gzip) and
//! the downloads, and what its output says.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::bench::{fail, PeakSampler};
use support::upstream::TestUpstream;

use crate::generated::BenchRegistry;
use crate::procfs::{cpu_ticks, pss_kib};
use crate::report::ms;
use crate::{log, Options, WRK_TIMEOUT_S};

/// What is requested in one load run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    IndexPlain,
    IndexGzip,
    Downloads,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [
        Scenario::IndexPlain,
        Scenario::IndexGzip,
        Scenario::Downloads,
    ];

    pub fn from_name(name: &str) -> Option<Scenario> {
        match name {
            "identity" => Some(Scenario::IndexPlain),
            "gzip" => Some(Scenario::IndexGzip),
            "downloads" => Some(Scenario::Downloads),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scenario::IndexPlain => "index, identity",
            Scenario::IndexGzip => "index, gzip",
            Scenario::Downloads => "crate downloads",
        }
    }
}

/// Figures parsed from wrk's output.
#[derive(Clone, Default)]
pub struct WrkStats {
    pub requests: u64,
    pub seconds: f64,
    pub req_per_s: f64,
    pub bytes_per_s: f64,
    pub p50: Duration,
    pub p75: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub socket_errors: u64,
    pub non_2xx: u64,
}

impl WrkStats {
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// `1.23ms`, `850.00us`, `2.01s`, `1.00m` as a duration.
pub fn parse_wrk_time(text: &str) -> Option<Duration> {
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
pub fn parse_wrk_bytes(text: &str) -> Option<f64> {
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

pub fn parse_wrk(output: &str) -> Option<WrkStats> {
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
pub fn run_wrk(base: &str, paths_file: &Path, gzip: bool, options: &Options) -> (WrkStats, String) {
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
pub struct RunResult {
    pub wrk: WrkStats,
    /// The server's CPU time during the run (all its processes).
    pub cpu_secs: f64,
    pub peak_pss_kib: u64,
    /// Requests that reached the upstream during the run (revalidations).
    pub upstream_requests: usize,
    pub raw: String,
}

impl RunResult {
    /// Server CPU time per request, in microseconds.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu_secs * 1e6 / self.wrk.requests.max(1) as f64
    }

    /// Average share of the machine's CPUs the server used.
    pub fn cpu_share(&self, cpus: usize) -> f64 {
        self.cpu_secs / (self.wrk.seconds.max(0.001) * cpus as f64)
    }
}

/// The paths files of the scenarios, written once for wrk to read.
pub struct PathsFiles {
    pub _dir: tempfile::TempDir,
    pub index: PathBuf,
    pub downloads: PathBuf,
}

impl PathsFiles {
    pub fn write(registry: &BenchRegistry) -> Self {
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

    pub fn for_scenario(&self, scenario: Scenario) -> &Path {
        match scenario {
            Scenario::Downloads => &self.downloads,
            _ => &self.index,
        }
    }
}

/// Runs every scenario against one warmed server.
pub fn load_runs(
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
