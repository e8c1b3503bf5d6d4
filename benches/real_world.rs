//! The benchmark of record for what users see: real cargo resolving and
//! fetching three real workloads (a web service, a command-line tool, a game on
//! a large engine) from a slice of the real index, served by a distant
//! upstream: HTTPS with HTTP/2, 20 ms or 100 ms added to every request
//! (`crates/test-support/src/bench/real_index.rs`). Directly, and through the release mirror
//! over `sparse+http` and `sparse+https`, cold, warm and expired, with
//! cargo's own `--offline` resolve as the floor.
//!
//! `cargo bench --bench real_world [-- --runs N] [--delay 20] [--workload cli]
//! [--only resolve|fetch] [--quick]`; a full run writes
//! `benches/results/real_world.md`, a subset only prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::bench::real_index::{
    crate_size, workload_manifest, Counts, CrateFiles, RealIndex, RealUpstream, TestCa,
};
use support::bench::{
    build_mirror_binary, code_measured, fail, release_mirror, start_mirror, Flags,
};
use support::cargo::{project, run_with_env, CargoHome};
use support::mirror::Mirror;

const WORKLOADS: [&str; 3] = ["web", "cli", "gamedev"];
const DELAYS_MS: [u64; 2] = [20, 100];
/// The warm mirror's TTL: nothing a warm run asks for has expired.
const WARM_TTL: &str = "3600";
/// The TTL the mirror is restarted with for the expired runs.
const EXPIRED_TTL: Duration = Duration::from_secs(2);
/// After a mirror starts: it fetches the upstream's config.json.
const SETTLE: Duration = Duration::from_millis(500);
/// After a run, the upstream is taken to be quiet (prefetch done) once no
/// request arrived for this long (more than the delay, more than the gap
/// between prefetches), or after `QUIET_LIMIT`.
const QUIET: Duration = Duration::from_millis(400);
const QUIET_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Resolve,
    Fetch,
}

const RESOLVE_ROWS: [&str; 9] = [
    "direct",
    "http cold",
    "http warm",
    "http expired",
    "https cold",
    "https warm",
    "https expired",
    "offline",
    "nearby",
];
const FETCH_ROWS: [&str; 6] = [
    "direct",
    "http cold",
    "http warm",
    "https cold",
    "https warm",
    "nearby",
];

fn row_label(kind: Kind, row: &str) -> String {
    let what = match row {
        "direct" => "direct to the upstream (https, HTTP/2)".to_string(),
        "offline" => "cargo `--offline`, index already in CARGO_HOME (floor)".to_string(),
        // What no mirror can beat: the same cargo against a registry with no
        // distance at all (cargo's own cost of receiving the files).
        "nearby" => "direct, the upstream with no added delay (cargo's network floor)".to_string(),
        other => {
            let (proto, phase) = other.split_once(' ').expect("proto phase");
            format!("mirror, `sparse+{proto}`, {phase}")
        }
    };
    match kind {
        Kind::Resolve => what,
        Kind::Fetch => what.replace("direct to", "direct from"),
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    time: Duration,
    upstream: Counts,
    /// Upstream requests that arrived after cargo exited (prefetch still
    /// running), included in `upstream`.
    after_exit: u64,
    /// Requests cargo made to the mirror, by HTTP version (from its access log).
    mirror_http1: u64,
    mirror_http2: u64,
    /// The mirror's prefetch counters (started, useful), after a cold resolve.
    prefetch: Option<(u64, u64)>,
}

type Key = (u64, &'static str, Kind, &'static str);

struct Options {
    runs: usize,
    delays: Vec<u64>,
    workloads: Vec<&'static str>,
    kinds: Vec<Kind>,
    /// Cargo on one CPU, the registry side on another (see `place_on_cpus`).
    pin: bool,
}

impl Options {
    fn parse() -> Self {
        let mut options = Options {
            runs: 3,
            delays: DELAYS_MS.to_vec(),
            workloads: WORKLOADS.to_vec(),
            kinds: vec![Kind::Resolve, Kind::Fetch],
            pin: true,
        };
        let mut flags = Flags::from_env();
        while let Some(flag) = flags.next_flag() {
            match flag.as_str() {
                "--runs" => options.runs = flags.count("--runs") as usize,
                "--quick" => options.runs = 1,
                "--no-pin" => options.pin = false,
                "--delay" => {
                    options.delays = flags
                        .text("--delay")
                        .split(',')
                        .map(|d| {
                            d.trim()
                                .parse()
                                .unwrap_or_else(|_| fail(&format!("--delay: not ms: {d}")))
                        })
                        .collect()
                }
                "--workload" => {
                    options.workloads = flags
                        .text("--workload")
                        .split(',')
                        .map(|w| {
                            *WORKLOADS
                                .iter()
                                .find(|known| **known == w.trim())
                                .unwrap_or_else(|| fail(&format!("--workload: one of {WORKLOADS:?}")))
                        })
                        .collect()
                }
                "--only" => {
                    options.kinds = match flags.text("--only").as_str() {
                        "resolve" => vec![Kind::Resolve],
                        "fetch" => vec![Kind::Fetch],
                        other => fail(&format!("--only: resolve or fetch, not {other}")),
                    }
                }
                other => fail(&format!(
                    "unknown flag {other} (--runs N, --quick, --delay 20,100, --workload web,cli,gamedev, --only resolve|fetch, --no-pin)"
                )),
            }
        }
        options
    }

    fn is_full(&self) -> bool {
        self.runs >= 3
            && self.delays == DELAYS_MS
            && self.workloads == WORKLOADS
            && self.kinds.len() == 2
            && self.pin
    }
}

/// Puts cargo on CPU 0 and everything else this process starts (the test
/// upstream's threads, the mirror) on CPU 1, as on a developer's machine
/// talking to a registry side that runs elsewhere: otherwise the mirror's work
/// takes CPU from cargo's single-threaded resolver, which no deployment does
/// and the direct baseline never suffers. Done with `taskset` (util-linux):
/// this process is moved before it starts any thread, and cargo is reached
/// through a wrapper named by `CARGO`. Returns how it was placed, for the
/// report, or why not.
/// The machine's CPUs, as counted before `place_on_cpus`.
static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn place_on_cpus(dir: &Path) -> Result<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Err(format!("{cpus} CPU: nothing to separate"));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset failed: {status}"));
    }
    let wrapper = dir.join("cargo-on-cpu0");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec taskset -c 0 '{cargo}' \"$@\"\n"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    std::env::set_var("CARGO", &wrapper);
    Ok(format!(
        "cargo on CPU 0; the test upstream and the mirror on CPU 1 (of {cpus})"
    ))
}

struct Bench {
    binary: PathBuf,
    ca: TestCa,
    upstream: RealUpstream,
    manifests: BTreeMap<&'static str, String>,
    /// The Cargo.lock every resolve of a workload must produce (checksums of
    /// the made-up crates), and that the fetches start from.
    reference: BTreeMap<&'static str, String>,
    samples: BTreeMap<Key, Vec<Sample>>,
}

impl Bench {
    /// Runs cargo with `home` in `project`, trusting the test CA; its time.
    fn cargo(&self, home: &CargoHome, project: &Path, args: &[&str]) -> Duration {
        let target = tempfile::tempdir().expect("target dir");
        let started = Instant::now();
        let output = run_with_env(
            home,
            project,
            target.path(),
            args,
            &[("CARGO_HTTP_CAINFO", self.ca.ca.as_os_str())],
        );
        let time = started.elapsed();
        if !output.status.success() {
            fail(&format!(
                "cargo {args:?} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        time
    }

    /// `cargo generate-lockfile` with a fresh CARGO_HOME against `index_url`.
    fn resolve(&self, workload: &'static str, index_url: &str) -> (Duration, String, CargoHome) {
        let home = CargoHome::new(index_url);
        let app = project(&self.manifests[workload]);
        let time = self.cargo(&home, app.path(), &["generate-lockfile"]);
        let lockfile = std::fs::read_to_string(app.path().join("Cargo.lock")).expect("Cargo.lock");
        (time, lockfile, home)
    }

    fn check(&mut self, workload: &'static str, lockfile: &str, what: &str) {
        match self.reference.get(workload) {
            Some(expected) if expected != lockfile => {
                fail(&format!("{workload}, {what}: a different Cargo.lock"))
            }
            Some(_) => {}
            None => {
                self.reference.insert(workload, lockfile.to_string());
            }
        }
    }

    /// `cargo fetch --locked` with a fresh CARGO_HOME, from the reference lockfile.
    fn fetch(&self, workload: &'static str, index_url: &str) -> Duration {
        let home = CargoHome::new(index_url);
        let app = project(&self.manifests[workload]);
        std::fs::write(app.path().join("Cargo.lock"), &self.reference[workload])
            .expect("write Cargo.lock");
        self.cargo(&home, app.path(), &["fetch", "--locked"])
    }

    fn start_mirror(&self, tls: bool, ttl: &str, data_dir: &Path) -> Mirror {
        let cert = self.ca.cert.to_str().expect("utf-8 path");
        let key = self.ca.key.to_str().expect("utf-8 path");
        let mut args = vec!["--index-ttl", ttl];
        if tls {
            args.extend(["--tls-cert", cert, "--tls-key", key]);
        }
        let mirror = start_mirror(
            release_mirror(&self.binary, &self.upstream.index_url)
                .args(&args)
                // The mirror's upstream client trusts the native roots, which
                // rustls reads from this file when it is set.
                .env("SSL_CERT_FILE", &self.ca.ca)
                .data_dir(data_dir),
        );
        // A running mirror has learned the upstream's config.json at start:
        // let it, so the first timed run does not include that.
        std::thread::sleep(SETTLE);
        mirror
    }

    fn record(&mut self, key: Key, sample: Sample) {
        eprintln!(
            "real_world: {:>3} ms {:<8} {:?} {:<14} {:>7.2} s  upstream: {} index ({} x 304), {} dl, {} conns, {} after exit",
            key.0,
            key.1,
            key.2,
            key.3,
            sample.time.as_secs_f64(),
            sample.upstream.index,
            sample.upstream.not_modified,
            sample.upstream.downloads,
            sample.upstream.connections,
            sample.after_exit,
        );
        self.samples.entry(key).or_default().push(sample);
    }

    /// What the upstream and the mirror saw during one run that took `time`.
    fn sample(&self, time: Duration, mirror: Option<(&Mirror, &mut (u64, u64))>) -> Sample {
        let at_exit = self.upstream.take_counts();
        // Wait for the mirror's prefetch to finish, so that its requests count
        // for this run and do not fall into the next one (a warm run).
        let deadline = Instant::now() + QUIET_LIMIT;
        let mut last = self.upstream.requests();
        loop {
            std::thread::sleep(QUIET);
            let now = self.upstream.requests();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        let after = self.upstream.take_counts();
        let mut sample = Sample {
            time,
            upstream: at_exit + after,
            after_exit: after.index + after.config + after.downloads,
            ..Sample::default()
        };
        if let Some((mirror, seen)) = mirror {
            let (http1, http2) = versions_in_log(&mirror.log());
            sample.mirror_http1 = http1 - seen.0;
            sample.mirror_http2 = http2 - seen.1;
            *seen = (http1, http2);
        }
        sample
    }

    fn resolve_direct(&mut self, delay: u64, workload: &'static str) {
        self.upstream.take_counts();
        let (time, lockfile, home) = self.resolve(workload, &self.upstream.index_url.clone());
        self.check(workload, &lockfile, "direct");
        let sample = self.sample(time, None);
        self.record((delay, workload, Kind::Resolve, "direct"), sample);

        self.upstream.set_delay_ms(0);
        let (time, lockfile, _) = self.resolve(workload, &self.upstream.index_url.clone());
        self.upstream.set_delay_ms(delay);
        self.check(workload, &lockfile, "nearby");
        let sample = self.sample(time, None);
        self.record((delay, workload, Kind::Resolve, "nearby"), sample);

        // The floor: cargo with every index file it needs already local.
        let app = project(&self.manifests[workload]);
        let time = self.cargo(&home, app.path(), &["generate-lockfile", "--offline"]);
        let lockfile = std::fs::read_to_string(app.path().join("Cargo.lock")).expect("Cargo.lock");
        self.check(workload, &lockfile, "offline");
        let sample = self.sample(time, None);
        self.record((delay, workload, Kind::Resolve, "offline"), sample);
    }

    fn resolve_mirror(&mut self, delay: u64, workload: &'static str, tls: bool) {
        let proto = if tls { "https" } else { "http" };
        let data = tempfile::tempdir().expect("mirror data dir");
        let data_dir = data.path().join("data");
        let mirror = self.start_mirror(tls, WARM_TTL, &data_dir);
        let index_url = format!("{}/index/", mirror.url);
        let mut seen = versions_in_log(&mirror.log());
        for (phase, row) in [("cold", 1), ("warm", 2)] {
            self.upstream.take_counts();
            let (time, lockfile, _) = self.resolve(workload, &index_url);
            self.check(workload, &lockfile, &format!("{proto} {phase}"));
            let mut sample = self.sample(time, Some((&mirror, &mut seen)));
            if phase == "cold" {
                sample.prefetch = prefetch_counters(&mirror.url, &self.ca.ca);
            }
            let row = if tls {
                RESOLVE_ROWS[row + 3]
            } else {
                RESOLVE_ROWS[row]
            };
            self.record((delay, workload, Kind::Resolve, row), sample);
        }
        // Expired: the same data restarted with a short TTL and left past it,
        // so every file is revalidated (a conditional request, 304) on use.
        mirror.stop();
        let mirror = self.start_mirror(tls, &EXPIRED_TTL.as_secs().to_string(), &data_dir);
        std::thread::sleep(EXPIRED_TTL);
        let mut seen = versions_in_log(&mirror.log());
        self.upstream.take_counts();
        let (time, lockfile, _) = self.resolve(workload, &format!("{}/index/", mirror.url));
        self.check(workload, &lockfile, &format!("{proto} expired"));
        let sample = self.sample(time, Some((&mirror, &mut seen)));
        let row = if tls {
            RESOLVE_ROWS[6]
        } else {
            RESOLVE_ROWS[3]
        };
        self.record((delay, workload, Kind::Resolve, row), sample);
    }

    fn fetch_direct(&mut self, delay: u64, workload: &'static str) {
        self.upstream.take_counts();
        let time = self.fetch(workload, &self.upstream.index_url);
        let sample = self.sample(time, None);
        self.record((delay, workload, Kind::Fetch, "direct"), sample);

        self.upstream.set_delay_ms(0);
        let time = self.fetch(workload, &self.upstream.index_url);
        self.upstream.set_delay_ms(delay);
        let sample = self.sample(time, None);
        self.record((delay, workload, Kind::Fetch, "nearby"), sample);
    }

    fn fetch_mirror(&mut self, delay: u64, workload: &'static str, tls: bool) {
        let data = tempfile::tempdir().expect("mirror data dir");
        let mirror = self.start_mirror(tls, WARM_TTL, &data.path().join("data"));
        let index_url = format!("{}/index/", mirror.url);
        let mut seen = versions_in_log(&mirror.log());
        for (row_http, row_https) in [(1, 3), (2, 4)] {
            self.upstream.take_counts();
            let time = self.fetch(workload, &index_url);
            let sample = self.sample(time, Some((&mirror, &mut seen)));
            let row = FETCH_ROWS[if tls { row_https } else { row_http }];
            self.record((delay, workload, Kind::Fetch, row), sample);
        }
    }
}

/// Requests in a mirror log by HTTP version, leaving out the bench's own
/// `/api/stats` reads.
fn versions_in_log(log: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for line in log.lines().filter(|l| !l.contains("path=/api/stats")) {
        if line.contains("version=HTTP/1.1") {
            counts.0 += 1;
        } else if line.contains("version=HTTP/2.0") {
            counts.1 += 1;
        }
    }
    counts
}

/// The mirror's prefetch counters from `/api/stats`: (started, useful).
fn prefetch_counters(url: &str, ca: &Path) -> Option<(u64, u64)> {
    let pem = std::fs::read(ca).ok()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).ok()?)
        .build()
        .ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let stats: serde_json::Value = runtime.block_on(async {
        client
            .get(format!("{url}/api/stats"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    })?;
    let prefetch = &stats["prefetch"];
    Some((prefetch["started"].as_u64()?, prefetch["useful"].as_u64()?))
}

/// Registry packages (name, version) in a Cargo.lock.
fn locked_packages(lockfile: &str) -> BTreeSet<(String, String)> {
    let lock: toml::Value = toml::from_str(lockfile).expect("a Cargo.lock");
    lock.get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter(|p| p.get("source").is_some())
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("version")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

fn median<T: Copy + Ord>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let options = Options::parse();
    let started = Instant::now();
    let binary = build_mirror_binary();
    // Counted before the placement, which leaves this process one CPU.
    let _ = CPUS.set(std::thread::available_parallelism().map_or(0, |n| n.get()));
    let wrapper_dir = tempfile::tempdir().expect("temp dir");
    let placement = if options.pin {
        place_on_cpus(wrapper_dir.path()).unwrap_or_else(|why| format!("not placed ({why})"))
    } else {
        "not placed (--no-pin): cargo, the test upstream and the mirror share every CPU".to_string()
    };
    eprintln!("real_world: {placement}");
    let ca = TestCa::new();
    let index = RealIndex::unpack();
    eprintln!(
        "real_world: {} index files; delays {:?} ms, workloads {:?}, {} run(s) each",
        index.file_count(),
        options.delays,
        options.workloads,
        options.runs
    );
    let upstream = RealUpstream::start(index.files(), &ca);
    let mut manifests = BTreeMap::new();
    for workload in &options.workloads {
        manifests.insert(*workload, workload_manifest(workload));
    }
    let mut bench = Bench {
        binary,
        ca,
        upstream,
        manifests,
        reference: BTreeMap::new(),
        samples: BTreeMap::new(),
    };

    // Which versions the workloads lock: their made-up .crate files get
    // checksums in the served index. Resolution does not read checksums, so
    // the fixture's real ones serve for this untimed pass.
    let mut locked = BTreeSet::new();
    for workload in options.workloads.clone() {
        let (_, lockfile, _) = bench.resolve(workload, &bench.upstream.index_url.clone());
        locked.extend(locked_packages(&lockfile));
    }
    let crates = CrateFiles::generate(&locked);
    bench
        .upstream
        .set_files(index.files_with_checksums(&crates));
    bench.upstream.set_crates(&crates);
    let mut packages = BTreeMap::new();
    for workload in options.workloads.clone() {
        let (_, lockfile, _) = bench.resolve(workload, &bench.upstream.index_url.clone());
        let pkgs = locked_packages(&lockfile);
        let bytes: usize = pkgs.iter().map(|(n, v)| crate_size(n, v)).sum();
        packages.insert(workload, (pkgs.len(), bytes));
        bench.check(workload, &lockfile, "setup");
    }
    bench.upstream.take_counts();
    eprintln!(
        "real_world: setup done in {:.0} s (locked packages and .crate bytes: {packages:?})",
        started.elapsed().as_secs_f64()
    );

    for &delay in &options.delays {
        bench.upstream.set_delay_ms(delay);
        for &workload in &options.workloads {
            for round in 0..options.runs {
                // Alternate the order between rounds so that a slow spell on
                // the shared machine does not always land on the same scenario.
                let mut units = [0, 1, 2];
                if round % 2 == 1 {
                    units.reverse();
                }
                for kind in &options.kinds {
                    for unit in units {
                        match (kind, unit) {
                            (Kind::Resolve, 0) => bench.resolve_direct(delay, workload),
                            (Kind::Resolve, u) => bench.resolve_mirror(delay, workload, u == 2),
                            (Kind::Fetch, 0) => bench.fetch_direct(delay, workload),
                            (Kind::Fetch, u) => bench.fetch_mirror(delay, workload, u == 2),
                        }
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let report = report(&bench, &options, &packages, elapsed, &placement);
    println!("{report}");
    if options.is_full() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        std::fs::create_dir_all(&dir).expect("results dir");
        std::fs::write(dir.join("real_world.md"), report).expect("write results");
        eprintln!("real_world: wrote benches/results/real_world.md");
    } else {
        eprintln!("real_world: a subset: benches/results/real_world.md left as it was");
    }
    ExitCode::SUCCESS
}

fn report(
    bench: &Bench,
    options: &Options,
    packages: &BTreeMap<&'static str, (usize, usize)>,
    elapsed: Duration,
    placement: &str,
) -> String {
    let workloads = &options.workloads;
    let mut out = format!(
        "# Real-world benchmark\n\nGenerated by `cargo bench --bench real_world` on {}, {} CPUs **shared with other engineers' builds and tests** (a run's figures move by 10–20% with the load), {}; the whole run took {:.1} min. Median of {} run(s) per figure.\n\n",
        command_line("date", &["-u"]),
        CPUS.get().copied().unwrap_or(0),
        command_line("cargo", &["--version"]),
        elapsed.as_secs_f64() / 60.0,
        options.runs,
    );
    out.push_str(&format!("{}\n\n", code_measured()));
    out.push_str(
        "**Setup.** A test upstream serves the real-index fixture (626 sparse-index files as a registry served them, `crates/test-support/src/bench/real_index.rs`) over HTTPS with HTTP/2 (ALPN), gzip'd index files with ETags, and adds a fixed delay to every request, 304s and downloads included, to model distance. Its `.crate` files are made up (real tarballs with a minimal manifest, padded with incompressible bytes to 10 KB – 3 MB, median about 40 KB, drawn per version; served from disk) and the served index carries their sha256 for the versions the workloads lock. Real `cargo` with an empty CARGO_HOME for every run, trusting the test CA, with the default registry replaced by the upstream (direct) or the release mirror (`sparse+http` or `sparse+https`, the mirror with `--tls-cert/--tls-key`; default prefetch). **Cold**: a new mirror data dir. **Warm**: the same mirror again, within `--index-ttl`. **Expired**: the same data dir, mirror restarted with `--index-ttl 2` and left 2 s, so every file is revalidated upstream (its in-memory cache starts empty too). **Offline**: `cargo generate-lockfile --offline` in the CARGO_HOME the direct run filled: cargo's own floor. Fetch is `cargo fetch --locked` from the resolved Cargo.lock (index files for the locked packages, then the downloads). Every resolve of a workload produced the same Cargo.lock.\n\n",
    );
    out.push_str(&format!(
        "**CPUs.** {placement}: a mirror serves from a machine of its own, so its work must not take CPU from cargo's resolver, which is single-threaded and the bottleneck of every run here (compare the no-delay row with the 20 ms direct row). The two CPUs cannot also separate the test upstream from the mirror; they share one, which burdens the mirror rows, not the direct ones.\n\n"
    ));
    out.push_str("| workload | packages locked | .crate bytes |\n| --- | ---: | ---: |\n");
    for w in workloads {
        let (n, bytes) = packages[w];
        out.push_str(&format!(
            "| {w} | {n} | {:.1} MB |\n",
            bytes as f64 / 1_000_000.0
        ));
    }
    for &delay in &options.delays {
        out.push_str(&format!("\n## {delay} ms per upstream request\n"));
        for &kind in &options.kinds {
            let rows: &[&str] = match kind {
                Kind::Resolve => &RESOLVE_ROWS,
                Kind::Fetch => &FETCH_ROWS,
            };
            let title = match kind {
                Kind::Resolve => "Resolve: `cargo generate-lockfile`",
                Kind::Fetch => "Fetch: `cargo fetch --locked`",
            };
            // Workloads across, one row a scenario: the three tables below
            // differ only in their row labels and cells (each ending " |").
            let table =
                |first: &str,
                 rows: &[(String, &'static str)],
                 cell: &dyn Fn(&'static str, &'static str) -> String| {
                    let mut t = format!("| {first} |");
                    for w in workloads {
                        t.push_str(&format!(" {w} |"));
                    }
                    t.push_str("\n| --- |");
                    for _ in workloads {
                        t.push_str(" ---: |");
                    }
                    t.push('\n');
                    for (label, row) in rows {
                        t.push_str(&format!("| {label} |"));
                        for &w in workloads {
                            t.push_str(&cell(row, w));
                        }
                        t.push('\n');
                    }
                    t
                };
            let scenarios: Vec<(String, &'static str)> = rows
                .iter()
                .map(|row| (row_label(kind, row), *row))
                .collect();
            let time_cell = |row: &'static str, w: &'static str| {
                let time = |row| {
                    bench
                        .samples
                        .get(&(delay, w, kind, row))
                        .map(|s| median(s.iter().map(|s| s.time).collect()))
                };
                match (time(row), time("direct")) {
                    (Some(t), Some(direct)) if row != "direct" => format!(
                        " {:.2} s ({:.2}x) |",
                        t.as_secs_f64(),
                        t.as_secs_f64() / direct.as_secs_f64()
                    ),
                    (Some(t), _) => format!(" **{:.2} s** |", t.as_secs_f64()),
                    (None, _) => " – |".to_string(),
                }
            };
            out.push_str(&format!(
                "\n### {title}: time (vs direct)\n\n{}",
                table("scenario", &scenarios, &time_cell)
            ));
            let requests_cell = |row: &'static str, w: &'static str| {
                let Some(samples) = bench.samples.get(&(delay, w, kind, row)) else {
                    return " – |".to_string();
                };
                let m = |f: fn(&Sample) -> u64| median(samples.iter().map(f).collect());
                let after = m(|s| s.after_exit);
                let mut cell = format!(
                    " {} ({} × 304{}) / {} / {}",
                    m(|s| s.upstream.index),
                    m(|s| s.upstream.not_modified),
                    if after > 0 {
                        format!(", {after} after cargo exited")
                    } else {
                        String::new()
                    },
                    m(|s| s.upstream.downloads),
                    m(|s| s.upstream.connections),
                );
                let (h1, h2) = (m(|s| s.mirror_http1), m(|s| s.mirror_http2));
                if h1 + h2 > 0 {
                    cell.push_str(&format!("; cargo→mirror: {h1} × 1.1, {h2} × 2"));
                }
                cell.push_str(" |");
                cell
            };
            out.push_str(&format!(
                "\n{title}: upstream requests (index files, of which 304 / downloads / TLS connections to the upstream); cargo's requests to the mirror by HTTP version\n\n{}",
                table("scenario", &scenarios, &requests_cell)
            ));
            if kind == Kind::Resolve {
                out.push_str("\nPrefetch during the cold resolves (all runs): started, useful (later asked for by cargo), useful ratio\n\n");
                let cold: Vec<(String, &'static str)> = ["http cold", "https cold"]
                    .into_iter()
                    .map(|row| {
                        (
                            format!("`sparse+{}`", row.split(' ').next().unwrap_or("")),
                            row,
                        )
                    })
                    .collect();
                let prefetch_cell = |row: &'static str, w: &'static str| {
                    let sums = bench.samples.get(&(delay, w, kind, row)).map(|s| {
                        s.iter()
                            .filter_map(|s| s.prefetch)
                            .fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1))
                    });
                    match sums {
                        Some((started, useful)) if started > 0 => format!(
                            " {started}, {useful}, {:.2} |",
                            useful as f64 / started as f64
                        ),
                        Some(_) => " 0 started |".to_string(),
                        None => " – |".to_string(),
                    }
                };
                out.push_str(&table("mirror", &cold, &prefetch_cell));
            }
        }
    }
    out
}
