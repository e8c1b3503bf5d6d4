//! What crate-mirror's integration tests and benches share: a generated
//! registry, a test upstream serving it, the mirror binary, nginx, a cargo
//! driver, a headless browser, and (in `bench`) the benches' own plumbing. A crate of its own so
//! that each test and bench links one copy instead of including the files.

use std::path::{Path, PathBuf};

pub mod bench;
pub mod browser;
pub mod cargo;
pub mod faults;
pub mod h2raw;
pub mod mirror;
pub mod nginx;
pub mod procfs;
pub mod proxy;
pub mod registry;
pub mod s3;
pub mod server;
pub mod tls;
pub mod upstream;

/// An HTTP client for tests: no automatic decompression, no proxies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .gzip(false)
        .build()
        .expect("client")
}

/// A test upstream serving `specs` (with a plain `dl`), and a mirror of it
/// started with `args`: the set-up most tests begin with.
pub fn upstream_and_mirror(
    specs: &[registry::CrateSpec],
    args: &[&str],
) -> (upstream::TestUpstream, mirror::Mirror) {
    let upstream = upstream::TestUpstream::start(specs, upstream::DlStyle::Plain);
    let mirror = mirror::Mirror::builder(&upstream.url).args(args).start();
    (upstream, mirror)
}

/// Sends `request` and reads its body as JSON, failing the test on any error.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON body")
}

/// GETs `url`, failing the test if no answer comes within `guard`: the
/// client's guard against hangs, for tests whose answers must come well within it.
pub async fn get_within(url: &str, guard: std::time::Duration) -> reqwest::Response {
    client()
        .get(url)
        .timeout(guard)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: no answer within {guard:?}: {e}"))
}

/// Polls `check` every 20 ms until it holds, failing the test with `what`
/// if it still does not after `within`: for effects that land after the
/// answer (a counter, a cleaned-up file), without guessing a sleep.
pub async fn wait_until<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sample lines of the Prometheus exposition format: `name{labels}` → value.
pub fn parse_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            (series.to_string(), value.parse().expect("sample value"))
        })
        .collect()
}

/// A loopback port that was free a moment ago, for programs that must be
/// told a port up front (nginx's config, Garage's, a mirror's public URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Every file below `dir` (not the directories), in no particular order;
/// for fixtures, so a directory that cannot be read fails the test.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("an entry of {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Waits until something accepts connections on `127.0.0.1:port`, for at most
/// `within`, watching `child` (the server, called `what`) so that a crash is
/// told at once; on a timeout the child is killed. The error says which.
pub fn wait_listening(
    child: &mut std::process::Child,
    what: &str,
    port: u16,
    within: std::time::Duration,
) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status})"));
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not listen within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The root package's directory (this crate lives in `crates/test-support`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root above crates/test-support")
        .to_path_buf()
}

/// Fails the test unless the command behind `output` succeeded, showing what
/// it wrote to stderr and stdout; returns its stdout, for the tests that read it.
pub fn assert_success(output: &std::process::Output) -> String {
    assert_success_with(output, String::new)
}

/// `assert_success`, with `context()` (made only on failure) shown after
/// what the command wrote: the command line, or a log that explains it.
fn assert_success_with(output: &std::process::Output, context: impl FnOnce() -> String) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        context()
    );
    stdout
}

/// Runs `command` to the end, failing the test unless it succeeds; the
/// failure shows the command line, what it wrote, and `context()` (say, the
/// log of a server it talked to). Returns its stdout.
pub fn run_ok(command: &mut std::process::Command, context: impl FnOnce() -> String) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert_success_with(&output, || format!("{command:?}\n{}", context()))
}

/// Runs `git ARGS` in `dir`; it never prompts, so a refused credential fails
/// the command instead of hanging the test.
pub fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git")
}

/// `git ARGS` in `dir`, which must succeed; its stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    assert_success(&git(dir, args))
}

/// Every file below `dir` (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

/// `p` as text, for a command's arguments (test paths are UTF-8).
pub fn utf8(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// An answer read off a raw socket: status (0 when none came), head and body.
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Writes `request` as is to the plain-HTTP mirror at `base` and reads
/// the whole answer (until the mirror closes, or a 20 s guard): for requests
/// no client library would send.
pub fn raw_exchange(base: &str, request: &str) -> RawAnswer {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").expect("an http:// base");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    RawAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Whether a refusal's body shows anything a private mirror keeps behind
/// its tokens: index lines, metric names, top crate names, settings, git
/// refs (the tests' private mirrors cache a crate named `abc`).
pub fn leaks_private_data(body: &str) -> bool {
    [
        "cksum",
        "abc",
        "crate_mirror_",
        "top_crates",
        "refs/heads",
        "# HELP",
    ]
    .iter()
    .any(|secret| body.contains(secret))
}
