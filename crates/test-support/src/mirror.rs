//! Runs the real `crate-mirror` binary on an ephemeral port with a temp data dir.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `crate-mirror ARGS` with `env` (and `RUST_LOG=warn`), run to completion:
/// the one-shot commands (`export`, `import`, `verify`, ...).
pub fn run(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run crate-mirror")
}

/// A bundle at `out` of the crates in `specs` (`export --crate NAME` each),
/// exported over HTTP from a mirror of a test upstream that serves them;
/// both are stopped again before this returns, so what follows is the far
/// side of an air gap.
pub fn export_bundle(specs: &[crate::registry::CrateSpec], out: &Path) {
    let upstream = crate::upstream::TestUpstream::start(specs, crate::upstream::DlStyle::Plain);
    let near = Mirror::builder(&upstream.url).start();
    let mut args = vec!["export", "--from", &near.url];
    for spec in specs {
        args.extend(["--crate", &spec.name]);
    }
    args.extend(["--out", crate::utf8(out)]);
    crate::assert_success(&run(&args, &[]));
}

/// Nothing listens on the discard port: the upstream of a mirror that must
/// never reach one.
pub const NO_UPSTREAM: &str = "http://127.0.0.1:9/index/";

/// `crate-mirror` with none of this process's `CRATE_MIRROR_*` variables:
/// a test's settings are only those it gives.
pub fn command() -> Command {
    let mut command = Command::new(bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CRATE_MIRROR_") {
            command.env_remove(key);
        }
    }
    command
}

/// The `crate-mirror` binary cargo built for the test or bench running now.
///
/// `CARGO_BIN_EXE_crate-mirror` exists only when compiling the root package's
/// own tests and benches, not this crate; cargo puts the binary next to their
/// `deps/` directory (`target/debug/deps/TEST` → `target/debug/crate-mirror`),
/// as cargo's own test support finds cargo.
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("the test's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join(format!("crate-mirror{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "no crate-mirror binary at {} (run the root package's tests or benches)",
        binary.display()
    );
    binary
}

/// How to start a mirror: `Mirror::builder(upstream)`, then what differs
/// from a debug build on a new temp data dir and an ephemeral port.
pub struct MirrorBuilder {
    upstream: String,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    data_dir: Option<PathBuf>,
    binary: Option<PathBuf>,
    public_url: bool,
}

impl MirrorBuilder {
    /// Appends command-line arguments to `serve`'s.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// Sets an environment variable (after `RUST_LOG=info`, so it may override it).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables, as `env` each.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(mut self, vars: &[(K, V)]) -> Self {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Runs on an existing data dir (to restart a mirror on what an earlier
    /// one stored) instead of a new temp one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Runs this binary (the benches' release build) instead of `bin()`.
    pub fn binary(mut self, binary: &Path) -> Self {
        self.binary = Some(binary.to_path_buf());
        self
    }

    /// Passes `--public-url` naming the mirror's own address: on a port
    /// chosen up front, since the URL is needed before the start (the git
    /// index's config.json is fixed; a private mirror refuses to start without one).
    pub fn public_url(mut self) -> Self {
        self.public_url = true;
        self
    }

    /// Makes the mirror private: it answers only clients presenting a token
    /// whose hash is among `hashes` (comma-separated, as `new_token` gives
    /// them). With a public URL, without which a private mirror refuses to start.
    pub fn private(self, hashes: &str) -> Self {
        self.args(&["--auth-tokens", hashes]).public_url()
    }

    /// Serves HTTPS with the server certificate and key that
    /// `tls::make_certificates` wrote into `certs`.
    pub fn tls(self, certs: &Path) -> Self {
        let cert = certs.join("server.pem");
        let key = certs.join("server.key");
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        self.args(&["--tls-cert", &cert, "--tls-key", &key])
    }

    /// Serves the git index (which needs a public URL).
    pub fn git(self) -> Self {
        self.args(&["--git-index", "on"]).public_url()
    }

    /// Starts the mirror and waits for its `listening` line; panics with the
    /// mirror's log if it does not come.
    pub fn start(self) -> Mirror {
        self.try_start().unwrap_or_else(|why| panic!("{why}"))
    }

    /// As `start`, returning the failure (with the mirror's log) instead.
    pub fn try_start(self) -> Result<Mirror, String> {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = self.data_dir.unwrap_or_else(|| temp.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        // Beside the data dir, never in it (tests look through it), named
        // `DATA.N.log` (tests that check what appears beside it expect that),
        // one per start (a restarted mirror's log is its own).
        let log = data_dir.with_extension(format!("{}.log", unique()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut listen = Vec::new();
        if self.public_url {
            let port = crate::free_port();
            listen.push(format!("--listen=127.0.0.1:{port}"));
            listen.push(format!("--public-url=http://127.0.0.1:{port}"));
        } else if !self.args.iter().any(|arg| arg == "--listen") {
            listen.push("--listen=127.0.0.1:0".to_string());
        }
        let binary = self.binary.unwrap_or_else(bin);
        let mut child = Command::new(&binary)
            .arg("serve")
            .args(&listen)
            // An offline mirror is started with an empty upstream: none is given.
            .args(
                Some(["--upstream", self.upstream.as_str()])
                    .filter(|_| !self.upstream.is_empty())
                    .into_iter()
                    .flatten(),
            )
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            // Hermetic: a proxy set on the machine running the tests must not
            // carry the mirror's loopback traffic; tests that want one say so.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match listening_url(&mut child, Duration::from_secs(30)) {
            Ok(url) => Ok(Mirror {
                child,
                url,
                data_dir,
                binary,
                log,
                _temp: temp,
            }),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the mirror did not start ({why}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ))
            }
        }
    }
}

/// A running `crate-mirror serve`; killed when dropped, its log printed if
/// the test is failing.
pub struct Mirror {
    child: Child,
    /// `http://127.0.0.1:PORT` (https with TLS), no trailing slash.
    pub url: String,
    pub data_dir: PathBuf,
    binary: PathBuf,
    log: PathBuf,
    _temp: tempfile::TempDir,
}

impl Mirror {
    /// A mirror of `upstream`; see `MirrorBuilder`.
    pub fn builder(upstream: &str) -> MirrorBuilder {
        MirrorBuilder {
            upstream: upstream.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            data_dir: None,
            binary: None,
            public_url: false,
        }
    }

    /// A mirror of `upstream` with the git index on, rebuilt `rebuild_delay`
    /// seconds after a change, returned once index file `warm` (a path such
    /// as `/index/se/rd/serde`) is cached and in the git index.
    pub async fn start_git(upstream: &str, rebuild_delay: &str, warm: &str) -> Mirror {
        let mirror = Mirror::builder(upstream)
            .git()
            .args(&["--git-rebuild-delay", rebuild_delay])
            .start();
        assert_eq!(mirror.get(warm).await.status(), 200, "GET {warm}");
        mirror.wait_for_git_files(2).await;
        mirror
    }

    /// Waits until the git index holds at least `files` files (config.json included).
    pub async fn wait_for_git_files(&self, files: u64) {
        self.wait_for_git_files_authorized(files, None).await
    }

    /// As `wait_for_git_files`, sending `authorization` (for a metrics token).
    pub async fn wait_for_git_files_authorized(&self, files: u64, authorization: Option<&str>) {
        for _ in 0..200 {
            let stats = self.stats_authorized(authorization).await;
            if stats["git"]["files"].as_u64().is_some_and(|n| n >= files) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the git index never reached {files} files");
    }

    /// `/api/stats` as JSON.
    pub async fn stats(&self) -> serde_json::Value {
        self.stats_authorized(None).await
    }

    /// `/api/stats` as JSON, sending `authorization` (for a metrics token).
    pub async fn stats_authorized(&self, authorization: Option<&str>) -> serde_json::Value {
        let mut request = crate::client().get(format!("{}/api/stats", self.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        crate::json_of(request).await
    }

    /// `/metrics` as samples (`name{labels}` → value).
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let text = crate::client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        crate::parse_samples(&text)
    }

    /// GETs `path` (`/health`, `/index/se/rd/serde`) from the mirror with
    /// `client()`; a plain-HTTP mirror only (a TLS one wants its own client).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        crate::client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn git_url(&self) -> String {
        format!("{}/git/index", self.url)
    }

    pub fn index_url(&self) -> String {
        format!("{}/index/", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The mirror's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the mirror's log, for error reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `Vm*` figure of the mirror from /proc, in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        crate::procfs::proc_status_kib(self.pid(), field).unwrap_or(0)
    }

    /// Runs `crate-mirror SUBCOMMAND --upstream U --data-dir D ARGS` (e.g. `verify`;
    /// `gc`, which takes no upstream, without `--upstream U`) to completion.
    pub fn run_command(
        &self,
        subcommand: &str,
        upstream: &str,
        args: &[&str],
    ) -> std::process::Output {
        self.run_command_with_env(subcommand, upstream, args, &[])
    }

    pub fn run_command_with_env(
        &self,
        subcommand: &str,
        upstream: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> std::process::Output {
        // `gc` never asks an upstream, and refuses the flag.
        let upstream: &[&str] = match subcommand {
            "gc" => &[],
            _ => &["--upstream", upstream],
        };
        Command::new(&self.binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(subcommand)
            .args(upstream)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run crate-mirror")
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Stops the mirror with SIGTERM, as a service manager would, so it
    /// flushes its database (a restart on the same data dir then finds
    /// everything); SIGKILL (on drop) if it has not exited within 10 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(Duration::from_secs(10));
    }

    /// Stops the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Files below the data dir whose path contains `fragment`.
    pub fn stored_files(&self, fragment: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.data_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().contains(fragment) {
                    found.push(path);
                }
            }
        }
        found
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- mirror log ---\n{}", self.log());
        }
        // BENCH_KEEP_LOGS=DIR keeps each mirror's log (access log included)
        // for a look at per-request latencies after a bench run.
        if let Some(dir) = std::env::var_os("BENCH_KEEP_LOGS") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                &self.log,
                dir.join(format!("mirror-{}.log", self.child.id())),
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Reads the URL from the mirror's first stdout line (`crate-mirror listening
/// on URL`), then keeps draining stdout so the mirror never blocks on a full pipe.
pub fn listening_url(child: &mut Child, within: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(within)
        .map_err(|_| "no listening line".to_string())?;
    line.strip_prefix("crate-mirror listening on ")
        .map(|url| url.trim_end_matches('/').to_string())
        .ok_or_else(|| format!("unexpected first line: {line}"))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}
