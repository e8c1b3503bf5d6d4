//! Shared by the benchmarks: their flags, building the release binary and
//! running it, fetching from servers, sampling memory.

pub mod real_index;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;

use crate::mirror::{Mirror, MirrorBuilder};

pub fn fail(message: &str) -> ! {
    eprintln!("bench: {message}");
    std::process::exit(2);
}

/// A bench's flags (after cargo's own `--bench`), as `--flag value` or
/// `--flag=value`.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
    /// The value given with `=` to the flag just read.
    inline: Option<String>,
}

impl Flags {
    pub fn from_env() -> Self {
        Self {
            args: std::env::args().skip(1),
            inline: None,
        }
    }

    /// The next flag's name; cargo's `--bench` is skipped.
    pub fn next_flag(&mut self) -> Option<String> {
        loop {
            let arg = self.args.next()?;
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg, None),
            };
            // cargo passes `--bench` to every `harness = false` bench.
            if flag != "--bench" {
                self.inline = inline;
                return Some(flag);
            }
        }
    }

    /// The value of the flag `name` just read.
    pub fn text(&mut self, name: &str) -> String {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .unwrap_or_else(|| fail(&format!("{name} needs a value")))
    }

    /// The value of the flag `name` just read, a whole number of at least 1.
    pub fn count(&mut self, name: &str) -> u64 {
        let raw = self.text(name);
        raw.parse::<u64>()
            .unwrap_or_else(|_| fail(&format!("{name}: not a whole number: {raw}")))
            .max(1)
    }
}

/// Variables cargo sets for the bench process (besides `CARGO_PKG_*`) that
/// must not leak into the nested `cargo build`.
const BENCH_RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Builds the release binary and returns its path.
///
/// `cargo bench` builds the bench profile, not necessarily an up-to-date
/// release binary, so build it explicitly with the cargo running us.
pub fn build_mirror_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = crate::workspace_root();
    eprintln!("bench: building the release binary");
    let mut build = Command::new(&cargo);
    build
        .current_dir(&root)
        .args(["build", "--release", "--bin", "crate-mirror"]);
    // cargo gives this process the bench's own package variables. Build
    // scripts (ring's) declare `rerun-if-env-changed` on some of them, so
    // passing them on would make this build and every plain `cargo build
    // --release` after it rebuild those crates in turn.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_") || BENCH_RUN_VARS.contains(&key) {
            build.env_remove(key);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {cargo:?}: {e}")));
    if !status.success() {
        fail("cargo build --release --bin crate-mirror failed");
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let binary = target.join("release").join("crate-mirror");
    if !binary.is_file() {
        fail(&format!("no binary at {}", binary.display()));
    }
    binary
}

/// A mirror of `upstream` run by `binary` (the release build), logging at
/// `BENCH_RUST_LOG` (default `info`).
pub fn release_mirror(binary: &Path, upstream: &str) -> MirrorBuilder {
    Mirror::builder(upstream).binary(binary).env(
        "RUST_LOG",
        std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
}

/// Starts a bench's mirror, ending the bench (with the mirror's log) if it
/// does not start.
pub fn start_mirror(builder: MirrorBuilder) -> Mirror {
    builder.try_start().unwrap_or_else(|why| fail(&why))
}

/// A realistic small index file: two versions, one dependency each.
pub fn small_index_body(name: &str) -> String {
    (0..2)
        .map(|v| {
            format!(
                "{{\"name\":\"{name}\",\"vers\":\"1.{v}.0\",\"deps\":[{{\"name\":\"serde\",\"req\":\"^1\",\"features\":[],\"optional\":false,\"default_features\":true,\"target\":null,\"kind\":\"normal\"}}],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
                "ab".repeat(32)
            )
        })
        .collect()
}

/// The sparse index path of a crate (`/index/se/rd/serde`), by the mirror's own rule.
pub fn index_path(name: &str) -> String {
    let name = crate_mirror::names::CrateName::parse(name).expect("a valid crate name");
    format!("/index/{}", name.index_path())
}

pub fn download_path(name: &str, version: &str) -> String {
    format!("/api/v1/crates/{name}/{version}/download")
}

/// One GET, reading the whole body. Any transport error or non-2xx is an error.
pub async fn fetch_body(
    client: &reqwest::Client,
    url: &str,
    gzip: bool,
    timeout: Duration,
) -> Result<usize, String> {
    let mut request = client.get(url).timeout(timeout);
    if gzip {
        // As cargo does for the sparse index.
        request = request.header(reqwest::header::ACCEPT_ENCODING, "gzip");
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    Ok(body.len())
}

/// Requests at a time when warming a server or filling a cache.
pub const WARM_CONCURRENCY: usize = 32;

/// An HTTP client with no proxy (all traffic is loopback), raw bodies (so
/// gzip'd index files are read as sent) and an idle pool big enough for every
/// client to keep its connection.
pub fn http_client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .gzip(false)
        .pool_max_idle_per_host(pool)
        .build()
        .expect("build the HTTP client")
}

/// Fetches every path once, `WARM_CONCURRENCY` at a time; returns the body bytes
/// and the errors.
pub async fn fetch_all(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    gzip: bool,
    timeout: Duration,
) -> (u64, Vec<String>) {
    let results: Vec<Result<usize, String>> = futures_util::stream::iter(paths)
        .map(|path| {
            let url = format!("{base}{path}");
            async move { fetch_body(client, &url, gzip, timeout).await }
        })
        .buffer_unordered(WARM_CONCURRENCY)
        .collect()
        .await;
    let mut bytes = 0;
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(len) => bytes += len as u64,
            Err(e) => errors.push(e),
        }
    }
    (bytes, errors)
}

/// Samples a figure (a process's memory) every quarter second on its own
/// thread and keeps the peak, so the figure does not depend on the load
/// generator's runtime being responsive.
pub struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl PeakSampler {
    pub fn start(mut read: impl FnMut() -> Option<u64> + Send + 'static) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                let done = stopped.load(Ordering::SeqCst);
                // The last reading is taken after the stop: growth since the
                // previous tick counts too.
                peak = peak.max(read().unwrap_or(0));
                if done {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .map_or(0, |thread| thread.join().unwrap_or(0))
    }
}
