//! Runs the real `crate-mirror` binary on an ephemeral port with a temp data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Mirror {
    child: Child,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Mirror {
    /// Starts a mirror of `upstream` in a new temp data dir.
    pub fn start(upstream: &str, args: &[&str]) -> Mirror {
        Mirror::start_with_env(upstream, args, &[])
    }

    /// Starts a mirror in a new temp data dir with extra environment variables.
    pub fn start_with_env(upstream: &str, args: &[&str], env: &[(String, String)]) -> Mirror {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut mirror = Mirror::launch(&data_dir, upstream, args, env);
        mirror._temp = Some(temp);
        mirror
    }

    /// Starts a mirror on an existing data dir (e.g. to restart one).
    pub fn start_in(data_dir: &Path, upstream: &str, args: &[&str]) -> Mirror {
        Mirror::launch(data_dir, upstream, args, &[])
    }

    fn launch(data_dir: &Path, upstream: &str, args: &[&str], env: &[(String, String)]) -> Mirror {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.with_extension(format!("{}.log", unique()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
            .arg("serve")
            .args(if args.contains(&"--listen") {
                vec![]
            } else {
                vec!["--listen", "127.0.0.1:0"]
            })
            .args(["--upstream", upstream])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn crate-mirror");
        let url = match listening_url(&mut child, Duration::from_secs(20)) {
            Ok(url) => url,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mirror did not start ({why}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Mirror {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
            _temp: None,
        }
    }

    /// Starts a mirror with `--public-url` naming its own address: on a port
    /// chosen up front, since the URL is needed before the start (the git
    /// index's config.json is fixed; a private mirror refuses to start without one).
    pub fn start_with_public_url(upstream: &str, args: &[&str]) -> Mirror {
        Mirror::start_with_public_url_and_env(upstream, args, &[])
    }

    /// As `start_with_public_url`, with extra environment variables.
    pub fn start_with_public_url_and_env(
        upstream: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Mirror {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let public = format!("http://127.0.0.1:{port}");
        let mut all = vec!["--listen", &listen, "--public-url", &public];
        all.extend_from_slice(args);
        Mirror::start_with_env(upstream, &all, env)
    }

    /// Starts a mirror serving the git index.
    pub fn start_with_git(upstream: &str, args: &[&str]) -> Mirror {
        let mut all = vec!["--git-index", "on"];
        all.extend_from_slice(args);
        Mirror::start_with_public_url(upstream, &all)
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
        let mut request = super::client().get(format!("{}/api/stats", self.url));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        super::json_of(request).await
    }

    /// `/metrics` as samples (`name{labels}` → value).
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let text = super::client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        super::parse_samples(&text)
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `crate-mirror SUBCOMMAND --upstream U --data-dir D ARGS` (e.g. `verify`) to completion.
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
        Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(subcommand)
            .args(["--upstream", upstream])
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
